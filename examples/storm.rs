//! A storm of duplicate requests: thousands of concurrent calls over a few
//! hundred idempotency keys, each running a slow operation.
//!
//! idemstore runs each key's operation exactly once; the duplicates wait for
//! it or replay it. Next to it, the pattern idemstore replaces, a
//! check-then-set `Mutex<HashMap>`, runs the same operation again and again.
//!
//! ```text
//! cargo run --release --example storm
//! ```

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use idemstore::{Outcome, Store};

const THREADS: usize = 32;
const KEYS: u64 = 300;
const REQUESTS_PER_THREAD: u64 = 1_000;
/// Simulated work per execution: a call to a payment provider, say.
const WORK: Duration = Duration::from_millis(2);

/// The operation being made idempotent. It sleeps to stand in for I/O: the
/// storm is about what happens while an operation is slow.
fn operation(key: u64, executions: &AtomicU64) -> u64 {
    executions.fetch_add(1, Ordering::Relaxed);
    thread::sleep(WORK);
    key * 10
}

/// A per-thread request order: every thread hits every key, in its own
/// shuffled sequence, so duplicates of a key arrive close together.
fn request_keys(thread: usize) -> impl Iterator<Item = u64> {
    let mut state =
        0x9E37_79B9_7F4A_7C15_u64 ^ (thread as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (0..REQUESTS_PER_THREAD).map(move |_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % KEYS
    })
}

struct Report {
    executions: u64,
    replays: u64,
    elapsed: Duration,
}

/// Fires the storm at `handle`, one call per request, from all threads at once.
fn storm(handle: impl Fn(u64, &AtomicU64) -> bool + Send + Sync + 'static) -> Report {
    let handle = Arc::new(handle);
    let executions = Arc::new(AtomicU64::new(0));
    let replays = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(THREADS + 1));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (handle, executions, replays, start) = (
                handle.clone(),
                executions.clone(),
                replays.clone(),
                start.clone(),
            );
            thread::spawn(move || {
                start.wait();
                for key in request_keys(t) {
                    if handle(key, &executions) {
                        replays.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    for t in threads {
        t.join().expect("storm thread panicked");
    }
    Report {
        executions: executions.load(Ordering::Relaxed),
        replays: replays.load(Ordering::Relaxed),
        elapsed: began.elapsed(),
    }
}

fn print_row(name: &str, report: &Report, extra: &str) {
    let total = THREADS as u64 * REQUESTS_PER_THREAD;
    println!(
        "  {name:<16} executions {:>5} (distinct keys {KEYS})  replays {:>6}  {extra:<22} {:>6.0} ms  {:>9.0} req/s",
        report.executions,
        report.replays,
        report.elapsed.as_secs_f64() * 1e3,
        total as f64 / report.elapsed.as_secs_f64(),
    );
}

fn main() -> ExitCode {
    println!(
        "storm: {THREADS} threads x {REQUESTS_PER_THREAD} requests over {KEYS} keys, {} ms of work per execution\n",
        WORK.as_millis()
    );

    let store: Store<u64, u64> = Store::new();
    let idem = {
        let store = store.clone();
        storm(move |key, executions| {
            match store.execute(key, || Ok::<_, ()>(operation(key, executions))) {
                Ok(Outcome::Replayed(value)) => {
                    assert_eq!(value, key * 10, "a replay returns the stored value");
                    true
                }
                Ok(Outcome::Executed(_)) => false,
                Err(e) => panic!("idemstore refused a request: {e:?}"),
            }
        })
    };
    let stats = store.stats();
    print_row("idemstore", &idem, &format!("waited {}", stats.waits));

    let naive: Arc<Mutex<HashMap<u64, u64>>> = Arc::default();
    let naive_report = storm(move |key, executions| {
        // The racy pattern: check, run, then set. Two duplicates that both
        // miss both run the operation.
        if naive.lock().expect("lock").get(&key).is_some() {
            return true;
        }
        let value = operation(key, executions);
        naive.lock().expect("lock").insert(key, value);
        false
    });
    print_row(
        "Mutex<HashMap>",
        &naive_report,
        &format!("duplicates {}", naive_report.executions - KEYS),
    );

    println!();
    if idem.executions == KEYS {
        println!("exactly once: idemstore executed each of the {KEYS} keys once; every duplicate waited or replayed.");
        ExitCode::SUCCESS
    } else {
        println!(
            "FAILED: idemstore executed {} times for {KEYS} keys",
            idem.executions
        );
        ExitCode::FAILURE
    }
}
