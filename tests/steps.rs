//! Multi-step runs (feature `steps`): resume after a failure, duplicates of
//! a run, steps checked by name and order, compensation, fencing, the async
//! forms, and, on a journal, restarts and a child process killed with
//! SIGKILL between steps, during a step and during compensation.
//!
//! Time is a `ManualClock`. The kill tests re-run this test binary as the
//! child, on one test, with [`CHILD`] set; the child blocks reading its
//! stdin where it is to be killed, and says so on stdout first, so every
//! kill lands at a known point.
#![cfg(feature = "steps")]

mod common;
#[path = "common/kid.rs"]
mod kid;

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::{block_on, manual_builder, wait_until, LEASE};
use idemstore::steps::{RunError, StepError, StepStore, Steps};
use idemstore::{Builder, ConfigError, Fingerprint, Fsync, JournalError, ManualClock, Outcome};
use kid::{count, Kid};

// ---------------------------------------------------------------- helpers

/// The names of the operations that ran, in order, across threads.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn note(&self, what: &str) {
        self.0.lock().unwrap().push(what.to_string());
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

type Error = &'static str;

/// An operation that notes `name` in `log` when it runs, then returns
/// `value`, or fails if `fail`.
fn op<T>(log: &Log, name: &'static str, fail: bool, value: T) -> impl FnOnce() -> Result<T, Error> {
    let log = log.clone();
    move || {
        log.note(name);
        if fail {
            Err("declined")
        } else {
            Ok(value)
        }
    }
}

/// A compensation that notes `undo <name> <its input>`, and fails if
/// `fails` names it.
fn undo<T: std::fmt::Display>(
    log: &Log,
    name: &'static str,
    fails: Option<&'static str>,
) -> impl FnMut(T) -> Result<(), Error> {
    let log = log.clone();
    move |value| {
        log.note(&format!("undo {name} {value}"));
        if fails == Some(name) {
            Err("refund service down")
        } else {
            Ok(())
        }
    }
}

/// The order of the crate's README: reserve, charge, ship, finish.
/// `fail` names a step that fails this time.
fn order(steps: &mut Steps<'_, String>, log: &Log, fail: &str) -> Result<String, StepError<Error>> {
    let hold: u64 = steps.run("reserve", op(log, "reserve", fail == "reserve", 7))?;
    let pay: String = steps.run(
        "charge",
        op(log, "charge", fail == "charge", format!("ch-{hold}")),
    )?;
    let ship: String = steps.run("ship", op(log, "ship", fail == "ship", "label".to_string()))?;
    Ok(steps.finish(format!("{pay}+{ship}"))?.into_inner())
}

fn store() -> (StepStore<String>, ManualClock) {
    let clock = ManualClock::new();
    (manual_builder(&clock).build().unwrap(), clock)
}

fn key() -> String {
    "order-1".to_string()
}

// ------------------------------------------------------- resume and failure

#[test]
fn a_retry_replays_finished_steps_and_runs_the_first_unfinished() {
    let (store, _clock) = store();
    let log = Log::default();
    let failed = order(&mut store.steps(key()), &log, "ship");
    assert!(matches!(failed, Err(StepError::Failed("declined"))));
    assert_eq!(log.take(), ["reserve", "charge", "ship"]);

    let mut retry = store.steps(key());
    assert_eq!(order(&mut retry, &log, "").unwrap(), "ch-7+label");
    assert_eq!(log.take(), ["ship"], "only the unfinished step ran again");
    assert_eq!(
        retry.steps().collect::<Vec<_>>(),
        ["reserve", "charge", "ship"]
    );

    // The finished run replays, its steps and its result, and runs nothing.
    let mut replay = store.steps(key());
    let hold: u64 = replay
        .run("reserve", || -> Result<u64, Error> { panic!("ran") })
        .unwrap();
    assert_eq!(hold, 7);
    assert_eq!(
        order(&mut store.steps(key()), &log, "").unwrap(),
        "ch-7+label"
    );
    assert_eq!(
        store.steps(key()).finish("other".to_string()).unwrap(),
        Outcome::Replayed("ch-7+label".to_string())
    );
    assert!(log.take().is_empty());
}

