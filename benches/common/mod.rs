//! What the benches share: the five subjects behind one trait, generic
//! over the two shapes of entry (`u64 -> u64` and `String(36) ->
//! Vec<u8>(256)`), the thread harness, the quick mode, and the summary
//! table read back from criterion's own estimates.
//!
//! Every subject uses `ahash`, so the benches compare the tables and their
//! synchronisation, not hash functions.

#![allow(dead_code)] // Each bench binary uses a different part.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex, OnceLock, Weak};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use criterion::Criterion;
use idemstore::{Outcome, Store};

/// Settings a workload asks of every subject.
#[derive(Clone, Copy, Debug)]
pub struct Cfg {
    /// Retention of completed values; `None`: as long as possible.
    pub ttl: Option<Duration>,
    /// Entries the run will create at most (quick_cache needs a capacity).
    pub capacity: usize,
    /// How often background expiry runs, where the subject has one.
    pub sweep_interval: Duration,
}

impl Cfg {
    pub fn untimed(capacity: usize) -> Self {
        Cfg {
            ttl: None,
            capacity,
            sweep_interval: Duration::from_secs(1),
        }
    }
}

// --------------------------------------------------------------- the shapes

/// A key type the benches run with, and the value stored under each key.
pub trait Key: Hash + Eq + Clone + Debug + Send + Sync + 'static {
    type Value: Clone + Default + PartialEq + Debug + Send + Sync + 'static;
    /// How a table row names the shape.
    const SHAPE: &'static str;
    /// Heap bytes of payload an entry carries (the key's and the value's
    /// own allocations), which the memory bench subtracts.
    const PAYLOAD: usize;
    /// The workload's `i`-th key: distinct for distinct `i`.
    fn nth(i: u64) -> Self;
    /// The value stored under `self`.
    fn value(&self) -> Self::Value;
}

/// `u64 -> u64`: a well-mixed key, and the key with its low bit flipped.
impl Key for u64 {
    type Value = u64;
    const SHAPE: &'static str = "u64 -> u64";
    const PAYLOAD: usize = 0;
    #[inline]
    fn nth(i: u64) -> Self {
        splitmix(i)
    }
    #[inline]
    fn value(&self) -> u64 {
        self ^ 1
    }
}

/// `String(36) -> Vec<u8>(256)`: a UUID-like key, as an `Idempotency-Key`
/// header carries, and a 256-byte response.
impl Key for String {
    type Value = Vec<u8>;
    const SHAPE: &'static str = "String(36) -> Vec<u8>(256)";
    const PAYLOAD: usize = 36 + 256;
    fn nth(i: u64) -> Self {
        uuid_like(i)
    }
    fn value(&self) -> Vec<u8> {
        vec![self.as_bytes()[0]; 256]
    }
}

/// 36 characters in the layout of a UUID, distinct for distinct `i`.
pub fn uuid_like(i: u64) -> String {
    let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let s = format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        x >> 32,
        (x >> 16) & 0xffff,
        x & 0xffff,
        i & 0xffff,
        i & 0xffff_ffff_ffff
    );
    debug_assert_eq!(s.len(), 36);
    s
}

/// The value type stored under keys of type `K`.
pub type Val<K> = <K as Key>::Value;

// ------------------------------------------------------------- the subjects

/// One contender: the same two operations on every crate. Keys come in by
/// reference, as a caller holding its request's key has them; a subject
/// whose API takes the key by value clones it, on every call, which is
/// what that API costs such a caller.
pub trait Subject: Send + Sync + Sized + 'static {
    const NAME: &'static str;
    type K: Key;
    fn new(cfg: &Cfg) -> Self;
    /// A read of a completed key.
    fn get(&self, key: &Self::K) -> Option<Val<Self::K>>;
    /// Idempotent execution: run `op` once per key, others get its value.
    fn execute(&self, key: &Self::K, op: impl FnOnce() -> Val<Self::K>) -> Val<Self::K>;
    /// Finishes deferred bookkeeping after a prefill (moka's write buffers,
    /// idemstore's retired bucket arrays).
    fn settle(&self) {}
    /// Entries held.
    fn len(&self) -> usize;
}

