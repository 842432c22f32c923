//! Per-operation cost, idemstore against moka, quick_cache, dashmap and
//! `Mutex<HashMap>` + `Condvar`, at 1, 2 (and all) threads:
//!
//! * `hit`: `get` of a completed key; 200k keys prefilled, read in random order.
//!   Two more idemstore rows read the same keys in batches of 64:
//!   `idemstore_pinned` through `Store::pinned` (one pin per batch) and
//!   `idemstore_many` through `Store::get_many` (one pin, misses overlapped);
//!   `IDEMSTORE_BENCH_ONLY` names them so.
//! * `replay`: `execute` of a completed key (the duplicate's path).
//! * `fresh`: `execute` of a new key each time (claim + run + complete),
//!   into a store created empty for each sample.
//! * `mixed`: 90% replay of a recent key, 10% fresh, TTL 100 ms, background
//!   expiry every 50 ms.
//! * `floor`: not a subject but the machine: one random 64-byte line per
//!   operation over as many lines as `hit` has keys, with the loads
//!   overlapped (`independent`) or chained (`dependent`), and `hashmap`,
//!   `hit` on a plain `HashMap` read with no synchronisation at all, and
//!   the `boxed` rows, an entry behind a pointer read with no pin and under
//!   three kinds of pin. They show how much of `hit` is memory latency, and
//!   how much the pin. `IDEMSTORE_BENCH_ONLY`
//!   admits them as `floor`.
//! * `fresh/dashmap_two_phase`: not a subject but a reference: `fresh` on
//!   dashmap with the operation run between two lock holds (rule 2 of
//!   SEMANTICS.md) instead of inside one. `IDEMSTORE_BENCH_ONLY` admits it
//!   as `dashmap_two_phase`.
//! * `paired`: `hit` and `replay` again, idemstore and one peer (dashmap,
//!   quick_cache) timed back to back within every sample, in alternating
//!   order. The summary gives the median of the samples' ratios: a ratio of
//!   two times taken a few milliseconds apart, where the rows above compare
//!   medians taken minutes apart on a machine whose speed drifts between
//!   them.
//!
//! Each thread runs the measured number of operations; the time reported is
//! the wall time until the last thread finishes, so it reads as nanoseconds
//! per operation per thread (criterion's throughput line gives the total).
//!
//! `cargo bench --bench ops` runs it all; add `-- --quick` (or set
//! `IDEMSTORE_BENCH_QUICK=1`) for a short run. `IDEMSTORE_BENCH_ONLY=idemstore`
//! restricts the subjects (handy under `perf record`). A summary table with
//! idemstore's ratio to each peer is printed at the end.

mod common;

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{compiler_fence, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{run_threads, splitmix, thread_counts, Cfg, Rng, Subject};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};

