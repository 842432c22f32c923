//! Per-operation cost, idemstore against moka, quick_cache, dashmap and
//! `Mutex<HashMap>` + `Condvar`, at 1, 2 (and all) threads.
//!
//! The headline rows hold a user's traffic: 2M keys prefilled (a working
//! set several times the last-level cache, so a read of a random key
//! misses it as a production store's reads do), filled in one random
//! order and read in another, unrelated one (a store that allocates its
//! entries one by one lays them out in insertion order, and reads that
//! followed that order would walk memory forwards).
//!
//! * `hit`: `get` of a completed key, `u64 -> u64`. Two more idemstore
//!   rows read the same keys in batches of 64: `idemstore_pinned` through
//!   `Store::pinned` (one pin per batch) and `idemstore_many` through
//!   `Store::get_many` (one pin, misses overlapped); `IDEMSTORE_BENCH_ONLY`
//!   names them so.
//! * `replay`: `execute` of a completed key (the duplicate's path).
//! * `fresh`: `execute` of a new key each time (claim + run + complete),
//!   into a store created empty for each sample, which grows past the
//!   last-level cache within the sample (about a million keys a thread).
//! * `mixed`: 90% replay of one of the thread's 4096 most recent keys, 10%
//!   fresh, TTL 100 ms, background expiry every 50 ms: retries close
//!   behind their originals, a working set that stays in cache by design.
//! * `hit_string`, `replay_string`, `fresh_string`: `hit`, `replay` and
//!   `fresh` on `String(36) -> Vec<u8>(256)`: UUID-like keys, as an
//!   `Idempotency-Key` header carries, and 256-byte values (the shape of
//!   the memory bench). Every `get` returns a clone of the value (an
//!   allocation and a 256-byte copy), on every subject; a subject whose
//!   API takes the key by value clones the caller's key (see
//!   `common::Subject`).
//! * `floor`: not a subject but the machine: one random 64-byte line per
//!   operation over as many lines as `hit` has keys, with the loads
//!   overlapped (`independent`) or chained (`dependent`), and `hashmap`,
//!   `hit` on a plain `HashMap` read with no synchronisation at all, and
//!   the `boxed` rows, an entry behind a pointer read with no pin and under
//!   three kinds of pin. They show how much of `hit` is memory latency, and
//!   how much the pin. `IDEMSTORE_BENCH_ONLY` admits them as `floor`.
//! * `fresh/dashmap_two_phase` (and `fresh_string/`): not a subject but a
//!   reference: `fresh` on dashmap with the operation run between two lock
//!   holds (rule 2 of docs/semantics.md) instead of inside one.
//!   `IDEMSTORE_BENCH_ONLY` admits it as `dashmap_two_phase`.
//! * `fresh/idemstore_max_bytes` (and `fresh_string/`): idemstore with a
//!   byte bound it never reaches (the default weigher): what weighing and
//!   counting the bytes costs `fresh`. Admitted as `idemstore_max_bytes`.
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
//!
//! Variants, never the headline, named in `IDEMSTORE_BENCH_VARIANT`
//! (comma-separated): `in_cache`, 200k keys, whose `u64` tables fit the
//! last-level cache; `insertion_order`, the keys filled in the order they
//! are read, as retries that follow their originals would read them.
//! `IDEMSTORE_BENCH_HIT_KEYS=<n>` sets the key count outright.

mod common;

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{compiler_fence, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{run_threads, thread_counts, Cfg, Key, Rng, Subject, Val};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};

// ---------------------------------------------------------------- variants

/// Keys prefilled for the read rows (and lines in `floor`) in the headline.
const HEADLINE_KEYS: usize = 2_000_000;
/// Keys in the `in_cache` variant.
const IN_CACHE_KEYS: usize = 200_000;
/// Keys when criterion only checks that the benches run.
const CHECK_KEYS: usize = 10_000;

/// The read rows' working set and fill order.
struct Variant {
    keys: usize,
    /// Filled in their read order, rather than an order unrelated to it.
    insertion_order: bool,
}

