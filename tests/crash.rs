//! kill -9 during a storm on a journaled store, then reopen: no acknowledged
//! completion is lost or runs again. The harness is the `crash` example's
//! (`examples/crash.rs`); this test is its short run for CI.
//!
//! The children are this test binary itself, re-run with only the
//! `crash_child` test selected and the harness's environment set, which
//! makes that test run the storm until it is killed.
//!
//! `IDEMSTORE_CRASH_KILLS` sets the rounds (default 3; a soak:
//! `IDEMSTORE_CRASH_KILLS=200 cargo test --release --features journal --test crash -- --nocapture`),
//! `IDEMSTORE_CRASH_SEED` the seed, `IDEMSTORE_CRASH_FSYNC` the mode
//! (`always`, `interval`, `never`) and `IDEMSTORE_CRASH_COMPACT_MS` how often
//! the children compact (default 40 ms; 0 never).
#![cfg(feature = "journal")]

#[path = "../examples/crash.rs"]
#[allow(dead_code)]
mod crash;

use std::process::Command;
use std::time::Duration;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} does not parse")),
        Err(_) => default,
    }
}

/// The child's entry: a no-op unless the harness started this binary as a
/// crash child, in which case it runs the storm until killed.
#[test]
fn crash_child() {
    crash::serve_if_child();
}

#[test]
fn kill_9_loses_no_acknowledged_completion() {
    let fsync =
        std::env::var("IDEMSTORE_CRASH_FSYNC").map_or(idemstore::Fsync::default(), |text| {
            crash::parse_fsync(&text).unwrap_or_else(|| panic!("IDEMSTORE_CRASH_FSYNC={text:?}"))
        });
    let settings = crash::Settings {
        kills: env_or("IDEMSTORE_CRASH_KILLS", 3),
        fsync,
        seed: env_or("IDEMSTORE_CRASH_SEED", 42),
        threads: 4,
        run_ms: (20, 120),
        compact_every: Duration::from_millis(env_or("IDEMSTORE_CRASH_COMPACT_MS", 40)),
    };
    let exe = std::env::current_exe().expect("this test's binary");
    let child = || {
        let mut command = Command::new(&exe);
        // `--quiet` keeps libtest's own lines apart from the child's.
        command.args(["crash_child", "--exact", "--nocapture", "--quiet"]);
        command
    };
    let totals = crash::run(&settings, &child).expect("the harness ran");
    crash::print_totals(&totals);
    assert!(
        totals.acknowledged() > 0,
        "the children acknowledged nothing"
    );
    assert!(
        totals.replayed() > 0,
        "nothing was replayed after a restart"
    );
    assert_eq!(totals.lost(), 0, "acknowledged completions lost");
    assert_eq!(
        totals.re_executed(),
        0,
        "acknowledged completions run again"
    );
}