/// Keys prefilled for `hit` and `replay` (and lines in `floor`): 200k, or
/// `IDEMSTORE_BENCH_HIT_KEYS` to see how the cost moves with the working set.
fn hit_keys_count() -> usize {
    std::env::var("IDEMSTORE_BENCH_HIT_KEYS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(200_000)
}

fn selected<S: Subject>() -> bool {
    common::selected(S::NAME)
}

/// The prefilled keys, in a random order shared by all subjects.
fn hit_keys() -> Arc<[u64]> {
    let mut keys: Vec<u64> = (0..hit_keys_count() as u64).map(splitmix).collect();
    Rng::new(7).shuffle(&mut keys);
    keys.into()
}

/// The order `hit`'s keys are filled in: their read order, or, with
/// `IDEMSTORE_BENCH_PREFILL_SHUFFLED` set to anything but empty or `0`, an
/// order unrelated to it.
fn fill_order(keys: &[u64]) -> Vec<u64> {
    let mut order = keys.to_vec();
    let shuffled =
        std::env::var("IDEMSTORE_BENCH_PREFILL_SHUFFLED").is_ok_and(|v| !v.is_empty() && v != "0");
    if shuffled {
        Rng::new(11).shuffle(&mut order);
    }
    order
}

/// Fills a subject with `keys` in [`fill_order`]: their read order, or an
/// order unrelated to it. A
/// store that allocates entries one by one lays them out in insertion order,
/// so reads that follow that order (as retries follow their originals) walk
/// memory forwards; the shuffled fill shows the cost of a read whose entry
/// is nowhere near the previous one's.
fn prefilled<S: Subject>(keys: &[u64]) -> S {
    let subject = S::new(&Cfg::untimed(keys.len() * 2));
    for k in fill_order(keys) {
        subject.execute(k, || k ^ 1);
    }
    subject.settle();
    let hits = keys
        .iter()
        .filter(|&&k| subject.get(k) == Some(k ^ 1))
        .count();
    assert_eq!(hits, keys.len(), "{}: prefilled keys missing", S::NAME);
    subject
}

/// Each thread starts at its own offset in the shared random order.
fn start_of(tid: usize, len: usize) -> usize {
    (tid * 7919 * 31) % len
}

fn bench_reads<S: Subject>(g: &mut BenchmarkGroup<'_, WallTime>, keys: &Arc<[u64]>, replay: bool) {
    if !selected::<S>() {
        return;
    }
    let subject = prefilled::<S>(keys);
    read_rows(g, S::NAME, keys, |k| read_one(&subject, k, replay));
}

/// One read of `hit` (a `get`), or with `replay` one of `replay` (a
/// replaying `execute`).
#[inline]
fn read_one<S: Subject>(subject: &S, key: u64, replay: bool) {
    if replay {
        black_box(subject.execute(key, || key));
    } else {
        black_box(subject.get(key));
    }
}

/// A row per thread count of `read`, each thread going through `keys` in
/// order from its own offset.
fn read_rows(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    keys: &Arc<[u64]>,
    read: impl Fn(u64) + Sync,
) {
    read_rows_with(g, name, keys, || (), |_, k| read(k));
}

fn hit<S: Subject>(g: &mut BenchmarkGroup<'_, WallTime>, keys: &Arc<[u64]>) {
    bench_reads::<S>(g, keys, false);
}

/// Reads per batch in the batched `hit` rows.
const BATCH: usize = 64;

/// How a batched `hit` row reads the same keys as `hit`, a batch of
/// [`BATCH`] at a time, as a caller with several keys at hand (a consumer
/// deduplicating a batch of messages) would.
#[derive(Clone, Copy)]
enum Batched {
    /// [`idemstore::Store::pinned`]: a `get` per key under one epoch pin.
    Pinned,
    /// [`idemstore::Store::get_many`]: one pin, and the keys' cache misses
    /// overlapped.
    Many,
}

impl Batched {
    const ALL: [Batched; 2] = [Batched::Pinned, Batched::Many];

    /// The row's name, which `IDEMSTORE_BENCH_ONLY` also takes.
    fn name(self) -> &'static str {
        match self {
            Batched::Pinned => "idemstore_pinned",
            Batched::Many => "idemstore_many",
        }
    }

    /// How the row reads each batch, for the summary.
    fn what(self) -> &'static str {
        match self {
            Batched::Pinned => "a get per key under one pin",
            Batched::Many => "get_many",
        }
    }
}

fn hit_batched(g: &mut BenchmarkGroup<'_, WallTime>, keys: &Arc<[u64]>, way: Batched) {
    if !common::selected(way.name()) {
        return;
    }
    let subject = prefilled::<common::Idem>(keys);
    let store = &subject.0;
    for threads in thread_counts() {
        g.throughput(Throughput::Elements(threads as u64));
        g.bench_function(BenchmarkId::new(way.name(), format!("{threads}t")), |b| {
            b.iter_custom(|iters| {
                run_threads(threads, |tid| {
                    let mut i = start_of(tid, keys.len());
                    let mut left = iters as usize;
                    while left > 0 {
                        let n = left.min(BATCH).min(keys.len() - i);
                        left -= n;
                        let batch = &keys[i..i + n];
                        match way {
                            Batched::Pinned => store.pinned(|pinned| {
                                for key in batch {
                                    black_box(pinned.get(key));
                                }
                            }),
                            Batched::Many => {
                                black_box(store.get_many(batch));
                            }
                        }
                        i = (i + n) % keys.len();
                    }
                })
            })
        });
    }
}

