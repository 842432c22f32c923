//! Multi-step runs over every backend: the async forms' behaviour, written
//! once against [`Subject`], runs over the in-process store (a manual
//! clock) and over a throwaway `redis-server` (one store handle, and two
//! handles taking turns, so a duplicate meets its owner through Redis), as
//! `tests/redis_semantics.rs` does for single keys. Then a run on Redis
//! whose process is killed with SIGKILL between steps and during a step
//! resumes in another process, with no finished step run twice.
#![cfg(all(feature = "steps", feature = "redis"))]

#[path = "common/kid.rs"]
mod kid;
#[path = "common/redis_server.rs"]
mod redis_server;
#[macro_use]
#[path = "common/suite.rs"]
mod suite;

use std::future::Future;
use std::io::Error;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use idemstore::backend::Backend;
use idemstore::steps::{RedisStepStore, RunError, StepError, StepKey, StepStore, Steps};
use idemstore::{Fingerprint, ManualClock, Outcome};
use kid::{count, Kid};
use redis_server::RedisServer;

/// A store under test.
pub trait Subject: Clone + Send + Sync + 'static {
    type Store: Backend<StepKey<String>, Vec<u8>, Ticket: Sync>;
    /// The lease the store was built with.
    const LEASE: Duration;
    /// A handle on the run of `key` (from the next store handle, if more).
    fn steps(&self, key: &str) -> Steps<'static, String, Self::Store>;
    fn steps_with(
        &self,
        key: &str,
        fingerprint: Fingerprint,
    ) -> Steps<'static, String, Self::Store>;
    /// Waits counted by every store handle.
    fn waits(&self) -> u64;
    /// Lets `d` pass on the store's clock.
    fn pass(&self, d: Duration) -> impl Future<Output = ()> + Send;
}

// ---- the in-process store ----

#[derive(Clone)]
struct Local(StepStore<String>, ManualClock);

impl Subject for Local {
    type Store = StepStore<String>;
    const LEASE: Duration = Duration::from_secs(10);
    fn steps(&self, key: &str) -> Steps<'static, String, Self::Store> {
        self.0.steps(key.to_string())
    }
    fn steps_with(&self, key: &str, fp: Fingerprint) -> Steps<'static, String, Self::Store> {
        self.0.steps_with(key.to_string(), fp)
    }
    fn waits(&self) -> u64 {
        self.0.stats().waits
    }
    async fn pass(&self, d: Duration) {
        self.1.advance(d);
    }
}

fn local() -> Option<Local> {
    let clock = ManualClock::new();
    let store = StepStore::builder()
        .ttl(Duration::from_secs(100))
        .lease(Local::LEASE)
        .clock(clock.clone())
        .background_sweeper(false)
        .build()
        .expect("config");
    Some(Local(store, clock))
}

// ---- the Redis store ----

#[derive(Clone)]
struct Shared {
    handles: Arc<Vec<RedisStepStore<String>>>,
    next: Arc<AtomicUsize>,
    _server: Arc<RedisServer>,
}

impl Shared {
    fn handle(&self) -> &RedisStepStore<String> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        &self.handles[n % self.handles.len()]
    }
}

const REDIS_LEASE: Duration = Duration::from_millis(400);

fn redis_store(server: &RedisServer) -> RedisStepStore<String> {
    RedisStepStore::builder(server.client())
        .prefix("steps")
        .ttl(Duration::from_secs(10))
        .lease(REDIS_LEASE)
        .build()
        .expect("build")
}

impl Subject for Shared {
    type Store = RedisStepStore<String>;
    const LEASE: Duration = REDIS_LEASE;
    fn steps(&self, key: &str) -> Steps<'static, String, Self::Store> {
        self.handle().steps(key.to_string())
    }
    fn steps_with(&self, key: &str, fp: Fingerprint) -> Steps<'static, String, Self::Store> {
        self.handle().steps_with(key.to_string(), fp)
    }
    fn waits(&self) -> u64 {
        self.handles.iter().map(|h| h.stats().waits).sum()
    }
    async fn pass(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}

/// `handles` store handles (each with its own connections and in-process
/// front) on one fresh server.
fn shared(handles: usize) -> Option<Shared> {
    let server = RedisServer::start()?;
    let handles = (0..handles).map(|_| redis_store(&server)).collect();
    Some(Shared {
        handles: Arc::new(handles),
        next: Arc::new(AtomicUsize::new(0)),
        _server: Arc::new(server),
    })
}

// ---- the run under test ----

/// What the operations and compensations ran, in order.
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

/// An operation that notes `name` and fails if told.
async fn op<T>(log: Log, name: &str, fail: bool, value: T) -> Result<T, Error> {
    log.note(name);
    if fail {
        Err(Error::other(format!("{name} failed")))
    } else {
        Ok(value)
    }
}