#[test]
fn a_failed_step_releases_only_that_step_and_is_retried_in_place() {
    let (store, _clock) = store();
    let log = Log::default();
    let mut steps = store.steps(key());
    let hold: u64 = steps.run("reserve", op(&log, "reserve", false, 7)).unwrap();
    let declined = steps.run("charge", op(&log, "charge", true, 0_u64));
    assert!(matches!(declined, Err(StepError::Failed("declined"))));
    // The same handle still owns the run and retries the step.
    let charged: u64 = steps
        .run("charge", op(&log, "charge", false, hold * 2))
        .unwrap();
    assert_eq!(charged, 14);
    assert_eq!(log.take(), ["reserve", "charge", "charge"]);
    assert_eq!(steps.finish(charged).unwrap(), Outcome::Executed(14));
}

#[test]
fn a_panicking_step_releases_the_step_and_the_run() {
    let (store, _clock) = store();
    let log = Log::default();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut steps = store.steps(key());
        let _: u64 = steps.run("reserve", op(&log, "reserve", false, 7)).unwrap();
        let _: u64 = steps
            .run("charge", || -> Result<u64, Error> { panic!("boom") })
            .unwrap();
    }));
    assert!(panicked.is_err());
    assert_eq!(
        store.stats().in_flight,
        0,
        "the panic released the step and the run"
    );
    assert_eq!(
        order(&mut store.steps(key()), &log, "").unwrap(),
        "ch-7+label"
    );
    assert_eq!(log.take(), ["reserve", "charge", "ship"]);
}

// ------------------------------------------------------ duplicates of a run

#[test]
fn a_duplicate_waits_for_the_run_and_replays_it() {
    let (store, _clock) = store();
    let log = Log::default();
    let (entered, in_step) = mpsc::channel();
    let (go, release) = mpsc::channel::<()>();
    let owner = {
        let (store, log) = (store.clone(), log.clone());
        std::thread::spawn(move || {
            let mut steps = store.steps(key());
            let hold: u64 = steps.run("reserve", op(&log, "reserve", false, 7)).unwrap();
            let pay: String = steps
                .run("charge", || {
                    entered.send(()).unwrap();
                    release.recv().unwrap();
                    log.note("charge");
                    Ok::<_, Error>(format!("ch-{hold}"))
                })
                .unwrap();
            steps.finish(pay).unwrap()
        })
    };
    in_step.recv().unwrap();
    // While the owner is inside a step: a clear answer, at once...
    let busy = store
        .steps(key())
        .no_wait()
        .run("reserve", op(&log, "reserve", false, 0_u64));
    assert!(matches!(busy, Err(StepError::Run(RunError::InFlight))));
    let timed_out = store
        .steps(key())
        .wait_timeout(Duration::from_millis(1))
        .finish(String::new());
    assert!(matches!(timed_out, Err(RunError::InFlight)));
    // ... or a wait for the run's end.
    let waits = store.stats().waits;
    let duplicate = {
        let (store, log) = (store.clone(), log.clone());
        std::thread::spawn(move || {
            let mut steps = store.steps(key());
            let hold: u64 = steps.run("reserve", op(&log, "reserve", false, 0)).unwrap();
            let pay: String = steps
                .run("charge", op(&log, "charge", false, String::new()))
                .unwrap();
            (hold, pay, steps.finish(String::new()).unwrap())
        })
    };
    wait_until("the duplicate waits on the run", || {
        store.stats().waits > waits
    });
    go.send(()).unwrap();
    assert_eq!(owner.join().unwrap(), Outcome::Executed("ch-7".to_string()));
    // The duplicate replays every step and the run's result, running none.
    let replayed = (7, "ch-7".to_string(), Outcome::Replayed("ch-7".to_string()));
    assert_eq!(duplicate.join().unwrap(), replayed);
    assert_eq!(log.take(), ["reserve", "charge"]);
}

#[test]
fn a_dropped_run_wakes_a_waiting_duplicate_which_resumes_it() {
    let (store, _clock) = store();
    let log = Log::default();
    let mut first = store.steps(key());
    let _: u64 = first.run("reserve", op(&log, "reserve", false, 7)).unwrap();
    let waits = store.stats().waits;
    let duplicate = {
        let (store, log) = (store.clone(), log.clone());
        std::thread::spawn(move || order(&mut store.steps(key()), &log, ""))
    };
    wait_until("the duplicate waits on the run", || {
        store.stats().waits > waits
    });
    let declined = first.run("charge", op(&log, "charge", true, String::new()));
    assert!(matches!(declined, Err(StepError::Failed(_))));
    drop(first);
    assert_eq!(duplicate.join().unwrap().unwrap(), "ch-7+label");
    assert_eq!(log.take(), ["reserve", "charge", "charge", "ship"]);
}