fn replay<S: Subject>(g: &mut BenchmarkGroup<'_, WallTime>, keys: &Arc<[u64]>) {
    bench_reads::<S>(g, keys, true);
}

fn fresh<S: Subject>(g: &mut BenchmarkGroup<'_, WallTime>) {
    if !selected::<S>() {
        return;
    }
    for threads in thread_counts() {
        g.throughput(Throughput::Elements(threads as u64));
        g.bench_function(BenchmarkId::new(S::NAME, format!("{threads}t")), |b| {
            b.iter_custom(|iters| {
                // A new, empty subject per sample: memory stays bounded and
                // every sample pays the same growth.
                let subject = S::new(&Cfg::untimed(iters as usize * threads));
                let elapsed = run_threads(threads, |tid| {
                    let base = (tid as u64) << 40;
                    for i in 0..iters {
                        let k = splitmix(base | i);
                        black_box(subject.execute(k, || k));
                    }
                });
                drop(subject);
                elapsed
            })
        });
    }
}

/// An entry behind a pointer, as idemstore's nodes are: its key, a state
/// word read with Acquire, its value, and two words of links, 40 bytes, so
/// `malloc` gives it the chunk a node gets.
struct Boxed {
    key: u64,
    state: AtomicU64,
    value: u64,
    _links: [usize; 2],
}

/// `Boxed::state` of a completed entry.
const COMPLETED: u64 = 1;

/// A per-thread epoch word on its own line, as crossbeam-epoch keeps one.
#[repr(align(64))]
struct EpochWord(AtomicU64);

/// The `boxed_*` rows of `floor`: what a read-side pin costs a read whose
/// entry lies behind a pointer, the cost "What limits it" in BENCHMARKS.md
/// splits out of `hit`. The keys of `hit` in a `HashMap` of boxed entries,
/// made in the order they are read (as `hit` fills its subjects; scattered
/// with `IDEMSTORE_BENCH_PREFILL_SHUFFLED`), read four ways:
///
/// * `boxed`: no pin, the pointer chase alone.
/// * `boxed_epoch`: under a crossbeam-epoch pin of a collector of the
///   row's own, a handle per thread: what idemstore's `get` pays, less the
///   lookup of its handle.
/// * `boxed_cas`: under the smallest symmetric pin: one compare-and-swap
///   of the thread's epoch word (SeqCst, a locked instruction here, as
///   crossbeam-epoch's) before the read and a Release store after it.
/// * `boxed_plain`: under the read side of an asymmetric pin: a Relaxed
///   store and a compiler fence, no locked instruction; the reclaimer
///   would pay for the ordering with a process-wide barrier (Linux
///   `membarrier`) each time it advances the epoch.
///
/// Nothing here advances an epoch or frees anything: these are the read
/// sides alone, so at 2 threads and more they leave out the traffic of
/// advancing the epoch that crossbeam-epoch's own row includes.
fn boxed_rows(g: &mut BenchmarkGroup<'_, WallTime>, keys: &Arc<[u64]>) {
    let mut table: HashMap<u64, Box<Boxed>, ahash::RandomState> = HashMap::default();
    for key in fill_order(keys) {
        let entry = Boxed {
            key,
            state: AtomicU64::new(COMPLETED),
            value: key ^ 1,
            _links: [0; 2],
        };
        table.insert(key, Box::new(entry));
    }
    let read = |key: u64| {
        let entry = table.get(&key)?;
        let done = entry.state.load(Ordering::Acquire) == COMPLETED;
        (done && entry.key == key).then_some(entry.value)
    };
    read_rows(g, "boxed", keys, |k| {
        black_box(read(k));
    });
    let collector = crossbeam_epoch::Collector::new();
    read_rows_with(
        g,
        "boxed_epoch",
        keys,
        || collector.register(),
        |handle, k| {
            let _guard = handle.pin();
            black_box(read(k));
        },
    );
    let global = AtomicU64::new(2);
    let word = || Box::new(EpochWord(AtomicU64::new(0)));
    read_rows_with(g, "boxed_cas", keys, word, |word, k| {
        let epoch = global.load(Ordering::Relaxed) | 1;
        let _ = word
            .0
            .compare_exchange(0, epoch, Ordering::SeqCst, Ordering::SeqCst);
        black_box(read(k));
        word.0.store(0, Ordering::Release);
    });
    read_rows_with(g, "boxed_plain", keys, word, |word, k| {
        word.0
            .store(global.load(Ordering::Relaxed) | 1, Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
        black_box(read(k));
        word.0.store(0, Ordering::Release);
    });
}

/// [`read_rows`] for reads that need per-thread state, made by `local` on
/// the thread that uses it, inside the timed window (once a sample).
fn read_rows_with<L>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    keys: &Arc<[u64]>,
    local: impl Fn() -> L + Sync,
    read: impl Fn(&L, u64) + Sync,
) {
    for threads in thread_counts() {
        g.throughput(Throughput::Elements(threads as u64));
        g.bench_function(BenchmarkId::new(name, format!("{threads}t")), |b| {
            b.iter_custom(|iters| {
                run_threads(threads, |tid| {
                    let local = local();
                    read_keys(keys, tid, iters, |k| read(&local, k));
                })
            })
        });
    }
}