/// reserve (with undo), charge (with undo), ship, finish; `fail` names the
/// step that fails, `undo_fails` the compensation.
async fn order<B: Backend<StepKey<String>, Vec<u8>, Ticket: Sync>>(
    steps: &mut Steps<'static, String, B>,
    log: &Log,
    fail: &'static str,
) -> Result<String, StepError<Error>> {
    let undo = |name: &'static str, log: &Log| {
        let log = log.clone();
        move |value: String| {
            let log = log.clone();
            async move {
                log.note(&format!("undo {name} {value}"));
                if log.0.lock().unwrap().contains(&format!("fail undo {name}")) {
                    log.0
                        .lock()
                        .unwrap()
                        .retain(|l| l != &format!("fail undo {name}"));
                    return Err(Error::other("undo failed"));
                }
                Ok::<_, Error>(())
            }
        }
    };
    let l = log.clone();
    let hold: String = steps
        .run_with_undo_async(
            "reserve",
            || op(l, "reserve", fail == "reserve", "7".to_string()),
            undo("reserve", log),
        )
        .await?;
    let l = log.clone();
    let pay: String = steps
        .run_with_undo_async(
            "charge",
            || op(l, "charge", fail == "charge", format!("ch-{hold}")),
            undo("charge", log),
        )
        .await?;
    let l = log.clone();
    let ship: String = steps
        .run_async("ship", || {
            op(l, "ship", fail == "ship", "label".to_string())
        })
        .await?;
    Ok(steps
        .finish_async(format!("{pay}+{ship}"))
        .await?
        .into_inner())
}

/// The rest of [`order`], on a handle that ran its reserve.
async fn after_reserve<B: Backend<StepKey<String>, Vec<u8>, Ticket: Sync>>(
    steps: &mut Steps<'static, String, B>,
    log: &Log,
) -> String {
    let l = log.clone();
    let pay: String = steps
        .run_async("charge", || op(l, "charge", false, "ch-7".to_string()))
        .await
        .unwrap();
    let l = log.clone();
    let ship: String = steps
        .run_async("ship", || op(l, "ship", false, "label".to_string()))
        .await
        .unwrap();
    let receipt = steps.finish_async(format!("{pay}+{ship}")).await.unwrap();
    receipt.into_inner()
}

/// Waits (real time, ten seconds at most) until `condition` holds.
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

// ---- the suite ----

/// A retry replays the finished steps and runs the first unfinished one; a
/// finished run replays whole.
async fn a_retry_resumes_at_the_first_unfinished_step<S: Subject>(s: S) {
    let log = Log::default();
    let failed = order(&mut s.steps("o"), &log, "charge").await;
    assert!(matches!(failed, Err(StepError::Failed(_))));
    let mut retry = s.steps("o");
    assert_eq!(order(&mut retry, &log, "").await.unwrap(), "ch-7+label");
    assert_eq!(log.take(), ["reserve", "charge", "charge", "ship"]);
    assert_eq!(
        retry.steps().collect::<Vec<_>>(),
        ["reserve", "charge", "ship"]
    );
    let mut replay = s.steps("o");
    assert_eq!(order(&mut replay, &log, "").await.unwrap(), "ch-7+label");
    let again = replay.finish_async(String::new()).await.unwrap();
    assert_eq!(again, Outcome::Replayed("ch-7+label".to_string()));
    assert!(log.take().is_empty());
}

/// A failed step releases that step only: the same handle retries it in
/// place, and the step before it does not run again.
async fn a_failure_releases_the_step_only<S: Subject>(s: S) {
    let log = Log::default();
    let mut steps = s.steps("o");
    let l = log.clone();
    let hold: u64 = steps
        .run_async("reserve", || op(l, "reserve", false, 7))
        .await
        .unwrap();
    for fail in [true, false] {
        let l = log.clone();
        let paid = steps
            .run_async("charge", || op(l, "charge", fail, hold * 2))
            .await;
        assert_eq!(paid.is_ok(), !fail);
    }
    assert_eq!(steps.finish_async(hold).await.unwrap().into_inner(), 7);
    assert_eq!(log.take(), ["reserve", "charge", "charge"]);
}