/// The headline, or what `IDEMSTORE_BENCH_VARIANT` and
/// `IDEMSTORE_BENCH_HIT_KEYS` ask for.
fn variant() -> &'static Variant {
    static VARIANT: OnceLock<Variant> = OnceLock::new();
    VARIANT.get_or_init(|| {
        let names = std::env::var("IDEMSTORE_BENCH_VARIANT").unwrap_or_default();
        let mut v = Variant {
            keys: HEADLINE_KEYS,
            insertion_order: false,
        };
        for name in names.split(',').filter(|n| !n.is_empty()) {
            match name {
                "in_cache" => v.keys = IN_CACHE_KEYS,
                "insertion_order" => v.insertion_order = true,
                other => panic!(
                    "IDEMSTORE_BENCH_VARIANT: unknown variant {other:?} (in_cache, insertion_order)"
                ),
            }
        }
        if let Some(n) = std::env::var("IDEMSTORE_BENCH_HIT_KEYS")
            .ok()
            .and_then(|n| n.parse().ok())
            .filter(|&n| n > 0)
        {
            v.keys = n;
        }
        if !common::measuring() {
            v.keys = v.keys.min(CHECK_KEYS);
        }
        v
    })
}

impl Variant {
    /// What the summary says of the run.
    fn describe(&self) -> String {
        let order = if self.insertion_order {
            "filled in the order they are read (variant insertion_order)"
        } else {
            "filled in an order unrelated to the read order"
        };
        let which = if self.keys == HEADLINE_KEYS && !self.insertion_order {
            "the headline"
        } else {
            "a variant, not the headline"
        };
        format!("{} keys, {order}: {which}", self.keys)
    }
}

fn selected<S: Subject>() -> bool {
    common::selected(S::NAME)
}

/// The prefilled keys, in the random order they are read in, shared by all
/// subjects. They are made in that order, so a `String` key's bytes, read
/// to hash it, lie in the order the reads come, as a request's freshly
/// parsed key is in cache: the misses the rows count are the subjects',
/// not the harness's.
fn read_order<K: Key>() -> Arc<[K]> {
    let mut order: Vec<u64> = (0..variant().keys as u64).collect();
    Rng::new(7).shuffle(&mut order);
    order.into_iter().map(K::nth).collect()
}

/// The order, as indices into the read order, in which the keys are filled:
/// an unrelated random one, or with `insertion_order` the read order.
fn fill_order(len: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    if !variant().insertion_order {
        Rng::new(11).shuffle(&mut order);
    }
    order
}

/// A subject holding `keys`, filled in [`fill_order`], every key checked.
fn prefilled<S: Subject>(keys: &[S::K]) -> S {
    let subject = S::new(&Cfg::untimed(keys.len()));
    for i in fill_order(keys.len()) {
        let k = &keys[i];
        subject.execute(k, || k.value());
    }
    subject.settle();
    let hits = keys
        .iter()
        .filter(|k| subject.get(k) == Some(k.value()))
        .count();
    assert_eq!(hits, keys.len(), "{}: prefilled keys missing", S::NAME);
    subject
}

// ------------------------------------------------------------------- reads

/// The groups of the read rows: `hit` and `replay`, on `u64` keys.
const U64_READS: [&str; 2] = ["hit", "replay"];
/// The same on `String` keys.
const STRING_READS: [&str; 2] = ["hit_string", "replay_string"];

/// Each thread starts at its own offset in the shared random order.
fn start_of(tid: usize, len: usize) -> usize {
    (tid * 7919 * 31) % len
}

/// The rows of `groups` (`hit`, then `replay`) for `S`, on one prefill.
fn reads<S: Subject>(c: &mut Criterion, keys: &Arc<[S::K]>, groups: [&str; 2]) {
    if !selected::<S>() {
        return;
    }
    let subject = prefilled::<S>(keys);
    for (group, replay) in groups.into_iter().zip([false, true]) {
        let mut g = c.benchmark_group(group);
        read_rows(&mut g, S::NAME, keys, |k| read_one(&subject, k, replay));
        g.finish();
    }
}

/// One read of `hit` (a `get`), or with `replay` one of `replay` (a
/// replaying `execute`).
#[inline]
fn read_one<S: Subject>(subject: &S, key: &S::K, replay: bool) {
    if replay {
        black_box(subject.execute(key, || key.value()));
    } else {
        black_box(subject.get(key));
    }
}