// ---------------------------------------------------------------- idemstore

pub struct Idem<K: Key = u64>(pub Store<K, Val<K>>);

impl<K: Key> Subject for Idem<K> {
    const NAME: &'static str = "idemstore";
    type K = K;
    fn new(cfg: &Cfg) -> Self {
        let mut b = Store::builder().sweep_interval(cfg.sweep_interval);
        if let Some(ttl) = cfg.ttl {
            b = b.ttl(ttl).lease(ttl);
        }
        Idem(b.build().expect("valid config"))
    }
    #[inline]
    fn get(&self, key: &K) -> Option<Val<K>> {
        self.0.get(key)
    }
    #[inline]
    fn execute(&self, key: &K, op: impl FnOnce() -> Val<K>) -> Val<K> {
        match self.0.execute(key.clone(), || Ok::<_, ()>(op())) {
            Ok(Outcome::Executed(v) | Outcome::Replayed(v)) => v,
            Err(e) => panic!("execute failed: {e:?}"),
        }
    }
    fn settle(&self) {
        // Bucket arrays retired while growing are freed once the epoch
        // advances, which pins drive (one collection attempt every 128).
        let probe = K::nth(0);
        for _ in 0..100_000 {
            std::hint::black_box(self.0.get(&probe));
        }
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

// --------------------------------------------------------------------- moka

pub struct Moka<K: Key = u64>(pub moka::sync::Cache<K, Val<K>, ahash::RandomState>);

impl<K: Key> Subject for Moka<K> {
    const NAME: &'static str = "moka";
    type K = K;
    fn new(cfg: &Cfg) -> Self {
        // A TTL as a user would configure one (24 h when the workload has
        // none); unbounded size, like the store.
        let ttl = cfg.ttl.unwrap_or(Duration::from_secs(24 * 3600));
        Moka(
            moka::sync::Cache::builder()
                .time_to_live(ttl)
                .build_with_hasher(ahash::RandomState::new()),
        )
    }
    #[inline]
    fn get(&self, key: &K) -> Option<Val<K>> {
        self.0.get(key)
    }
    #[inline]
    fn execute(&self, key: &K, op: impl FnOnce() -> Val<K>) -> Val<K> {
        self.0.get_with(key.clone(), op)
    }
    fn settle(&self) {
        self.0.run_pending_tasks();
    }
    fn len(&self) -> usize {
        self.0.entry_count() as usize
    }
}

// -------------------------------------------------------------- quick_cache

pub struct Quick<K: Key = u64>(pub quick_cache::sync::Cache<K, Val<K>>);

impl<K: Key> Subject for Quick<K> {
    const NAME: &'static str = "quick_cache";
    type K = K;
    fn new(cfg: &Cfg) -> Self {
        // No TTL in quick_cache: sized for the entries the run creates,
        // with twice that weight so none is evicted (its default hasher is
        // ahash with the `ahash` feature).
        let items = cfg.capacity.max(1024);
        Quick(quick_cache::sync::Cache::with(
            items,
            2 * items as u64,
            Default::default(),
            Default::default(),
            Default::default(),
        ))
    }
    #[inline]
    fn get(&self, key: &K) -> Option<Val<K>> {
        self.0.get(key)
    }
    #[inline]
    fn execute(&self, key: &K, op: impl FnOnce() -> Val<K>) -> Val<K> {
        match self.0.get_or_insert_with(key, || Ok::<_, ()>(op())) {
            Ok(v) => v,
            Err(()) => unreachable!(),
        }
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

// ---------------------------------------------------- coarse time for peers

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Nanoseconds since the benches' origin (what a dashmap user would store
/// next to a value to expire it).
#[inline]
pub fn now_nanos() -> u64 {
    origin().elapsed().as_nanos() as u64
}

/// `inner` shared, and with a TTL in `cfg` swept by `sweep` every
/// `cfg.sweep_interval` until the last share is gone: the background
/// expiry a user of a TTL-less map would add.
fn swept<T: Send + Sync + 'static>(inner: T, cfg: &Cfg, sweep: fn(&T)) -> Arc<T> {
    let owner = Arc::new(inner);
    if cfg.ttl.is_some() {
        let (weak, interval): (Weak<T>, _) = (Arc::downgrade(&owner), cfg.sweep_interval);
        thread::spawn(move || loop {
            thread::sleep(interval);
            match weak.upgrade() {
                Some(owner) => sweep(&owner),
                None => return,
            }
        });
    }
    owner
}

/// The deadline a peer without TTLs stores beside a value, for `ttl` from
/// now; never, without one.
#[inline]
fn deadline(ttl: Option<u64>) -> u64 {
    ttl.map_or(u64::MAX, |t| now_nanos() + t)
}

// ------------------------------------------------------------------ dashmap

/// `(value, expires_at)`; `expires_at` is checked only when a TTL is set.
pub struct DashInner<K: Key> {
    pub map: dashmap::DashMap<K, (Val<K>, u64), ahash::RandomState>,
    ttl: Option<u64>,
}

pub struct Dash<K: Key = u64>(pub Arc<DashInner<K>>);

impl<K: Key> Subject for Dash<K> {
    const NAME: &'static str = "dashmap";
    type K = K;
    fn new(cfg: &Cfg) -> Self {
        let inner = DashInner {
            map: dashmap::DashMap::with_hasher(ahash::RandomState::new()),
            ttl: cfg.ttl.map(|t| t.as_nanos() as u64),
        };
        Dash(swept(inner, cfg, |d| {
            let now = now_nanos();
            d.map.retain(|_, (_, exp)| *exp > now);
        }))
    }
    #[inline]
    fn get(&self, key: &K) -> Option<Val<K>> {
        let entry = self.0.map.get(key)?;
        let (v, exp) = &*entry;
        match self.0.ttl {
            Some(_) if *exp <= now_nanos() => None,
            _ => Some(v.clone()),
        }
    }
    #[inline]
    fn execute(&self, key: &K, op: impl FnOnce() -> Val<K>) -> Val<K> {
        use dashmap::mapref::entry::Entry;
        let ttl = self.0.ttl;
        let live = |exp: u64| ttl.is_none() || exp > now_nanos();
        // The idempotency idiom: the shard stays write-locked while `op`
        // runs, which is what makes it run once.
        match self.0.map.entry(key.clone()) {
            Entry::Occupied(e) if live(e.get().1) => e.get().0.clone(),
            Entry::Occupied(mut e) => {
                let v = op();
                e.insert((v.clone(), deadline(ttl)));
                v
            }
            Entry::Vacant(e) => {
                let v = op();
                e.insert((v.clone(), deadline(ttl)));
                v
            }
        }
    }
    fn len(&self) -> usize {
        self.0.map.len()
    }
}

// ------------------------------------------------- Mutex<HashMap> + Condvar

pub enum Slot<V> {
    Running,
    Done(V, u64),
}

pub struct MutexInner<K: Key> {
    pub map: Mutex<HashMap<K, Slot<Val<K>>, ahash::RandomState>>,
    done: Condvar,
    ttl: Option<u64>,
}

/// The textbook single-flight: one lock, one condition variable.
pub struct MutexMap<K: Key = u64>(pub Arc<MutexInner<K>>);

impl<K: Key> Subject for MutexMap<K> {
    const NAME: &'static str = "mutex_hashmap";
    type K = K;
    fn new(cfg: &Cfg) -> Self {
        let inner = MutexInner {
            map: Mutex::new(HashMap::with_hasher(ahash::RandomState::new())),
            done: Condvar::new(),
            ttl: cfg.ttl.map(|t| t.as_nanos() as u64),
        };
        MutexMap(swept(inner, cfg, |m| {
            let now = now_nanos();
            let mut map = m.map.lock().unwrap();
            map.retain(|_, s| !matches!(s, Slot::Done(_, exp) if *exp <= now));
        }))
    }
    #[inline]
    fn get(&self, key: &K) -> Option<Val<K>> {
        let now = if self.0.ttl.is_some() { now_nanos() } else { 0 };
        match self.0.map.lock().unwrap().get(key) {
            Some(Slot::Done(v, exp)) if *exp > now => Some(v.clone()),
            _ => None,
        }
    }
    fn execute(&self, key: &K, op: impl FnOnce() -> Val<K>) -> Val<K> {
        let now = if self.0.ttl.is_some() { now_nanos() } else { 0 };
        let mut map = self.0.map.lock().unwrap();
        loop {
            match map.get(key) {
                Some(Slot::Done(v, exp)) if *exp > now => return v.clone(),
                Some(Slot::Running) => map = self.0.done.wait(map).unwrap(),
                _ => break,
            }
        }
        map.insert(key.clone(), Slot::Running);
        drop(map);
        let v = op();
        let done = Slot::Done(v.clone(), deadline(self.0.ttl));
        self.0.map.lock().unwrap().insert(key.clone(), done);
        self.0.done.notify_all();
        v
    }
    fn len(&self) -> usize {
        self.0.map.lock().unwrap().len()
    }
}

/// Calls `$f::<S>($args)` for every subject, idemstore first, on `u64`
/// keys, or on keys of type `$k` with `$k; f(args)`.
macro_rules! for_each_subject {
    ($f:ident ( $($arg:expr),* )) => {
        $crate::common::for_each_subject!(u64; $f($($arg),*))
    };
    ($k:ty; $f:ident ( $($arg:expr),* )) => {{
        $f::<$crate::common::Idem<$k>>($($arg),*);
        $f::<$crate::common::Moka<$k>>($($arg),*);
        $f::<$crate::common::Quick<$k>>($($arg),*);
        $f::<$crate::common::Dash<$k>>($($arg),*);
        $f::<$crate::common::MutexMap<$k>>($($arg),*);
    }};
}
pub(crate) use for_each_subject;

pub const SUBJECTS: [&str; 5] = [
    "idemstore",
    "moka",
    "quick_cache",
    "dashmap",
    "mutex_hashmap",
];

// ------------------------------------------------------------------ harness

/// `--quick` on the command line or `IDEMSTORE_BENCH_QUICK=1`: smaller
/// sizes, fewer trials and criterion's quick mode, for a run of minutes.
pub fn quick() -> bool {
    std::env::args().any(|a| a == "--quick")
        || std::env::var("IDEMSTORE_BENCH_QUICK").is_ok_and(|v| v != "0" && !v.is_empty())
}

/// Whether criterion measures (`cargo bench`, which passes `--bench`) rather
/// than only checks that each bench runs (`cargo test --benches`), where
/// the benches shrink their sizes to seconds.
pub fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// 1 and 2 threads, and `available_parallelism()` when larger.
pub fn thread_counts() -> Vec<usize> {
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let mut counts = vec![1, 2];
    if cores > 2 {
        counts.push(cores);
    }
    counts
}

/// Criterion's defaults shortened so the whole suite runs in minutes on a
/// small machine; command-line flags still override.
pub fn criterion() -> Criterion {
    // The summary reads only what this invocation measured.
    STARTED.get_or_init(SystemTime::now);
    let (warm, measure, samples) = if quick() {
        (Duration::from_millis(300), Duration::from_secs(1), 10)
    } else {
        (Duration::from_secs(1), Duration::from_secs(3), 20)
    };
    Criterion::default()
        .output_directory(&criterion_dir())
        .warm_up_time(warm)
        .measurement_time(measure)
        .sample_size(samples)
        .configure_from_args()
}

/// `$CRITERION_HOME`, else `criterion/` in the target directory this bench
/// binary was built into (`<target>/release/deps/<bench>`).
pub fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors()
        .nth(3)
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
        .join("criterion")
}

/// Runs `body(thread_index)` on `threads` threads started together and
/// returns the wall time from the start signal until the last one ends.
pub fn run_threads(threads: usize, body: impl Fn(usize) + Sync) -> Duration {
    let barrier = Barrier::new(threads + 1);
    thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, body) = (&barrier, &body);
                s.spawn(move || {
                    barrier.wait();
                    body(t);
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for h in handles {
            h.join().expect("bench thread panicked");
        }
        start.elapsed()
    })
}

/// A deterministic, well-mixed key for index `i`.
#[inline]
pub fn splitmix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small, fast generator for per-thread choices.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(splitmix(seed) | 1)
    }
    #[inline]
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// Stops a background loop when dropped.
pub struct StopFlag(pub Arc<AtomicBool>);