/// Thread `tid`'s share of a read row: `iters` reads of `keys` in order,
/// from the thread's own offset.
fn read_keys(keys: &[u64], tid: usize, iters: u64, mut read: impl FnMut(u64)) {
    let mut i = start_of(tid, keys.len());
    for _ in 0..iters {
        read(keys[i]);
        i += 1;
        if i == keys.len() {
            i = 0;
        }
    }
}

/// A line of the floor's array: one per key.
#[repr(align(64))]
struct Line([u64; 8]);

/// The memory floor under `hit`: what touching one random line costs on
/// this machine, in the same harness. An array of one 64-byte line per
/// prefilled key, read in a random order two ways:
///
/// * `independent`: the addresses come from a shuffled index array, known
///   ahead, so the CPU overlaps the misses. No table that must touch one
///   line per random `get` can beat this.
/// * `dependent`: each line holds the index of the next (one random
///   cycle), so every load waits for the one before: a full miss per
///   operation, what each step of a pointer chase (bucket slot, then node)
///   costs.
///
/// And one table, at every thread count: `hashmap`, the keys of `hit` in
/// the table each dashmap shard holds (`std`'s `HashMap`, which is
/// hashbrown, with ahash and dashmap's `(value, deadline)` entries), read
/// through a shared reference: no lock, no atomic, no sharding. That is
/// what a `get` of this workload costs when nothing at all is paid for
/// concurrency, so no concurrent table's `hit` can be expected below it.
///
/// And the `boxed` rows ([`boxed_rows`]): a read behind a pointer with and
/// without a read-side pin, at every thread count.
fn floor(c: &mut Criterion, keys: &Arc<[u64]>) {
    if !common::selected("floor") {
        return;
    }
    let mut g = c.benchmark_group("floor");
    let mut table: HashMap<u64, (u64, u64), ahash::RandomState> = HashMap::default();
    table.extend(keys.iter().map(|&k| (k, (k ^ 1, u64::MAX))));
    read_rows(&mut g, "hashmap", keys, |k| {
        black_box(table.get(&k).map(|e| e.0));
    });
    drop(table);
    boxed_rows(&mut g, keys);
    let n = hit_keys_count();
    let mut order: Vec<usize> = (0..n).collect();
    Rng::new(11).shuffle(&mut order);
    let mut lines: Vec<Line> = (0..n).map(|_| Line([0; 8])).collect();
    for w in 0..n {
        lines[order[w]].0[0] = order[(w + 1) % n] as u64;
    }
    g.bench_function(BenchmarkId::new("independent", "1t"), |b| {
        let mut i = 0;
        b.iter(|| {
            let v = lines[order[i]].0[1];
            i = if i + 1 == n { 0 } else { i + 1 };
            black_box(v)
        })
    });
    g.bench_function(BenchmarkId::new("dependent", "1t"), |b| {
        let mut at = order[0];
        b.iter(|| {
            at = lines[at].0[0] as usize;
            black_box(at)
        })
    });
    g.finish();
}