/// A row per thread count of `read`, each thread going through `keys` in
/// order from its own offset.
fn read_rows<T: Send + Sync>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    keys: &Arc<[T]>,
    read: impl Fn(&T) + Sync,
) {
    read_rows_with(g, name, keys, || (), |_, k| read(k));
}

/// [`read_rows`] for reads that need per-thread state, made by `local` on
/// the thread that uses it, inside the timed window (once a sample).
fn read_rows_with<T: Send + Sync, L>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    keys: &Arc<[T]>,
    local: impl Fn() -> L + Sync,
    read: impl Fn(&L, &T) + Sync,
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
fn read_keys<T>(keys: &[T], tid: usize, iters: u64, mut read: impl FnMut(&T)) {
    let mut i = start_of(tid, keys.len());
    for _ in 0..iters {
        read(&keys[i]);
        i += 1;
        if i == keys.len() {
            i = 0;
        }
    }
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

/// The batched `hit` rows, on one prefilled store.
fn hit_batched(c: &mut Criterion, keys: &Arc<[u64]>) {
    let ways: Vec<Batched> = Batched::ALL
        .into_iter()
        .filter(|w| common::selected(w.name()))
        .collect();
    if ways.is_empty() {
        return;
    }
    let subject = prefilled::<common::Idem>(keys);
    let store = &subject.0;
    let mut g = c.benchmark_group(U64_READS[0]);
    for way in ways {
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
    g.finish();
}

// ------------------------------------------------------------------- fresh

/// The `fresh` rows of `S`, one a thread count.
fn fresh<S: Subject>(g: &mut BenchmarkGroup<'_, WallTime>) {
    if !selected::<S>() {
        return;
    }
    for threads in thread_counts() {
        g.throughput(Throughput::Elements(threads as u64));
        g.bench_function(BenchmarkId::new(S::NAME, format!("{threads}t")), |b| {
            b.iter_custom(|iters| {
                // Each thread's new keys, made before the timed window (a
                // String key's formatting would cost more than some
                // subjects' whole claim).
                let keys: Vec<Vec<S::K>> = (0..threads as u64)
                    .map(|t| (0..iters).map(|i| S::K::nth(t << 40 | i)).collect())
                    .collect();
                // A new, empty subject per sample: memory stays bounded and
                // every sample pays the same growth.
                let subject = S::new(&Cfg::untimed(iters as usize * threads));
                let elapsed = run_threads(threads, |tid| {
                    for k in &keys[tid] {
                        black_box(subject.execute(k, || k.value()));
                    }
                });
                drop(subject);
                elapsed
            })
        });
    }
}

/// The `fresh` group of keys of type `K`: every subject, then the
/// two-phase dashmap.
fn fresh_group<K: Key>(c: &mut Criterion, group: &str) {
    let mut g = c.benchmark_group(group);
    g.sampling_mode(SamplingMode::Flat);
    common::for_each_subject!(K; fresh(&mut g));
    fresh::<IdemMaxBytes<K>>(&mut g);
    fresh::<DashTwoPhase<K>>(&mut g);
    g.finish();
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
/// made in the order `hit` fills its subjects, read four ways:
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
    for i in fill_order(keys.len()) {
        let key = keys[i];
        let entry = Boxed {
            key,
            state: AtomicU64::new(COMPLETED),
            value: key ^ 1,
            _links: [0; 2],
        };
        table.insert(key, Box::new(entry));
    }
    let read = |key: &u64| {
        let entry = table.get(key)?;
        let done = entry.state.load(Ordering::Acquire) == COMPLETED;
        (done && entry.key == *key).then_some(entry.value)
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
        black_box(table.get(k).map(|e| e.0));
    });
    drop(table);
    boxed_rows(&mut g, keys);
    let n = keys.len();
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

/// idemstore with a byte bound set high enough never to refuse, weighing
/// with the default weigher: a reference for what the bound costs.
struct IdemMaxBytes<K: Key = u64>(common::Idem<K>);

impl<K: Key> Subject for IdemMaxBytes<K> {
    const NAME: &'static str = "idemstore_max_bytes";
    type K = K;
    fn new(cfg: &Cfg) -> Self {
        let mut b = idemstore::Store::builder()
            .sweep_interval(cfg.sweep_interval)
            .max_bytes(1 << 62);
        if let Some(ttl) = cfg.ttl {
            b = b.ttl(ttl).lease(ttl);
        }
        IdemMaxBytes(common::Idem(b.build().expect("valid config")))
    }
    fn get(&self, key: &K) -> Option<Val<K>> {
        self.0.get(key)
    }
    #[inline]
    fn execute(&self, key: &K, op: impl FnOnce() -> Val<K>) -> Val<K> {
        self.0.execute(key, op)
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// dashmap with rule 2 of docs/semantics.md applied and nothing else, for
/// `fresh`: the claim inserts a pending entry under one lock hold, the
/// operation runs with no lock held, and the completion stores its value
/// under a second hold. No waiting (a duplicate of a pending key gets the
/// default value), tokens, leases or expiry, and the same `(value, state)`
/// entries as the `dashmap` subject, whose idiom runs the operation inside
/// its one hold. `fresh` runs it as it runs the subjects, but it is not one
/// of them: it is a reference, the cost of the two holds an idempotency
/// store must take, on the cheapest locked table.
struct DashTwoPhase<K: Key = u64>(dashmap::DashMap<K, (Val<K>, u64), ahash::RandomState>);

const PENDING: u64 = 0;
const DONE: u64 = u64::MAX;

impl<K: Key> Subject for DashTwoPhase<K> {
    const NAME: &'static str = "dashmap_two_phase";
    type K = K;
    fn new(_: &Cfg) -> Self {
        DashTwoPhase(dashmap::DashMap::with_hasher(ahash::RandomState::new()))
    }
    fn get(&self, key: &K) -> Option<Val<K>> {
        let entry = self.0.get(key)?;
        (entry.1 == DONE).then(|| entry.0.clone())
    }
    fn execute(&self, key: &K, op: impl FnOnce() -> Val<K>) -> Val<K> {
        use dashmap::mapref::entry::Entry;
        match self.0.entry(key.clone()) {
            Entry::Occupied(e) => return e.get().0.clone(),
            Entry::Vacant(e) => {
                e.insert((Val::<K>::default(), PENDING));
            }
        }
        let value = op();
        if let Some(mut e) = self.0.get_mut(key) {
            *e = (value.clone(), DONE);
        }
        value
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

// ------------------------------------------------------------------- mixed

/// Unique fresh keys across threads and samples of `mixed`.
static NEXT_BASE: AtomicU64 = AtomicU64::new(1);

fn mixed<S: Subject<K = u64>>(g: &mut BenchmarkGroup<'_, WallTime>) {
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
                        let k = if filled == 0 || r.is_multiple_of(10) {
                            made += 1;
                            let k = u64::nth(base | made);
                            recent[next] = k;
                            next = (next + 1) % recent.len();
                            filled = (filled + 1).min(recent.len());
                            k
                        } else {
                            recent[(r >> 8) as usize % filled]
                        };
                        black_box(subject.execute(&k, || k));
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
fn paired_reads<P: Subject<K = u64>>(
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
    keys: &[S::K],
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

    let keys: Arc<[u64]> = read_order();
    common::for_each_subject!(reads(&mut c, &keys, U64_READS));
    hit_batched(&mut c, &keys);
    floor(&mut c, &keys);
    fresh_group::<u64>(&mut c, "fresh");
    let mut g = c.benchmark_group("mixed");
    common::for_each_subject!(mixed(&mut g));
    g.finish();
    paired(&mut c, &keys);
    drop(keys);

    let keys: Arc<[String]> = read_order();
    common::for_each_subject!(String; reads(&mut c, &keys, STRING_READS));
    drop(keys);
    fresh_group::<String>(&mut c, "fresh_string");

    c.final_summary();
    println!("\nRead rows: {}.", variant().describe());
    println!("Medians, ns per operation per thread (each thread runs the measured count); *_string: String(36) -> Vec<u8>(256):");
    common::print_summary(
        &[
            "hit",
            "replay",
            "fresh",
            "mixed",
            "hit_string",
            "replay_string",
            "fresh_string",
        ],
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
    for group in ["fresh", "fresh_string"] {
        let what = "claim and complete, two lock holds";
        print_reference(group, DashTwoPhase::<u64>::NAME, what, group);
        let what = "idemstore with a byte bound";
        print_reference(group, IdemMaxBytes::<u64>::NAME, what, group);
    }
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