// ------------------------------------------------------ names and order

#[test]
fn steps_are_checked_by_name_and_order() {
    let (store, _clock) = store();
    let log = Log::default();
    let _ = order(&mut store.steps(key()), &log, "ship");
    log.take();

    // Another step where the run recorded `charge`.
    let mut other = store.steps(key());
    let _: u64 = other.run("reserve", op(&log, "reserve", false, 7)).unwrap();
    match other.run("ship", op(&log, "ship", false, 0_u64)) {
        Err(StepError::Run(RunError::StepMismatch {
            index: 1,
            asked,
            recorded: Some(recorded),
        })) => assert_eq!((asked.as_str(), recorded.as_str()), ("ship", "charge")),
        other => panic!("expected a step mismatch, got {other:?}"),
    }
    // Finishing without asking for a recorded step.
    match other.finish(String::new()) {
        Err(RunError::Unvisited { index: 1, name }) => assert_eq!(name, "charge"),
        other => panic!("expected an unvisited step, got {other:?}"),
    }
    drop(other);

    // A finished run checks the steps asked for against its record.
    assert_eq!(
        order(&mut store.steps(key()), &log, "").unwrap(),
        "ch-7+label"
    );
    let mut late = store.steps(key());
    let swapped = late.run("charge", op(&log, "charge", false, String::new()));
    assert!(matches!(
        swapped,
        Err(StepError::Run(RunError::StepMismatch { index: 0, .. }))
    ));
    assert_eq!(log.take(), ["ship"], "no refused step ran");
}

#[test]
fn a_run_key_reused_with_another_payload_is_refused_even_after_it_was_let_go() {
    let (store, _clock) = store();
    let log = Log::default();
    let cart = Fingerprint::of_bytes(b"2 apples");
    let mut first = store.steps_with(key(), cart);
    let _: u64 = first.run("reserve", op(&log, "reserve", false, 2)).unwrap();
    // In flight: the run's own key refuses.
    let busy = store
        .steps_with(key(), Fingerprint::of_bytes(b"9 pears"))
        .finish(0_u8);
    assert!(matches!(busy, Err(RunError::PayloadMismatch)));
    drop(first);
    // Let go: the recorded step refuses.
    let mut other = store.steps_with(key(), Fingerprint::of_bytes(b"9 pears"));
    let refused = other.run("reserve", op(&log, "reserve", false, 9_u64));
    assert!(matches!(
        refused,
        Err(StepError::Run(RunError::PayloadMismatch))
    ));
    drop(other);
    let mut same = store.steps_with(key(), cart);
    assert_eq!(
        same.run("reserve", op(&log, "reserve", false, 0_u64))
            .unwrap(),
        2
    );
    assert_eq!(log.take(), ["reserve"]);
}

#[test]
fn a_step_whose_type_changed_is_a_codec_error_not_a_rerun() {
    let (store, _clock) = store();
    let log = Log::default();
    let mut first = store.steps(key());
    let _: u64 = first.run("reserve", op(&log, "reserve", false, 7)).unwrap();
    drop(first);
    let mut retyped = store.steps(key());
    let read: Result<bool, _> = retyped.run("reserve", op(&log, "reserve", false, true));
    assert!(matches!(read, Err(StepError::Run(RunError::Codec(_)))));
    assert_eq!(log.take(), ["reserve"]);
}

// ------------------------------------------------------------ compensation