impl Drop for StopFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

// ------------------------------------------------------------------ summary

/// When this bench binary built its [`criterion`]: estimates written before
/// then are an earlier invocation's.
static STARTED: OnceLock<SystemTime> = OnceLock::new();

/// Slack for file systems that keep modification times in whole seconds
/// (or two): an estimate written in this invocation's first seconds must
/// not look older than its start.
const MTIME_SLACK: Duration = Duration::from_secs(2);

/// The median ns per iteration criterion estimated for `group/subject/param`
/// in this invocation. A row that a filter or `IDEMSTORE_BENCH_ONLY` skipped
/// keeps an earlier run's estimate on disk; it reads as `None` here, so
/// that no ratio mixes a fresh median with a stale one.
pub fn criterion_median(group: &str, subject: &str, param: &str) -> Option<f64> {
    let path = criterion_dir()
        .join(group)
        .join(subject)
        .join(param)
        .join("new")
        .join("estimates.json");
    if let Some(started) = STARTED.get() {
        let written = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
        if written + MTIME_SLACK < *started {
            return None;
        }
    }
    let text = std::fs::read_to_string(path).ok()?;
    let at = text.find("\"median\"")?;
    let rest = &text[at..];
    let at = rest.find("\"point_estimate\":")? + "\"point_estimate\":".len();
    let rest = &rest[at..];
    let end = rest.find([',', '}'])?;
    rest[..end].trim().parse().ok()
}