/// Steps are checked by name and order, and a run key by its payload.
async fn a_retry_asking_for_other_steps_is_refused<S: Subject>(s: S) {
    let log = Log::default();
    assert!(order(&mut s.steps("o"), &log, "ship").await.is_err());
    let mut swapped = s.steps("o");
    let l = log.clone();
    let refused = swapped
        .run_async("charge", || op(l, "charge", false, 1_u8))
        .await;
    match refused {
        Err(StepError::Run(RunError::StepMismatch {
            index: 0,
            asked,
            recorded,
        })) => {
            assert_eq!(asked, "charge");
            assert_eq!(recorded.as_deref(), Some("reserve"));
        }
        other => panic!("expected a step mismatch, got {other:?}"),
    }
    drop(swapped);
    let mut unvisited = s.steps("o");
    let l = log.clone();
    let _: String = unvisited
        .run_async("reserve", || op(l, "reserve", false, String::new()))
        .await
        .unwrap();
    assert!(matches!(
        unvisited.finish_async(String::new()).await,
        Err(RunError::Unvisited { index: 1, .. })
    ));
    drop(unvisited);

    let apples = Fingerprint::of_bytes(b"2 apples");
    let mut first = s.steps_with("p", apples);
    let l = log.clone();
    let _: u8 = first
        .run_async("pick", || op(l, "pick", false, 2))
        .await
        .unwrap();
    drop(first);
    let mut other = s.steps_with("p", Fingerprint::of_bytes(b"9 pears"));
    let l = log.clone();
    let refused = other.run_async("pick", || op(l, "pick", false, 9_u8)).await;
    assert!(matches!(
        refused,
        Err(StepError::Run(RunError::PayloadMismatch))
    ));
    assert_eq!(log.take(), ["reserve", "charge", "ship", "pick"]);
}

/// Given up, each finished step's compensation runs once, in reverse order;
/// one that failed runs again at the next `give_up`, one that finished
/// does not; no step runs after.
async fn compensations_run_once_in_reverse<S: Subject>(s: S) {
    let log = Log::default();
    let mut steps = s.steps("o");
    assert!(order(&mut steps, &log, "ship").await.is_err());
    log.note("fail undo reserve");
    assert!(matches!(
        steps.give_up_async().await,
        Err(RunError::Undo { index: 0, .. })
    ));
    drop(steps);
    let mut resumed = s.steps("o");
    assert!(matches!(
        order(&mut resumed, &log, "").await,
        Err(StepError::Run(RunError::GivenUp))
    ));
    resumed.give_up_async().await.unwrap();
    let mut later = s.steps("o");
    later.give_up_async().await.unwrap();
    assert!(matches!(
        order(&mut later, &log, "").await,
        Err(StepError::Run(RunError::GivenUp))
    ));
    assert_eq!(
        log.take(),
        [
            "reserve",
            "charge",
            "ship",
            "undo charge ch-7",
            "undo reserve 7",
            "undo reserve 7"
        ]
    );
}

/// A duplicate of a run in flight waits for it: it replays the run's end,
/// or, when the owner is dropped mid-run, takes the run on and resumes it.
async fn a_duplicate_waits_then_replays_or_resumes<S: Subject>(s: S) {
    let log = Log::default();
    // Replays: the owner finishes while the duplicate waits.
    let mut owner = s.steps("o");
    let l = log.clone();
    let _: String = owner
        .run_async("reserve", || op(l, "reserve", false, "7".to_string()))
        .await
        .unwrap();
    assert!(matches!(
        s.steps("o").no_wait().finish_async(String::new()).await,
        Err(RunError::InFlight)
    ));
    let waits = s.waits();
    let mut duplicate = s.steps("o");
    let (waited, ()) = tokio::join!(order(&mut duplicate, &log, ""), async {
        until("the duplicate waits", || s.waits() > waits).await;
        let mut owner = owner;
        assert_eq!(after_reserve(&mut owner, &log).await, "ch-7+label");
    });
    assert_eq!(waited.unwrap(), "ch-7+label");
    assert_eq!(log.take(), ["reserve", "charge", "ship"]);

    // Resumes: the owner is dropped after its first step.
    let mut owner = s.steps("r");
    let l = log.clone();
    let _: String = owner
        .run_async("reserve", || op(l, "reserve", false, "7".to_string()))
        .await
        .unwrap();
    let waits = s.waits();
    let mut duplicate = s.steps("r");
    let (resumed, ()) = tokio::join!(order(&mut duplicate, &log, ""), async {
        until("the duplicate waits", || s.waits() > waits).await;
        drop(owner);
    });
    assert_eq!(resumed.unwrap(), "ch-7+label");
    assert_eq!(log.take(), ["reserve", "charge", "ship"]);
}

/// An owner stalled past its lease is taken over, and fenced off after.
async fn a_stale_owner_is_fenced<S: Subject>(s: S) {
    let log = Log::default();
    let mut stale = s.steps("o");
    let l = log.clone();
    let _: String = stale
        .run_async("reserve", || op(l, "reserve", false, "7".to_string()))
        .await
        .unwrap();
    s.pass(S::LEASE + S::LEASE / 2).await;
    let mut fresh = s.steps("o");
    assert_eq!(order(&mut fresh, &log, "").await.unwrap(), "ch-7+label");
    let l = log.clone();
    let late = stale
        .run_async("charge", || op(l, "charge", false, String::new()))
        .await;
    assert!(matches!(late, Err(StepError::Run(RunError::Superseded))));
    assert!(matches!(
        stale.finish_async(String::new()).await,
        Err(RunError::Superseded)
    ));
    assert_eq!(log.take(), ["reserve", "charge", "ship"]);
}

