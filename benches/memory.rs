//! Bytes per entry at 1M entries, for u64 -> u64 and for String(36) ->
//! Vec<u8>(256), measured with a counting global allocator (its own binary,
//! so the timing benches run on the plain system allocator). The subjects
//! are the timing benches' own (`common`), configured as they are there:
//! dashmap's and the mutex map's entries carry the deadline a TTL needs.
//!
//! "Bytes per entry" is the growth of live heap bytes from before the
//! structure was built to after 1M entries were inserted and deferred work
//! (epoch garbage, moka's write buffers) was allowed to finish, divided by
//! the entries held. For String -> Vec<u8> the 292 heap bytes of payload
//! per entry (36 + 256) are included; the overhead column subtracts them.
//!
//! `cargo bench --bench memory` (`-- --quick` or `IDEMSTORE_BENCH_QUICK=1`:
//! 200k entries instead of 1M).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Cfg, Key, Subject};

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

/// One row: `S` filled with `n` keys of its shape, deferred work settled.
fn measure<S: Subject>(n: usize) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let subject = S::new(&Cfg::untimed(n));
    for i in 0..n as u64 {
        let k = S::K::nth(i);
        subject.execute(&k, || k.value());
    }
    subject.settle();
    let live = LIVE.load(Ordering::Relaxed) - before;
    let peak = PEAK.load(Ordering::Relaxed) - before;
    let len = subject.len();
    drop(subject);
    let per = live as f64 / len as f64;
    println!(
        "| {} | {:<13} | {len} | {per:.1} | {:.1} | {:.1} |",
        S::K::SHAPE,
        S::NAME,
        per - S::K::PAYLOAD as f64,
        peak as f64 / len as f64,
    );
}

fn main() {
    let n = if common::quick() { 200_000 } else { 1_000_000 };
    // Under `cargo test --benches` this binary only checks that it runs.
    let n = if common::measuring() { n } else { 10_000 };
    println!("Heap bytes per entry at {n} entries (counting allocator):\n");
    println!("| types | subject | entries | bytes/entry | overhead/entry | peak/entry |");
    println!("|---|---|---|---|---|---|");
    common::for_each_subject!(u64; measure(n));
    common::for_each_subject!(String; measure(n));
}