/// Prints a markdown table of criterion medians for `groups` at each
/// parameter (`1t`, `2t`, ...), with idemstore's ratio to each peer (below
/// 1: idemstore is faster).
pub fn print_summary(groups: &[&str], params: &[String], unit: &str, scale: f64) {
    println!();
    println!(
        "| workload | threads | {} | idemstore/peer |",
        SUBJECTS.join(" | ")
    );
    println!("|---|---|{}---|", "---|".repeat(SUBJECTS.len()));
    let mut skipped = false;
    for group in groups {
        for param in params {
            let medians: Vec<Option<f64>> = SUBJECTS
                .iter()
                .map(|s| criterion_median(group, s, param).map(|m| m / scale))
                .collect();
            if medians.iter().all(Option::is_none) {
                continue;
            }
            skipped |= medians.iter().any(Option::is_none);
            let cells: Vec<String> = medians
                .iter()
                .map(|m| m.map_or("-".into(), |m| format!("{m:.1} {unit}")))
                .collect();
            let ratios: Vec<String> = match medians[0] {
                Some(ours) => SUBJECTS[1..]
                    .iter()
                    .zip(&medians[1..])
                    .filter_map(|(s, m)| m.map(|m| format!("{s} {:.2}x", ours / m)))
                    .collect(),
                None => Vec::new(),
            };
            let threads = param.trim_end_matches('t');
            println!(
                "| {group} | {threads} | {} | {} |",
                cells.join(" | "),
                ratios.join(", ")
            );
        }
    }
    if skipped {
        println!("(-: not measured in this invocation)");
    }
}

/// `1t`, `2t`, ... for [`thread_counts`].
pub fn thread_params() -> Vec<String> {
    thread_counts().iter().map(|t| format!("{t}t")).collect()
}

/// Whether `IDEMSTORE_BENCH_ONLY` (a comma-separated list) admits `name`.
pub fn selected(name: &str) -> bool {
    std::env::var("IDEMSTORE_BENCH_ONLY").map_or(true, |only| only.split(',').any(|s| s == name))
}