/// dashmap with rule 2 of SEMANTICS.md applied and nothing else, for
/// `fresh`: the claim inserts a pending entry under one lock hold, the
/// operation runs with no lock held, and the completion stores its value
/// under a second hold. No waiting (a duplicate of a pending key gets 0),
/// tokens, leases or expiry, and the same `(value, state)` entries as the
/// `dashmap` subject, whose idiom runs the operation inside its one hold.
/// `fresh` runs it as it runs the subjects, but it is not one of them: it
/// is a reference, the cost of the two holds an idempotency store must
/// take, on the cheapest locked table.
struct DashTwoPhase(dashmap::DashMap<u64, (u64, u64), ahash::RandomState>);

impl DashTwoPhase {
    const PENDING: u64 = 0;
    const DONE: u64 = u64::MAX;
}

impl Subject for DashTwoPhase {
    const NAME: &'static str = "dashmap_two_phase";
    fn new(_: &Cfg) -> Self {
        DashTwoPhase(dashmap::DashMap::with_hasher(ahash::RandomState::new()))
    }
    fn get(&self, key: u64) -> Option<u64> {
        let entry = self.0.get(&key)?;
        (entry.1 == Self::DONE).then_some(entry.0)
    }
    fn execute(&self, key: u64, op: impl FnOnce() -> u64) -> u64 {
        use dashmap::mapref::entry::Entry;
        match self.0.entry(key) {
            Entry::Occupied(e) => return e.get().0,
            Entry::Vacant(e) => {
                e.insert((0, Self::PENDING));
            }
        }
        let value = op();
        if let Some(mut e) = self.0.get_mut(&key) {
            *e = (value, Self::DONE);
        }
        value
    }
}

/// Unique fresh keys across threads and samples of `mixed`.
static NEXT_BASE: AtomicU64 = AtomicU64::new(1);

fn mixed<S: Subject>(g: &mut BenchmarkGroup<'_, WallTime>) {
    if !selected::<S>() {
        return;
    }
    let cfg = Cfg {
        ttl: Some(Duration::from_millis(100)),
        // quick_cache has no TTL: bounded near the live set instead.
        capacity: 200_000,
        sweep_interval: Duration::from_millis(50),
    };
    let subject = S::new(&cfg);
    for threads in thread_counts() {
        g.throughput(Throughput::Elements(threads as u64));
        g.bench_function(BenchmarkId::new(S::NAME, format!("{threads}t")), |b| {
            b.iter_custom(|iters| {
                run_threads(threads, |tid| {
                    let base = NEXT_BASE.fetch_add(1, Ordering::Relaxed) << 32;
                    let mut rng = Rng::new(base ^ tid as u64);
                    let mut recent = [0u64; 4096];
                    let (mut filled, mut next, mut made) = (0usize, 0usize, 0u64);
                    for _ in 0..iters {
                        let r = rng.next();
                        let k = if filled == 0 || r % 10 == 0 {
                            made += 1;
                            let k = splitmix(base | made);
                            recent[next] = k;
                            next = (next + 1) % recent.len();
                            filled = (filled + 1).min(recent.len());
                            k
                        } else {
                            recent[(r >> 8) as usize % filled]
                        };
                        black_box(subject.execute(k, || k));
                    }
                })
            })
        });
    }
}

