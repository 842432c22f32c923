//! What the timing benches share: the five subjects behind one trait, the
//! thread harness, the quick mode, and the summary table read back from
//! criterion's own estimates.
//!
//! Every subject uses `ahash` for u64 keys, so the benches compare the
//! tables and their synchronisation, not hash functions.

#![allow(dead_code)] // Each bench binary uses a different part.

use std::collections::HashMap;
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

/// One contender: the same two operations on every crate.
pub trait Subject: Send + Sync + Sized + 'static {
    const NAME: &'static str;
    fn new(cfg: &Cfg) -> Self;
    /// A read of a completed key.
    fn get(&self, key: u64) -> Option<u64>;
    /// Idempotent execution: run `op` once per key, others get its value.
    fn execute(&self, key: u64, op: impl FnOnce() -> u64) -> u64;
    /// Finishes deferred bookkeeping after a prefill (moka's write buffers).
    fn settle(&self) {}
}

// ---------------------------------------------------------------- idemstore

pub struct Idem(pub Store<u64, u64>);

impl Subject for Idem {
    const NAME: &'static str = "idemstore";
    fn new(cfg: &Cfg) -> Self {
        let mut b = Store::builder().sweep_interval(cfg.sweep_interval);
        if let Some(ttl) = cfg.ttl {
            b = b.ttl(ttl).lease(ttl);
        }
        Idem(b.build().expect("valid config"))
    }
    #[inline]
    fn get(&self, key: u64) -> Option<u64> {
        self.0.get(&key)
    }
    #[inline]
    fn execute(&self, key: u64, op: impl FnOnce() -> u64) -> u64 {
        match self.0.execute(key, || Ok::<_, ()>(op())) {
            Ok(Outcome::Executed(v) | Outcome::Replayed(v)) => v,
            Err(e) => panic!("execute failed: {e:?}"),
        }
    }
}

// --------------------------------------------------------------------- moka

pub struct Moka(pub moka::sync::Cache<u64, u64, ahash::RandomState>);

impl Subject for Moka {
    const NAME: &'static str = "moka";
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
    fn get(&self, key: u64) -> Option<u64> {
        self.0.get(&key)
    }
    #[inline]
    fn execute(&self, key: u64, op: impl FnOnce() -> u64) -> u64 {
        self.0.get_with(key, op)
    }
    fn settle(&self) {
        self.0.run_pending_tasks();
    }
}

// -------------------------------------------------------------- quick_cache

pub struct Quick(pub quick_cache::sync::Cache<u64, u64>);