/// The saga of these tests: reserve, charge and ship, each with a
/// compensation; `fail` names a step that fails, `undo_fails` a
/// compensation that fails.
fn saga(
    steps: &mut Steps<'_, String>,
    log: &Log,
    fail: &str,
    undo_fails: Option<&'static str>,
) -> Result<String, StepError<Error>> {
    let hold: u64 = steps.run_with_undo(
        "reserve",
        op(log, "reserve", fail == "reserve", 7),
        undo::<u64>(log, "reserve", undo_fails),
    )?;
    let pay: String = steps.run_with_undo(
        "charge",
        op(log, "charge", fail == "charge", format!("ch-{hold}")),
        undo::<String>(log, "charge", undo_fails),
    )?;
    // No compensation: a notice is not taken back.
    let _: () = steps.run("notify", op(log, "notify", false, ()))?;
    let ship: String = steps.run_with_undo(
        "ship",
        op(log, "ship", fail == "ship", "label".to_string()),
        undo::<String>(log, "ship", undo_fails),
    )?;
    Ok(steps.finish(format!("{pay}+{ship}"))?.into_inner())
}

#[test]
fn giving_up_compensates_finished_steps_once_in_reverse_order() {
    let (store, _clock) = store();
    let log = Log::default();
    let mut steps = store.steps(key());
    assert!(matches!(
        saga(&mut steps, &log, "ship", None),
        Err(StepError::Failed(_))
    ));
    steps.give_up().unwrap();
    assert_eq!(
        log.take(),
        [
            "reserve",
            "charge",
            "notify",
            "ship",
            "undo charge ch-7",
            "undo reserve 7"
        ]
    );
    // Given up for good: nothing runs again, on this handle or another.
    steps.give_up().unwrap();
    let mut later = store.steps(key());
    assert!(matches!(
        saga(&mut later, &log, "", None),
        Err(StepError::Run(RunError::GivenUp))
    ));
    later.give_up().unwrap();
    assert!(log.take().is_empty());
    // And a finished run cannot be given up.
    let mut done = store.steps("order-2".to_string());
    saga(&mut done, &log, "", None).unwrap();
    assert!(matches!(done.give_up(), Err(RunError::Finished)));
    assert!(matches!(
        store.steps("order-2".to_string()).give_up(),
        Err(RunError::Finished)
    ));
}

#[test]
fn a_failed_compensation_stops_there_and_a_later_give_up_resumes_it() {
    let (store, _clock) = store();
    let log = Log::default();
    let mut steps = store.steps(key());
    assert!(saga(&mut steps, &log, "ship", Some("charge")).is_err());
    match steps.give_up() {
        Err(RunError::Undo { index: 1, name, .. }) => assert_eq!(name, "charge"),
        other => panic!("expected the charge's compensation to fail, got {other:?}"),
    }
    assert_eq!(
        log.take(),
        ["reserve", "charge", "notify", "ship", "undo charge ch-7"]
    );
    // Given up: new steps are refused, on this handle and on the next.
    let refused = steps.run("more", op(&log, "more", false, 0_u8));
    assert!(matches!(refused, Err(StepError::Run(RunError::GivenUp))));
    drop(steps);
    let mut next = store.steps(key());
    assert!(matches!(
        saga(&mut next, &log, "", None),
        Err(StepError::Run(RunError::GivenUp))
    ));
    assert!(log.take().is_empty(), "only replays so far");
    // The compensation resumes at the charge, then the reserve's runs.
    next.give_up().unwrap();
    assert_eq!(log.take(), ["undo charge ch-7", "undo reserve 7"]);
}

#[test]
fn compensations_that_finished_do_not_run_again_on_a_resumed_give_up() {
    let (store, _clock) = store();
    let log = Log::default();
    let mut steps = store.steps(key());
    assert!(saga(&mut steps, &log, "ship", Some("reserve")).is_err());
    assert!(matches!(
        steps.give_up(),
        Err(RunError::Undo { index: 0, .. })
    ));
    assert_eq!(
        log.take(),
        [
            "reserve",
            "charge",
            "notify",
            "ship",
            "undo charge ch-7",
            "undo reserve 7"
        ]
    );
    drop(steps);
    let mut resumed = store.steps(key());
    assert!(saga(&mut resumed, &log, "", None).is_err());
    resumed.give_up().unwrap();
    assert_eq!(
        log.take(),
        ["undo reserve 7"],
        "the charge's compensation ran once"
    );
}

#[test]
fn giving_up_needs_every_recorded_step_asked_for() {
    let (store, _clock) = store();
    let log = Log::default();
    let mut steps = store.steps(key());
    let _ = saga(&mut steps, &log, "ship", None);
    drop(steps);
    log.take();
    // Its compensations are the caller's code: a handle that did not ask
    // for the steps cannot know them.
    let mut blind = store.steps(key());
    match blind.give_up() {
        Err(RunError::Unvisited { index: 0, name }) => assert_eq!(name, "reserve"),
        other => panic!("expected an unvisited step, got {other:?}"),
    }
    assert!(log.take().is_empty());
}