suite!(
    on_redis_two_handles;
    a_retry_resumes_at_the_first_unfinished_step,
    a_failure_releases_the_step_only,
    a_retry_asking_for_other_steps_is_refused,
    compensations_run_once_in_reverse,
    a_duplicate_waits_then_replays_or_resumes,
    a_stale_owner_is_fenced,
);

// ---- a process killed mid-run, resumed by another ----

/// Set in a child: `role` (where it blocks) and the server's URL.
const CHILD: &str = "IDEMSTORE_STEPS_REDIS_CHILD";
const SAYS: &str = "steps-redis-child: ";

/// This binary's `steps_redis_child` test as `role` on `server`.
fn kid(role: &str, server: &RedisServer) -> Kid {
    Kid::start(
        "steps_redis_child",
        (CHILD, format!("{role} {}", server.url())),
        SAYS,
    )
}

fn say(what: &str) {
    kid::say(SAYS, what);
}

fn block() -> ! {
    kid::block(SAYS)
}

/// The child's side: the order on Redis, saying each step's start and end,
/// blocking where `role` says (`after-charge`, `in-ship`, `none`).
async fn serve_child(role: &'static str, url: &str) {
    let client = redis::Client::open(url).expect("client");
    let store: RedisStepStore<String> = RedisStepStore::builder(client)
        .prefix("steps")
        .ttl(Duration::from_secs(10))
        .lease(REDIS_LEASE)
        .build()
        .expect("build");
    let step = move |name: &'static str, value: String| {
        move || async move {
            say(&format!("start {name}"));
            if role == format!("in-{name}") {
                block();
            }
            Ok::<_, Error>(value)
        }
    };
    // On a task of its own: the run's futures are `Send` over Redis.
    let run = tokio::spawn(async move {
        let mut steps = store.steps("order-1".to_string());
        let hold: String = steps
            .run_async("reserve", step("reserve", "7".into()))
            .await?;
        say("done reserve");
        let pay: String = steps
            .run_async("charge", step("charge", format!("ch-{hold}")))
            .await?;
        say("done charge");
        if role == "after-charge" {
            block();
        }
        let ship: String = steps
            .run_async("ship", step("ship", "label".into()))
            .await?;
        say("done ship");
        let receipt = steps.finish_async(format!("{pay}+{ship}")).await?;
        Ok::<_, StepError<Error>>(receipt.into_inner())
    });
    say(&format!(
        "finished {}",
        run.await.unwrap().expect("the run")
    ));
}

/// The child's entry: a no-op unless started as a child.
#[test]
fn steps_redis_child() {
    if let Ok(value) = std::env::var(CHILD) {
        let (role, url) = value.split_once(' ').expect("role url");
        let role: &'static str = Box::leak(role.to_string().into_boxed_str());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(serve_child(role, url));
    }
}

async fn ran_again() -> Result<String, Error> {
    panic!("a finished step ran again")
}

/// Killed between steps, then during a step, each time with its claims
/// held (a SIGKILL releases nothing): the next process waits out the
/// lease, takes the run over and resumes it; a finished step never runs
/// again, the interrupted one (no record) does.
#[test]
fn a_run_on_redis_killed_between_and_during_steps_resumes_in_another_process() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut said = kid("after-charge", &server).kill_when_blocked();
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
    let second = kid("in-ship", &server).kill_when_blocked();
    assert_eq!(
        second,
        ["done reserve", "done charge", "start ship", "blocked"]
    );
    said.extend(second);
    let third = kid("none", &server).finish();
    assert_eq!(
        third,
        [
            "done reserve",
            "done charge",
            "start ship",
            "done ship",
            "finished ch-7+label"
        ]
    );
    said.extend(third);
    assert_eq!(count(&said, "start reserve"), 1);
    assert_eq!(count(&said, "start charge"), 1);
    assert_eq!(count(&said, "start ship"), 2);

    // And this process, on a store handle of its own, replays it.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let store = redis_store(&server);
        let mut replay = store.steps("order-1".to_string());
        let hold: String = replay.run_async("reserve", ran_again).await.unwrap();
        assert_eq!(hold, "7");
        assert_eq!(
            replay.finish_async(String::new()).await.unwrap(),
            Outcome::Replayed("ch-7+label".to_string())
        );
    });
}
