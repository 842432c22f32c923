//! Bytes per entry at 1M entries, for u64 -> u64 and for String(36) ->
//! Vec<u8>(256), measured with a counting global allocator (its own binary,
//! so the timing benches run on the plain system allocator).
//!
//! "Bytes per entry" is the growth of live heap bytes from before the
//! structure was built to after 1M entries were inserted and deferred work
//! (epoch garbage, moka's write buffers) was allowed to finish, divided by
//! the entries held. For String -> Vec<u8> the 292 heap bytes of payload
//! per entry (36 + 256) are included; the overhead column subtracts them.
//!
//! `cargo bench --bench memory` (`-- --quick` or `IDEMSTORE_BENCH_QUICK=1`:
//! 200k entries instead of 1M).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// The system allocator, counting live and peak bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            let now = if new_size >= layout.size() {
                LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                    - layout.size()
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed)
                    - (layout.size() - new_size)
            };
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

trait Key: Hash + Eq + Clone + Send + Sync + 'static {}
impl<T: Hash + Eq + Clone + Send + Sync + 'static> Key for T {}

/// One structure under test, holding `K -> V`.
trait Holder<K: Key, V: Clone + Send + Sync + 'static>: Sized {
    const NAME: &'static str;
    fn new(n: usize) -> Self;
    fn insert(&self, key: K, value: V);
    /// Lets deferred work finish before measuring.
    fn settle(&self, probe: &K);
    fn len(&self) -> usize;
}

struct Idem<K, V>(idemstore::Store<K, V>);

impl<K: Key, V: Clone + Send + Sync + 'static> Holder<K, V> for Idem<K, V> {
    const NAME: &'static str = "idemstore";
    fn new(_: usize) -> Self {
        Idem(
            idemstore::Store::builder()
                .background_sweeper(false)
                .build()
                .unwrap(),
        )
    }
    fn insert(&self, key: K, value: V) {
        let _ = self.0.execute(key, || Ok::<_, ()>(value));
    }
    fn settle(&self, probe: &K) {
        // Bucket arrays retired while growing are freed once the epoch
        // advances, which pins drive (one collection attempt every 128).
        for _ in 0..100_000 {
            std::hint::black_box(self.0.get(probe));
        }
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

struct Moka<K, V>(moka::sync::Cache<K, V, ahash::RandomState>);

impl<K: Key, V: Clone + Send + Sync + 'static> Holder<K, V> for Moka<K, V> {
    const NAME: &'static str = "moka";
    fn new(_: usize) -> Self {
        Moka(
            moka::sync::Cache::builder()
                .time_to_live(Duration::from_secs(24 * 3600))
                .build_with_hasher(ahash::RandomState::new()),
        )
    }
    fn insert(&self, key: K, value: V) {
        self.0.get_with(key, || value);
    }
    fn settle(&self, _: &K) {
        self.0.run_pending_tasks();
    }
    fn len(&self) -> usize {
        self.0.entry_count() as usize
    }
}

struct Quick<K, V>(quick_cache::sync::Cache<K, V>);

impl<K: Key, V: Clone + Send + Sync + 'static> Holder<K, V> for Quick<K, V> {
    const NAME: &'static str = "quick_cache";
    fn new(n: usize) -> Self {
        // Sized for `n` items, with room so none is evicted.
        Quick(quick_cache::sync::Cache::with(
            n,
            2 * n as u64,
            Default::default(),
            Default::default(),
            Default::default(),
        ))
    }
    fn insert(&self, key: K, value: V) {
        let _ = self.0.get_or_insert_with(&key, || Ok::<_, ()>(value));
    }
    fn settle(&self, _: &K) {}
    fn len(&self) -> usize {
        self.0.len()
    }
}

struct Dash<K, V>(dashmap::DashMap<K, V, ahash::RandomState>);

impl<K: Key, V: Clone + Send + Sync + 'static> Holder<K, V> for Dash<K, V> {
    const NAME: &'static str = "dashmap";
    fn new(_: usize) -> Self {
        Dash(dashmap::DashMap::with_hasher(ahash::RandomState::new()))
    }
    fn insert(&self, key: K, value: V) {
        self.0.entry(key).or_insert_with(|| value);
    }
    fn settle(&self, _: &K) {}
    fn len(&self) -> usize {
        self.0.len()
    }
}

enum Slot<V> {
    #[allow(dead_code)] // Present to size the map as the single-flight peer does.
    Running,
    Done(V),
}

struct MutexMap<K, V>(Mutex<HashMap<K, Slot<V>, ahash::RandomState>>, Condvar);

impl<K: Key, V: Clone + Send + Sync + 'static> Holder<K, V> for MutexMap<K, V> {
    const NAME: &'static str = "mutex_hashmap";
    fn new(_: usize) -> Self {
        MutexMap(
            Mutex::new(HashMap::with_hasher(ahash::RandomState::new())),
            Condvar::new(),
        )
    }
    fn insert(&self, key: K, value: V) {
        self.0
            .lock()
            .unwrap()
            .entry(key)
            .or_insert(Slot::Done(value));
        self.1.notify_all();
    }
    fn settle(&self, _: &K) {}
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

fn measure<K: Key, V: Clone + Send + Sync + 'static, H: Holder<K, V>>(
    types: &str,
    n: usize,
    payload: usize,
    make: impl Fn(u64) -> (K, V),
) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let holder = H::new(n);
    for i in 0..n as u64 {
        let (k, v) = make(i);
        holder.insert(k, v);
    }
    holder.settle(&make(0).0);
    let live = LIVE.load(Ordering::Relaxed) - before;
    let peak = PEAK.load(Ordering::Relaxed) - before;
    let len = holder.len();
    drop(holder);
    let per = live as f64 / len as f64;
    println!(
        "| {types} | {:<13} | {len} | {per:.1} | {:.1} | {:.1} |",
        H::NAME,
        per - payload as f64,
        peak as f64 / len as f64,
    );
}

fn all<K: Key, V: Clone + Send + Sync + 'static>(
    types: &str,
    n: usize,
    payload: usize,
    make: impl Fn(u64) -> (K, V) + Copy,
) {
    measure::<K, V, Idem<K, V>>(types, n, payload, make);
    measure::<K, V, Moka<K, V>>(types, n, payload, make);
    measure::<K, V, Quick<K, V>>(types, n, payload, make);
    measure::<K, V, Dash<K, V>>(types, n, payload, make);
    measure::<K, V, MutexMap<K, V>>(types, n, payload, make);
}

fn uuid_like(i: u64) -> String {
    let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        x >> 32,
        (x >> 16) & 0xffff,
        x & 0xffff,
        i & 0xffff,
        i
    )
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var("IDEMSTORE_BENCH_QUICK").is_ok_and(|v| v != "0" && !v.is_empty());
    let n = if quick { 200_000 } else { 1_000_000 };
    // Under `cargo test --benches` this binary only checks that it runs.
    let n = if std::env::args().any(|a| a == "--bench") {
        n
    } else {
        10_000
    };
    println!("Heap bytes per entry at {n} entries (counting allocator):\n");
    println!("| types | subject | entries | bytes/entry | overhead/entry | peak/entry |");
    println!("|---|---|---|---|---|---|");
    all::<u64, u64>("u64 -> u64", n, 0, |i| (i, i));
    assert_eq!(uuid_like(1).len(), 36);
    all::<String, Vec<u8>>("String(36) -> Vec<u8>(256)", n, 36 + 256, |i| {
        (uuid_like(i), vec![i as u8; 256])
    });
}