// ------------------------------------------------------------ leases

#[test]
fn a_run_taken_over_after_its_lease_fences_its_stale_owner() {
    let (store, clock) = store();
    let log = Log::default();
    let mut stale = store.steps(key());
    let _: u64 = stale.run("reserve", op(&log, "reserve", false, 7)).unwrap();
    // Each step renews the run's lease: a run lasts while its steps come.
    clock.advance(LEASE - Duration::from_secs(1));
    let _: String = stale
        .run("charge", op(&log, "charge", false, "ch-7".to_string()))
        .unwrap();
    clock.advance(LEASE - Duration::from_secs(1));
    assert!(matches!(
        store.steps(key()).no_wait().finish(String::new()),
        Err(RunError::InFlight)
    ));
    // Then the owner stalls past its lease, and another caller takes over.
    clock.advance(LEASE);
    let mut fresh = store.steps(key());
    assert_eq!(order(&mut fresh, &log, "").unwrap(), "ch-7+label");
    let late = stale.run("ship", op(&log, "ship", false, String::new()));
    assert!(matches!(late, Err(StepError::Run(RunError::Superseded))));
    assert!(matches!(
        stale.finish(String::new()),
        Err(RunError::Superseded)
    ));
    assert_eq!(log.take(), ["reserve", "charge", "ship"]);
}

// ------------------------------------------------------------ async forms

async fn order_async(
    steps: &mut Steps<'_, String>,
    log: &Log,
    fail: &'static str,
) -> Result<String, StepError<Error>> {
    let (l, undo_log) = (log.clone(), log.clone());
    let hold: u64 = steps
        .run_with_undo_async(
            "reserve",
            || async move { op(&l, "reserve", fail == "reserve", 7)() },
            move |hold: u64| {
                let log = undo_log.clone();
                async move {
                    log.note(&format!("undo reserve {hold}"));
                    Ok::<_, Error>(())
                }
            },
        )
        .await?;
    let l = log.clone();
    let pay: String = steps.run_with_undo(
        "charge",
        op(&l, "charge", fail == "charge", format!("ch-{hold}")),
        undo::<String>(log, "charge", None),
    )?;
    let l = log.clone();
    let ship: String = steps
        .run_async("ship", || async move {
            op(&l, "ship", fail == "ship", "label".to_string())()
        })
        .await?;
    Ok(steps
        .finish_async(format!("{pay}+{ship}"))
        .await?
        .into_inner())
}

fn assert_send<T: Send>(value: T) -> T {
    value
}

#[test]
fn the_async_forms_resume_and_compensate() {
    let (store, _clock) = store();
    let log = Log::default();
    block_on(async {
        let mut steps = store.steps(key());
        assert!(order_async(&mut steps, &log, "ship").await.is_err());
        drop(steps);
        let mut retry = store.steps(key());
        assert_eq!(
            assert_send(order_async(&mut retry, &log, ""))
                .await
                .unwrap(),
            "ch-7+label"
        );
        assert_eq!(log.take(), ["reserve", "charge", "ship", "ship"]);

        let mut given_up = store.steps("order-2".to_string());
        assert!(order_async(&mut given_up, &log, "ship").await.is_err());
        // The sync give_up cannot run an async compensation.
        assert!(matches!(
            given_up.give_up(),
            Err(RunError::AsyncUndo { index: 0, .. })
        ));
        assert_send(given_up.give_up_async()).await.unwrap();
        assert_eq!(
            log.take(),
            [
                "reserve",
                "charge",
                "ship",
                "undo charge ch-7",
                "undo reserve 7"
            ]
        );
    });
}

#[test]
fn an_async_duplicate_awaits_the_run() {
    let (store, _clock) = store();
    let log = Log::default();
    let mut owner = store.steps(key());
    let _: u64 = owner.run("reserve", op(&log, "reserve", false, 7)).unwrap();
    let waits = store.stats().waits;
    let duplicate = {
        let (store, log) = (store.clone(), log.clone());
        std::thread::spawn(move || {
            block_on(async { order_async(&mut store.steps(key()), &log, "").await })
        })
    };
    wait_until("the duplicate awaits the run", || {
        store.stats().waits > waits
    });
    drop(owner);
    assert_eq!(duplicate.join().unwrap().unwrap(), "ch-7+label");
    assert_eq!(log.take(), ["reserve", "charge", "ship"]);
}