// ------------------------------------------------------------------ paired

/// Each `paired` row's ratios, idemstore's time over the peer's, one a
/// sample, in the order the rows ran, for the summary.
static PAIRED: Mutex<Vec<(String, Vec<f64>)>> = Mutex::new(Vec::new());

/// Samples of fewer operations a thread are left out of the ratios:
/// criterion's first warm-up samples run a handful, and then starting the
/// threads is most of what they time.
const PAIRED_MIN_OPS: u64 = 10_000;

/// The `paired` rows: `hit` and `replay` with idemstore and a peer timed
/// back to back in every sample. Both halves of a sample run under the
/// same conditions, whatever the machine's other tenants do to it between
/// rows, so the ratio of the two is steadier than a ratio of two rows'
/// medians. Neither half has the cache to itself, as the other subject's
/// half ran just before it: the times run higher than in `hit`'s and
/// `replay`'s own rows.
///
/// `fresh` is not paired: there each half would allocate right after the
/// other subject's half freed its own, which no `fresh` row does. A trial
/// pairing put idemstore at 2.5x-3.3x dashmap at 1 thread in three runs
/// whose `fresh` rows gave 1.5x-2.0x (BENCHMARKS.md, "What was done").
fn paired(c: &mut Criterion, keys: &Arc<[u64]>) {
    let mut g = c.benchmark_group("paired");
    // Equal samples: each ratio weighs the same.
    g.sampling_mode(SamplingMode::Flat);
    if selected::<common::Idem>() {
        let idem = prefilled::<common::Idem>(keys);
        paired_reads::<common::Dash>(&mut g, keys, &idem);
        paired_reads::<common::Quick>(&mut g, keys, &idem);
    }
    g.finish();
}

/// `paired/hit_P` and `paired/replay_P`, on the keys of `hit`.
fn paired_reads<P: Subject>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    keys: &Arc<[u64]>,
    idem: &common::Idem,
) {
    if !selected::<P>() {
        return;
    }
    let peer = prefilled::<P>(keys);
    for (workload, replay) in [("hit", false), ("replay", true)] {
        paired_rows(
            g,
            workload,
            P::NAME,
            |threads, iters| timed_reads(idem, keys, replay, threads, iters),
            |threads, iters| timed_reads(&peer, keys, replay, threads, iters),
        );
    }
}

/// `iters` reads a thread of `subject` (`get`, or with `replay` a
/// replaying `execute`), as `hit` and `replay` read.
fn timed_reads<S: Subject>(
    subject: &S,
    keys: &[u64],
    replay: bool,
    threads: usize,
    iters: u64,
) -> Duration {
    run_threads(threads, |tid| {
        read_keys(keys, tid, iters, |k| read_one(subject, k, replay))
    })
}

/// A row per thread count, each sample timing `time_idem` and `time_peer`
/// (each from a thread count and operations a thread to a wall time) one
/// after the other, the peer first in every other sample. The row's own
/// time is the two halves' sum, which criterion sizes its samples by; what
/// the row is for is the ratios, which the summary prints.
fn paired_rows(
    g: &mut BenchmarkGroup<'_, WallTime>,
    workload: &str,
    peer: &str,
    time_idem: impl Fn(usize, u64) -> Duration,
    time_peer: impl Fn(usize, u64) -> Duration,
) {
    for threads in thread_counts() {
        let mut ratios = Vec::new();
        let mut peer_first = false;
        let id = BenchmarkId::new(format!("{workload}_{peer}"), format!("{threads}t"));
        g.bench_function(id, |b| {
            b.iter_custom(|iters| {
                peer_first = !peer_first;
                let (mine, theirs) = if peer_first {
                    let theirs = time_peer(threads, iters);
                    (time_idem(threads, iters), theirs)
                } else {
                    let mine = time_idem(threads, iters);
                    (mine, time_peer(threads, iters))
                };
                if iters >= PAIRED_MIN_OPS {
                    ratios.push(mine.as_secs_f64() / theirs.as_secs_f64());
                }
                mine + theirs
            })
        });
        let row = format!("{workload}_{peer}/{threads}t");
        PAIRED.lock().unwrap().push((row, ratios));
    }
}