impl Subject for Quick {
    const NAME: &'static str = "quick_cache";
    fn new(cfg: &Cfg) -> Self {
        // No TTL in quick_cache: sized so nothing is evicted (its default
        // hasher is ahash with the `ahash` feature).
        Quick(quick_cache::sync::Cache::new(cfg.capacity.max(1024)))
    }
    #[inline]
    fn get(&self, key: u64) -> Option<u64> {
        self.0.get(&key)
    }
    #[inline]
    fn execute(&self, key: u64, op: impl FnOnce() -> u64) -> u64 {
        match self.0.get_or_insert_with(&key, || Ok::<_, ()>(op())) {
            Ok(v) => v,
            Err(()) => unreachable!(),
        }
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

/// Runs `sweep` every `interval` until `owner` is gone: the background
/// expiry a user of a TTL-less map would add.
fn spawn_sweeper<T: Send + Sync + 'static>(owner: &Arc<T>, interval: Duration, sweep: fn(&T)) {
    let weak: Weak<T> = Arc::downgrade(owner);
    thread::spawn(move || loop {
        thread::sleep(interval);
        match weak.upgrade() {
            Some(owner) => sweep(&owner),
            None => return,
        }
    });
}

// ------------------------------------------------------------------ dashmap

/// `(value, expires_at)`; `expires_at` is checked only when a TTL is set.
pub struct DashInner {
    pub map: dashmap::DashMap<u64, (u64, u64), ahash::RandomState>,
    ttl: Option<u64>,
}

pub struct Dash(pub Arc<DashInner>);

impl Subject for Dash {
    const NAME: &'static str = "dashmap";
    fn new(cfg: &Cfg) -> Self {
        let inner = Arc::new(DashInner {
            map: dashmap::DashMap::with_hasher(ahash::RandomState::new()),
            ttl: cfg.ttl.map(|t| t.as_nanos() as u64),
        });
        if inner.ttl.is_some() {
            spawn_sweeper(&inner, cfg.sweep_interval, |d| {
                let now = now_nanos();
                d.map.retain(|_, (_, exp)| *exp > now);
            });
        }
        Dash(inner)
    }
    #[inline]
    fn get(&self, key: u64) -> Option<u64> {
        let entry = self.0.map.get(&key)?;
        let (v, exp) = *entry;
        match self.0.ttl {
            Some(_) if exp <= now_nanos() => None,
            _ => Some(v),
        }
    }
    #[inline]
    fn execute(&self, key: u64, op: impl FnOnce() -> u64) -> u64 {
        match self.0.ttl {
            // The idempotency idiom: the shard stays write-locked while `op`
            // runs, which is what makes it run once.
            None => self.0.map.entry(key).or_insert_with(|| (op(), u64::MAX)).0,
            Some(ttl) => {
                use dashmap::mapref::entry::Entry;
                let now = now_nanos();
                match self.0.map.entry(key) {
                    Entry::Occupied(e) if e.get().1 > now => e.get().0,
                    Entry::Occupied(mut e) => {
                        let v = op();
                        e.insert((v, now_nanos() + ttl));
                        v
                    }
                    Entry::Vacant(e) => {
                        let v = op();
                        e.insert((v, now_nanos() + ttl));
                        v
                    }
                }
            }
        }
    }
}

// ------------------------------------------------- Mutex<HashMap> + Condvar

pub enum Slot {
    Running,
    Done(u64, u64),
}

pub struct MutexInner {
    pub map: Mutex<HashMap<u64, Slot, ahash::RandomState>>,
    done: Condvar,
    ttl: Option<u64>,
}

/// The textbook single-flight: one lock, one condition variable.
pub struct MutexMap(pub Arc<MutexInner>);

impl Subject for MutexMap {
    const NAME: &'static str = "mutex_hashmap";
    fn new(cfg: &Cfg) -> Self {
        let inner = Arc::new(MutexInner {
            map: Mutex::new(HashMap::with_hasher(ahash::RandomState::new())),
            done: Condvar::new(),
            ttl: cfg.ttl.map(|t| t.as_nanos() as u64),
        });
        if inner.ttl.is_some() {
            spawn_sweeper(&inner, cfg.sweep_interval, |m| {
                let now = now_nanos();
                m.map
                    .lock()
                    .unwrap()
                    .retain(|_, s| !matches!(s, Slot::Done(_, exp) if *exp <= now));
            });
        }
        MutexMap(inner)
    }
    #[inline]
    fn get(&self, key: u64) -> Option<u64> {
        let now = if self.0.ttl.is_some() { now_nanos() } else { 0 };
        match self.0.map.lock().unwrap().get(&key) {
            Some(Slot::Done(v, exp)) if *exp > now => Some(*v),
            _ => None,
        }
    }
    fn execute(&self, key: u64, op: impl FnOnce() -> u64) -> u64 {
        let now = if self.0.ttl.is_some() { now_nanos() } else { 0 };
        let mut map = self.0.map.lock().unwrap();
        loop {
            match map.get(&key) {
                Some(Slot::Done(v, exp)) if *exp > now => return *v,
                Some(Slot::Running) => map = self.0.done.wait(map).unwrap(),
                _ => break,
            }
        }
        map.insert(key, Slot::Running);
        drop(map);
        let v = op();
        let exp = self.0.ttl.map_or(u64::MAX, |t| now_nanos() + t);
        self.0.map.lock().unwrap().insert(key, Slot::Done(v, exp));
        self.0.done.notify_all();
        v
    }
}

/// Calls `$f::<S>($args)` for every subject, idemstore first.
macro_rules! for_each_subject {
    ($f:ident ( $($arg:expr),* )) => {{
        $f::<$crate::common::Idem>($($arg),*);
        $f::<$crate::common::Moka>($($arg),*);
        $f::<$crate::common::Quick>($($arg),*);
        $f::<$crate::common::Dash>($($arg),*);
        $f::<$crate::common::MutexMap>($($arg),*);
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