// ------------------------------------------------------------ journal

/// A directory of the test's own, removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("idemstore-steps-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the test's temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn journaled(
    path: &Path,
    clock: &ManualClock,
) -> Builder<idemstore::steps::StepKey<String>, Vec<u8>> {
    manual_builder(clock).journal(path).fsync(Fsync::Never)
}

/// Opens the journal a store (or a killed process) just let go of: retries
/// while it is still locked, for at most ten seconds.
fn reopen(path: &Path, clock: &ManualClock) -> StepStore<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match journaled(path, clock).build() {
            Err(ConfigError::Journal(JournalError::Locked { .. })) if Instant::now() < deadline => {
                std::thread::yield_now();
            }
            other => return other.expect("open the journal"),
        }
    }
}

#[test]
fn a_journaled_run_resumes_and_compensates_after_restarts() {
    let dir = TempDir::new("restart");
    let path = dir.0.join("j");
    let clock = ManualClock::with_wall(t0());
    let log = Log::default();
    let store = reopen(&path, &clock);
    assert!(order(&mut store.steps(key()), &log, "ship").is_err());
    let mut giving_up = store.steps("order-2".to_string());
    assert!(saga(&mut giving_up, &log, "ship", Some("charge")).is_err());
    assert!(matches!(
        giving_up.give_up(),
        Err(RunError::Undo { index: 1, .. })
    ));
    drop(giving_up);
    drop(store);
    log.take();

    let store = reopen(&path, &clock);
    assert_eq!(
        order(&mut store.steps(key()), &log, "").unwrap(),
        "ch-7+label"
    );
    // The mark survived: no new step runs, and compensation resumes.
    let mut resumed = store.steps("order-2".to_string());
    assert!(matches!(
        saga(&mut resumed, &log, "", None),
        Err(StepError::Run(RunError::GivenUp))
    ));
    resumed.give_up().unwrap();
    assert_eq!(log.take(), ["ship", "undo charge ch-7", "undo reserve 7"]);
    drop(resumed);
    drop(store);

    let store = reopen(&path, &clock);
    assert_eq!(
        store.steps(key()).finish(String::new()).unwrap(),
        Outcome::Replayed("ch-7+label".to_string())
    );
    store.steps("order-2".to_string()).give_up().unwrap();
    assert!(log.take().is_empty());
}

// ---------------------------------------------------- SIGKILL, for real

/// The environment variable that makes a test the child of another:
/// `<role>:<journal>`.
const CHILD: &str = "IDEMSTORE_STEPS_CHILD";

/// What the child says, on its own lines, after this.
const SAYS: &str = "steps-child: ";

/// This binary's `steps_child` test as `role` on the journal at `path`.
fn kid(role: &str, path: &Path) -> Kid {
    Kid::start(
        "steps_child",
        (CHILD, format!("{role}:{}", path.display())),
        SAYS,
    )
}

fn say(what: &str) {
    kid::say(SAYS, what);
}

fn block() -> ! {
    kid::block(SAYS)
}

/// The child's side: the order and the saga of these tests, on the
/// journal, saying each step's start and end, and blocking where `role`
/// says.
fn serve_child(role: &str, path: &Path) {
    let clock = ManualClock::with_wall(t0());
    let store = reopen(path, &clock);
    let (run, stop) = role.split_once('/').expect("role is run/stop");
    let has = |what: String| stop.split('+').any(|token| token == what);
    let step = |name: &'static str, value: String| {
        move || {
            say(&format!("start {name}"));
            if has(format!("in-{name}")) {
                block();
            }
            if has(format!("fail-{name}")) {
                return Err("declined");
            }
            Ok::<_, Error>(value)
        }
    };
    let undo = |name: &'static str| {
        move |value: String| {
            say(&format!("undo-start {name} {value}"));
            if has(format!("in-undo-{name}")) {
                block();
            }
            say(&format!("undo-done {name}"));
            Ok::<_, Error>(())
        }
    };
    let mut steps = store.steps(run.to_string());
    let result = (|| {
        let hold: String =
            steps.run_with_undo("reserve", step("reserve", "7".into()), undo("reserve"))?;
        say("done reserve");
        let pay: String = steps.run_with_undo(
            "charge",
            step("charge", format!("ch-{hold}")),
            undo("charge"),
        )?;
        say("done charge");
        if has("after-charge".to_string()) {
            block();
        }
        let ship: String = steps.run("ship", step("ship", "label".into()))?;
        say("done ship");
        Ok::<_, StepError<Error>>(steps.finish(format!("{pay}+{ship}"))?.into_inner())
    })();
    match result {
        Ok(receipt) => say(&format!("finished {receipt}")),
        Err(StepError::Failed(_) | StepError::Run(RunError::GivenUp)) => {
            steps.give_up().expect("give up");
            say("gave up");
        }
        Err(e) => panic!("child: {e}"),
    }
}