/// The `paired` rows' ratios: the median of a row's samples and the middle
/// half of them.
fn print_paired() {
    let rows = PAIRED.lock().unwrap();
    let rows: Vec<_> = rows.iter().filter(|(_, r)| !r.is_empty()).collect();
    if rows.is_empty() {
        return;
    }
    println!("\nPaired, idemstore / peer with both timed back to back in every sample (median, middle half of the samples):");
    for (row, ratios) in rows {
        let mut sorted = ratios.clone();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        println!(
            "paired/{row}: {:.2}x ({:.2}x-{:.2}x over {} samples)",
            at(0.5),
            at(0.25),
            at(0.75),
            sorted.len()
        );
    }
}

fn main() {
    let mut c: Criterion = common::criterion();
    let keys = hit_keys();

    let mut g = c.benchmark_group("hit");
    common::for_each_subject!(hit(&mut g, &keys));
    for way in Batched::ALL {
        hit_batched(&mut g, &keys, way);
    }
    g.finish();

    floor(&mut c, &keys);

    let mut g = c.benchmark_group("replay");
    common::for_each_subject!(replay(&mut g, &keys));
    g.finish();

    let mut g = c.benchmark_group("fresh");
    g.sampling_mode(SamplingMode::Flat);
    common::for_each_subject!(fresh(&mut g));
    fresh::<DashTwoPhase>(&mut g);
    g.finish();

    let mut g = c.benchmark_group("mixed");
    common::for_each_subject!(mixed(&mut g));
    g.finish();

    paired(&mut c, &keys);

    c.final_summary();
    println!("\nMedians, ns per operation per thread (each thread runs the measured count):");
    common::print_summary(
        &["hit", "replay", "fresh", "mixed"],
        &common::thread_params(),
        "ns",
        1.0,
    );
    for way in Batched::ALL {
        let what = format!("batches of {BATCH}, {}", way.what());
        print_reference("hit", way.name(), &what, "hit");
    }
    for way in ["independent", "dependent"] {
        if let Some(ns) = common::criterion_median("floor", way, "1t") {
            println!("floor/{way}: {ns:.1} ns per random line");
        }
    }
    print_reference("floor", "hashmap", "a get with no synchronisation", "hit");
    for (way, what) in [
        ("boxed", "an entry behind a pointer, no pin"),
        ("boxed_epoch", "behind a pointer, a crossbeam-epoch pin"),
        ("boxed_cas", "behind a pointer, a compare-and-swap pin"),
        (
            "boxed_plain",
            "behind a pointer, a pin with no locked instruction",
        ),
    ] {
        print_reference("floor", way, what, "hit");
    }
    print_reference(
        "fresh",
        DashTwoPhase::NAME,
        "claim and complete, two lock holds",
        "fresh",
    );
    print_paired();
}

/// Prints row `group/name` at each thread count with its ratio to every
/// subject's median in `peers` (the workload it stands beside).
fn print_reference(group: &str, name: &str, what: &str, peers: &str) {
    for param in common::thread_params() {
        let Some(ns) = common::criterion_median(group, name, &param) else {
            continue;
        };
        let ratios: Vec<String> = common::SUBJECTS
            .iter()
            .filter_map(|s| common::criterion_median(peers, s, &param).map(|m| (s, m)))
            .map(|(s, m)| format!("{s} {:.2}x", ns / m))
            .collect();
        println!(
            "{group}/{name}/{param} ({what}): {ns:.1} ns; {}",
            ratios.join(", ")
        );
    }
}