/// The child's entry: a no-op unless started as a child.
#[test]
fn steps_child() {
    if let Ok(value) = std::env::var(CHILD) {
        let (role, path) = value.split_once(':').expect("role:path");
        serve_child(role, Path::new(path));
    }
}

/// No step (or compensation) starts after a line said it was done.
fn nothing_done_runs_again(said: &[String]) {
    for (at, line) in said.iter().enumerate() {
        let again = if let Some(name) = line.strip_prefix("done ") {
            format!("start {name}")
        } else if let Some(name) = line.strip_prefix("undo-done ") {
            format!("undo-start {name} ")
        } else {
            continue;
        };
        if let Some(rerun) = said[at..].iter().find(|later| later.starts_with(&again)) {
            panic!("`{rerun}` after `{line}`: {said:?}");
        }
    }
}

#[test]
fn a_run_killed_between_and_during_steps_resumes_without_rerunning_a_finished_step() {
    let dir = TempDir::new("kill-steps");
    let path = dir.0.join("j");
    let mut said = kid("order-1/after-charge", &path).kill_when_blocked();
    assert_eq!(
        said,
        [
            "start reserve",
            "done reserve",
            "start charge",
            "done charge",
            "blocked"
        ]
    );
    let second = kid("order-1/in-ship", &path).kill_when_blocked();
    assert_eq!(
        second,
        ["done reserve", "done charge", "start ship", "blocked"]
    );
    said.extend(second);
    let third = kid("order-1/none", &path).finish();
    said.extend(third);
    nothing_done_runs_again(&said);
    assert_eq!(count(&said, "start reserve"), 1);
    assert_eq!(count(&said, "start charge"), 1);
    // The ship the kill interrupted had no record, so it ran again.
    assert_eq!(count(&said, "start ship"), 2);
    assert_eq!(said.last().unwrap(), "finished ch-7+label");

    let clock = ManualClock::with_wall(t0());
    let store = reopen(&path, &clock);
    assert_eq!(
        store
            .steps("order-1".to_string())
            .finish(String::new())
            .unwrap(),
        Outcome::Replayed("ch-7+label".to_string())
    );
}

#[test]
fn a_run_killed_during_compensation_resumes_it() {
    let dir = TempDir::new("kill-undo");
    let path = dir.0.join("j");
    // The ship fails; the charge's compensation finishes; the kill lands
    // inside the reserve's.
    let mut said = kid("order-2/fail-ship+in-undo-reserve", &path).kill_when_blocked();
    said.extend(kid("order-2/none", &path).finish());
    nothing_done_runs_again(&said);
    assert_eq!(
        count(&said, "start ship"),
        1,
        "no step ran once given up: {said:?}"
    );
    assert_eq!(count(&said, "undo-start charge ch-7"), 1, "{said:?}");
    assert_eq!(count(&said, "undo-start reserve 7"), 2, "{said:?}");
    assert_eq!(count(&said, "undo-done reserve"), 1, "{said:?}");
    assert_eq!(said.last().unwrap(), "gave up");

    let clock = ManualClock::with_wall(t0());
    let store = reopen(&path, &clock);
    let mut later = store.steps("order-2".to_string());
    let refused = later.run("reserve", || -> Result<String, Error> { panic!("ran") });
    assert!(matches!(refused, Err(StepError::Run(RunError::GivenUp))));
    later.give_up().unwrap();
}
