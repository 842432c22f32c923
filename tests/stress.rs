//! Stress with injected faults, on the real clock, and a linearizability
//! check of recorded concurrent histories.
//!
//! `faults_under_load` runs for a few seconds; set `IDEMSTORE_SOAK_SECS` to
//! run it longer. Many threads hammer a few keys of a store with short TTLs
//! and leases and a 1 ms background sweeper. Owners run "operations" that
//! spin for a random time (sometimes past their lease), renew, complete,
//! complete with a short TTL, return errors, panic, or are abandoned or
//! dropped; duplicates wait with and without deadlines, or poll a future
//! once and drop it; keys are read and removed. It checks:
//!
//! * at most one execution per key per lease (each execution registers its
//!   claim's time window while it runs; two running at once must have
//!   claims a lease apart, unless a `remove` may have intervened);
//! * every waiter gets a value an owner stored, or a clear error, and a
//!   timed wait never ends early or much late;
//! * no thread hangs: a watchdog aborts the process after a bound;
//! * once everything expired and was swept, `len() == 0`, and after the
//!   store is dropped no stored value is alive;
//! * run again at a byte bound of three entries' weight
//!   (`faults_under_load_at_a_byte_bound`), the store, sampled all along,
//!   never weighs as much as the bound plus one value per thread (each
//!   thread holds at most one claim, and only claims admitted below the
//!   bound can take the store over it), claims are refused, and it weighs
//!   nothing once empty.

mod model;

use std::future::{Future, IntoFuture};
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicIsize, AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex, Once};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use idemstore::{Claim, ClaimError, Clock, CompleteError, ExecuteError, Outcome, Store, WaitError};
use model::linear::{linearizable, stamp, Call, Event};

// ---------------------------------------------------------------------------
// Shared pieces

/// The store's clock, shared with the test so both read one time line.
#[derive(Clone)]
struct TestClock(Instant);

impl Clock for TestClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

impl TestClock {
    fn nanos(&self) -> u64 {
        u64::try_from(self.now().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// xorshift64*: a small, seedable generator (no dependency needed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `IDEMSTORE_STRESS_SEED` replays a run's choices (the interleaving is
/// still the scheduler's); otherwise the time picks one. Miri, isolated from
/// the host's clock, always uses one fixed seed.
fn seed() -> u64 {
    if cfg!(miri) {
        return 0x1de5_7012;
    }
    if let Some(seed) = std::env::var("IDEMSTORE_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return seed;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    nanos | 1
}

fn poll_once<F: Future>(future: F) -> Poll<F::Output> {
    let mut future = std::pin::pin!(future);
    future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
}

/// Injected panics say this, so the panic hook keeps them quiet.
const INJECTED: &str = "injected fault";

fn quiet_injected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&INJECTED) {
                default(info);
            }
        }));
    });
}

/// Aborts the process with `message` unless dropped within `bound`.
struct Watchdog(Option<mpsc::Sender<()>>);

impl Watchdog {
    fn start(bound: Duration, message: &'static str) -> Self {
        let (done, wait) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(bound) {
                // Straight to stderr: the test harness's capture of
                // `eprintln!` would swallow the message when we abort.
                let _ = writeln!(
                    std::io::stderr(),
                    "watchdog: {message} (nothing finished within {bound:?})"
                );
                std::process::abort();
            }
        });
        Watchdog(Some(done))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Dropping the sender disconnects the channel: the watchdog exits.
        self.0.take();
    }
}

/// Waits (yielding) until `done()` holds; false if `bound` passed first.
fn eventually(bound: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > bound {
            return false;
        }
        std::thread::yield_now();
    }
    true
}

// ---------------------------------------------------------------------------
// Fault stress

const PENDING: u8 = 0;
const STORED: u8 = 1;
const REJECTED: u8 = 2;
/// Made by an `execute` operation: stored or not, `execute` does not say.
const EXECUTED: u8 = 3;

/// A stored value: names its key, shares with its clones whether the
/// owner's `complete` was accepted, and counts live instances.
#[derive(Debug)]
struct Val {
    key: u8,
    status: Arc<AtomicU8>,
    live: Arc<AtomicIsize>,
}

impl Val {
    fn new(key: u8, status: u8, live: &Arc<AtomicIsize>) -> Self {
        live.fetch_add(1, Ordering::Relaxed);
        Val {
            key,
            status: Arc::new(AtomicU8::new(status)),
            live: live.clone(),
        }
    }
}

impl Clone for Val {
    fn clone(&self) -> Self {
        self.live.fetch_add(1, Ordering::Relaxed);
        Val {
            key: self.key,
            status: self.status.clone(),
            live: self.live.clone(),
        }
    }
}

impl Drop for Val {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Config {
    threads: usize,
    keys: u8,
    lease: Duration,
    ttl: Duration,
    /// Per-entry TTL some owners complete with.
    short_ttl: Duration,
    run_for: Duration,
    /// Under miri: operations per thread instead of a duration.
    ops_per_thread: Option<usize>,
}

fn config() -> Config {
    if cfg!(miri) {
        return Config {
            threads: 3,
            keys: 2,
            lease: Duration::from_millis(2),
            ttl: Duration::from_millis(5),
            short_ttl: Duration::from_millis(1),
            run_for: Duration::from_secs(3600),
            ops_per_thread: Some(12),
        };
    }
    let secs = std::env::var("IDEMSTORE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    Config {
        threads: 8,
        keys: 6,
        lease: Duration::from_millis(3),
        ttl: Duration::from_millis(10),
        short_ttl: Duration::from_millis(1),
        run_for: Duration::from_secs(secs),
        ops_per_thread: None,
    }
}

/// One running execution of a key's operation.
#[derive(Debug, Clone, Copy)]
struct Execution {
    id: u64,
    /// Latest time the claim can have happened.
    claimed_by: u64,
    /// Earliest time its lease can end.
    deadline_from: u64,
    /// Removes of the key finished before the claim started.
    removes_before: u64,
}

#[derive(Default)]
struct KeyLog {
    running: Mutex<Vec<Execution>>,
    removes_started: AtomicU64,
    removes_finished: AtomicU64,
}

impl KeyLog {
    /// Two executions running at once must have claims a lease apart,
    /// whichever came first, unless a remove may have ended the first.
    fn check(&self, running: &[Execution], changed: &Execution) {
        let removes = self.removes_started.load(Ordering::SeqCst);
        for other in running.iter().filter(|o| o.id != changed.id) {
            let excused = removes > other.removes_before.min(changed.removes_before);
            let overlap = changed.claimed_by < other.deadline_from
                && other.claimed_by < changed.deadline_from;
            assert!(
                excused || !overlap,
                "two executions of one key inside one lease: {other:?} and {changed:?}"
            );
        }
    }

    fn start(&self, execution: Execution) {
        let mut running = self.running.lock().unwrap();
        self.check(&running, &execution);
        running.push(execution);
    }

    fn renewed(&self, id: u64, deadline_from: u64) {
        let mut running = self.running.lock().unwrap();
        if let Some(i) = running.iter().position(|e| e.id == id) {
            running[i].deadline_from = deadline_from;
            let execution = running[i];
            self.check(&running, &execution);
        }
    }

    fn finish(&self, id: u64) {
        self.running.lock().unwrap().retain(|e| e.id != id);
    }
}

/// What each stored value weighs in the byte-bound run.
const WEIGHT: usize = 10;

struct Harness {
    store: Store<u8, Val>,
    /// Whether the store has a byte bound, so claims may be refused.
    bounded: bool,
    clock: TestClock,
    config: Config,
    keys: Vec<KeyLog>,
    live: Arc<AtomicIsize>,
    next_id: AtomicU64,
    /// Counts, to show the run exercised every path.
    executions: AtomicU64,
    waits_answered: AtomicU64,
}

impl Harness {
    fn log(&self, key: u8) -> &KeyLog {
        &self.keys[usize::from(key)]
    }

    fn lease(&self) -> u64 {
        self.config.lease.as_nanos() as u64
    }

    /// Spins (yielding) for up to 1.5 leases: some operations outlive
    /// their lease, so takeovers happen.
    fn work(&self, rng: &mut Rng) {
        let until = self.clock.nanos() + rng.below(self.lease() * 3 / 2 + 1);
        while self.clock.nanos() < until {
            std::thread::yield_now();
        }
    }

    /// A value read for `key` must be that key's, and one an owner stored.
    fn check_value(&self, key: u8, value: &Val) {
        assert_eq!(value.key, key, "a value of another key");
        let status = &value.status;
        // The owner marks the value right after its `complete` returns.
        let settled = eventually(Duration::from_secs(30), || {
            status.load(Ordering::SeqCst) != PENDING
        });
        assert!(settled, "an owner never finished its complete");
        let status = status.load(Ordering::SeqCst);
        assert_ne!(
            status, REJECTED,
            "a reader got a value whose complete was refused"
        );
    }

    fn check_wait(
        &self,
        key: u8,
        started: Instant,
        timeout: Option<Duration>,
        result: Result<Option<Val>, WaitError>,
    ) {
        let waited = started.elapsed();
        self.waits_answered.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(Some(value)) => self.check_value(key, &value),
            Ok(None) | Err(WaitError::Abandoned | WaitError::LeaseExpired) => {}
            Err(WaitError::Timeout) => {
                let timeout = timeout.expect("an untimed wait timed out");
                assert!(
                    waited >= timeout,
                    "timed out after {waited:?} of {timeout:?}"
                );
            }
            Err(e) => panic!("unexpected wait error: {e:?}"),
        }
        if let Some(timeout) = timeout {
            // Generous: the machine is loaded; a lost timeout would hang.
            assert!(
                waited < timeout + Duration::from_secs(10),
                "a {timeout:?} wait took {waited:?}"
            );
        }
    }

    fn begin(&self, key: u8, claimed_from: u64, claimed_by: u64, removes_before: u64) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.executions.fetch_add(1, Ordering::Relaxed);
        self.log(key).start(Execution {
            id,
            claimed_by,
            deadline_from: claimed_from + self.lease(),
            removes_before,
        });
        id
    }

    /// Claims `key`, and as owner runs a faulty operation; as a duplicate,
    /// waits in one of several ways.
    fn claim_and_run(&self, key: u8, rng: &mut Rng) {
        let log = self.log(key);
        let removes_before = log.removes_finished.load(Ordering::SeqCst);
        let from = self.clock.nanos();
        let claim = match self.store.claim(key) {
            Ok(claim) => claim,
            Err(ClaimError::Full) if self.bounded => return,
            Err(e) => panic!("claim: {e:?}"),
        };
        let by = self.clock.nanos();
        match claim {
            Claim::Owner(ticket) => {
                let id = self.begin(key, from, by, removes_before);
                self.work(rng);
                if rng.below(4) == 0 {
                    let from = self.clock.nanos();
                    if ticket.renew().is_ok() {
                        log.renewed(id, from + self.lease());
                    }
                    self.work(rng);
                }
                log.finish(id);
                match rng.below(10) {
                    0..=5 => {
                        let value = Val::new(key, PENDING, &self.live);
                        let status = value.status.clone();
                        let result = if rng.below(6) == 0 {
                            ticket.complete_with_ttl(value, self.config.short_ttl)
                        } else {
                            ticket.complete(value)
                        };
                        let mark = match result {
                            Ok(()) => STORED,
                            Err(CompleteError::Superseded(_)) => REJECTED,
                            Err(other) => panic!("unexpected completion error: {other}"),
                        };
                        status.store(mark, Ordering::SeqCst);
                    }
                    6 => ticket.abandon(),
                    7 => drop(ticket),
                    _ => {
                        // The operation panics; unwinding drops the ticket.
                        let unwound = catch_unwind(AssertUnwindSafe(move || {
                            let _owned = ticket;
                            std::panic::panic_any(INJECTED);
                        }));
                        assert!(unwound.is_err());
                    }
                }
            }
            Claim::Completed(value) => self.check_value(key, &value),
            Claim::InFlight(pending) => {
                let started = Instant::now();
                match rng.below(4) {
                    0 => {
                        // This thread holds no claim, so an untimed wait
                        // cannot close a cycle: every owner finishes.
                        let result = pending.wait();
                        self.check_wait(key, started, None, result.map(Some));
                    }
                    1 => {
                        let timeout = Duration::from_micros(rng.below(3000));
                        let result = pending.wait_timeout(timeout);
                        self.check_wait(key, started, Some(timeout), result.map(Some));
                    }
                    2 => {
                        // An async waiter cancelled after one poll.
                        if let Poll::Ready(result) = poll_once(pending.into_future()) {
                            self.check_wait(key, started, None, result.map(Some));
                        }
                    }
                    _ => drop(pending),
                }
            }
        }
    }

    /// `execute` with an operation that succeeds, fails or panics.
    fn execute(&self, key: u8, rng: &mut Rng) {
        let log = self.log(key);
        let removes_before = log.removes_finished.load(Ordering::SeqCst);
        let from = self.clock.nanos();
        let fault = rng.below(5);
        let mut work_rng = Rng(rng.next() | 1);
        let operation = || {
            let id = self.begin(key, from, self.clock.nanos(), removes_before);
            self.work(&mut work_rng);
            log.finish(id);
            match fault {
                0 => Err("declined"),
                1 => std::panic::panic_any(INJECTED),
                _ => Ok(Val::new(key, EXECUTED, &self.live)),
            }
        };
        match catch_unwind(AssertUnwindSafe(|| self.store.execute(key, operation))) {
            Err(_) => assert_eq!(fault, 1, "only the injected panic unwinds"),
            Ok(Ok(Outcome::Executed(value))) => assert_eq!(value.key, key),
            Ok(Ok(Outcome::Replayed(value))) => self.check_value(key, &value),
            Ok(Err(ExecuteError::Failed(e))) => assert_eq!(e, "declined"),
            Ok(Err(ExecuteError::Claim(ClaimError::Full))) if self.bounded => {}
            Ok(Err(e)) => panic!("execute: {e:?}"),
        }
    }

    /// `execute_async` whose operation is cancelled mid-way: the future is
    /// polled once (claiming the key and starting the operation) and dropped.
    fn cancel_execute_async(&self, key: u8) {
        let log = self.log(key);
        let removes_before = log.removes_finished.load(Ordering::SeqCst);
        let from = self.clock.nanos();
        let future = self.store.execute_async(key, || {
            let id = self.begin(key, from, self.clock.nanos(), removes_before);
            // The execution ends here as far as the checks go: the future
            // is dropped at its first pause, which abandons the claim.
            log.finish(id);
            YieldOnce(false)
        });
        if let Poll::Ready(result) = poll_once(future) {
            match result {
                Ok(Outcome::Replayed(value)) => self.check_value(key, &value),
                Err(ExecuteError::Claim(ClaimError::Full)) if self.bounded => {}
                other => panic!("a cancelled execute_async finished: {other:?}"),
            }
        }
    }

    fn remove(&self, key: u8) {
        let log = self.log(key);
        log.removes_started.fetch_add(1, Ordering::SeqCst);
        self.store.remove(&key);
        log.removes_finished.fetch_add(1, Ordering::SeqCst);
    }

    fn worker(&self, index: u64, seed: u64, stop_at: Instant) {
        let mut rng = Rng(seed ^ (index + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut done = 0;
        loop {
            match self.config.ops_per_thread {
                Some(n) if done == n => return,
                None if Instant::now() >= stop_at => return,
                _ => done += 1,
            }
            let key = rng.below(u64::from(self.config.keys)) as u8;
            match rng.below(100) {
                0..=39 => self.claim_and_run(key, &mut rng),
                40..=64 => self.execute(key, &mut rng),
                65..=69 => self.cancel_execute_async(key),
                70..=81 => {
                    if let Some(value) = self.store.get(&key) {
                        self.check_value(key, &value);
                    }
                }
                82..=91 => {
                    let timeout = Duration::from_micros(rng.below(2000));
                    let started = Instant::now();
                    let result = self.store.get_or_wait(&key, timeout);
                    self.check_wait(key, started, Some(timeout), result);
                }
                92..=96 => self.remove(key),
                _ => {
                    self.store.sweep();
                }
            }
        }
    }
}

/// A future that is pending once and never woken: an operation the caller
/// gives up on.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = Result<Val, &'static str>;

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        if self.0 {
            Poll::Ready(Err("resumed"))
        } else {
            self.0 = true;
            Poll::Pending
        }
    }
}

#[test]
fn faults_under_load() {
    run_faults("faults_under_load", None);
}

#[test]
fn faults_under_load_at_a_byte_bound() {
    run_faults("faults_under_load_at_a_byte_bound", Some(3 * WEIGHT));
}

/// The run `faults_under_load` describes, at `max_bytes` if given (every
/// value weighing [`WEIGHT`]).
fn run_faults(name: &str, max_bytes: Option<usize>) {
    quiet_injected_panics();
    let config = config();
    let seed = seed();
    eprintln!("{name}: seed {seed}, {:?}", config.run_for);
    let watchdog = Watchdog::start(
        config.run_for + Duration::from_secs(if cfg!(miri) { 3600 } else { 120 }),
        "faults_under_load hangs",
    );
    let clock = TestClock(Instant::now());
    let live = Arc::new(AtomicIsize::new(0));
    let mut builder = Store::builder()
        .lease(config.lease)
        .ttl(config.ttl)
        .shards(4)
        .sweep_interval(Duration::from_millis(1))
        .clock(clock.clone());
    if let Some(max) = max_bytes {
        builder = builder.max_bytes(max).weigher(|_, _| WEIGHT);
    }
    let store = builder.build().expect("valid settings");
    let harness = Harness {
        store,
        bounded: max_bytes.is_some(),
        clock,
        keys: (0..config.keys).map(|_| KeyLog::default()).collect(),
        config,
        live: live.clone(),
        next_id: AtomicU64::new(0),
        executions: AtomicU64::new(0),
        waits_answered: AtomicU64::new(0),
    };
    let stop_at = Instant::now() + harness.config.run_for;
    let (mut samples, mut heaviest) = (0u64, 0);
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..harness.config.threads)
            .map(|index| {
                let harness = &harness;
                scope.spawn(move || harness.worker(index as u64, seed, stop_at))
            })
            .collect();
        // Samples the weight while the workers run: below the bound plus
        // one value per thread at every moment.
        let sampler = scope.spawn(|| {
            let Some(max) = max_bytes else { return };
            let limit = max + harness.config.threads * WEIGHT;
            while !done.load(Ordering::Relaxed) {
                let bytes = harness.store.stats().bytes;
                assert!(bytes < limit, "{bytes} bytes held, bound {max}");
                (samples, heaviest) = (samples + 1, heaviest.max(bytes));
                std::thread::yield_now();
            }
        });
        for worker in workers {
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
        done.store(true, Ordering::Relaxed);
        if let Err(panic) = sampler.join() {
            std::panic::resume_unwind(panic);
        }
    });
    let stats = harness.store.stats();
    eprintln!(
        "{name}: {} executions, {} waits answered, {samples} samples of the weight \
         (heaviest {heaviest}), {stats:?}",
        harness.executions.load(Ordering::Relaxed),
        harness.waits_answered.load(Ordering::Relaxed),
    );
    assert!(harness.executions.load(Ordering::Relaxed) > 0);
    if max_bytes.is_some() && !cfg!(miri) {
        assert!(stats.refusals > 0, "the bound was never reached");
    }

    // Every claim is released. Once the longest retention has passed,
    // nothing is live, and one sweep must leave the store empty.
    let config = &harness.config;
    let quiet = harness.clock.nanos()
        + config
            .ttl
            .max(config.short_ttl)
            .max(config.lease)
            .as_nanos() as u64;
    while harness.clock.nanos() <= quiet {
        std::thread::yield_now();
    }
    harness.store.sweep();
    assert_eq!(
        harness.store.len(),
        0,
        "entries left after everything expired and was swept"
    );
    assert_eq!(harness.store.stats().in_flight, 0);
    assert_eq!(
        harness.store.stats().bytes,
        0,
        "bytes left in an empty store"
    );

    // Dropping the store drops every value, once the background sweeper,
    // which may be mid-pass with a strong reference, lets go.
    drop(harness);
    let freed = eventually(Duration::from_secs(30), || live.load(Ordering::SeqCst) == 0);
    assert!(
        freed,
        "{} values alive after the store dropped",
        live.load(Ordering::SeqCst)
    );
    drop(watchdog);
}

// ---------------------------------------------------------------------------
// Linearizability

/// One thread's view of a linearizability episode.
struct Recorder {
    events: Vec<(u32, Event)>,
    ticket: Option<idemstore::Ticket<u32, u32>>,
}

impl Recorder {
    fn record(&mut self, key: u32, invoke: u64, call: Call) {
        self.events.push((
            key,
            Event {
                invoke,
                ret: stamp(),
                call,
            },
        ));
    }

    fn step(&mut self, store: &Store<u32, u32>, base: u32, rng: &mut Rng, value: &AtomicU64) {
        let key = base + rng.below(3) as u32;
        match (rng.below(10), self.ticket.take()) {
            (0..=4, Some(ticket)) => {
                let (key, token) = (*ticket.key(), ticket.token());
                let v = value.fetch_add(1, Ordering::Relaxed) as u32;
                let invoke = stamp();
                let ok = ticket.complete(v).is_ok();
                self.record(
                    key,
                    invoke,
                    Call::Complete {
                        token,
                        value: v,
                        ok,
                    },
                );
            }
            (5, Some(ticket)) => {
                let (key, token) = (*ticket.key(), ticket.token());
                let invoke = stamp();
                drop(ticket);
                self.record(key, invoke, Call::Abandon(token));
            }
            (choice, ticket) => {
                self.ticket = ticket;
                let invoke = stamp();
                match choice {
                    0..=5 if self.ticket.is_none() => {
                        let call = match store.claim(key).expect("unbounded") {
                            Claim::Owner(ticket) => {
                                let token = ticket.token();
                                self.ticket = Some(ticket);
                                Call::ClaimOwner(token)
                            }
                            Claim::Completed(v) => Call::ClaimCompleted(v),
                            Claim::InFlight(_) => Call::ClaimInFlight,
                        };
                        self.record(key, invoke, call);
                    }
                    9 => {
                        let live = store.remove(&key);
                        self.record(key, invoke, Call::Remove(live));
                    }
                    _ => {
                        let got = store.get(&key);
                        self.record(key, invoke, Call::Get(got));
                    }
                }
            }
        }
    }
}

/// Concurrent histories of claim, complete, abandon, get and remove on a few
/// keys, each checked against the sequential model. Fresh keys per episode
/// keep each history short (the search is exponential in the worst case);
/// old keys stay completed, so the table keeps growing under the readers.
#[test]
fn histories_are_linearizable() {
    let (episodes, threads, steps) = if cfg!(miri) { (2, 3, 6) } else { (150, 3, 30) };
    let _watchdog = Watchdog::start(Duration::from_secs(600), "histories_are_linearizable hangs");
    let store: Store<u32, u32> = Store::builder()
        .ttl(Duration::from_secs(3600))
        .lease(Duration::from_secs(3600))
        .shards(1)
        .build()
        .expect("valid settings");
    let value = AtomicU64::new(1);
    let seed = seed();
    eprintln!("histories_are_linearizable: seed {seed}");
    for episode in 0..episodes {
        let base = episode * 3;
        // Released together, so the threads' operations overlap.
        let start = Barrier::new(threads as usize);
        let recorders: Vec<Recorder> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (store, value, start) = (&store, &value, &start);
                    scope.spawn(move || {
                        start.wait();
                        let mut rng = Rng((seed ^ (episode * 31 + t + 1) as u64)
                            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                            | 1);
                        let mut recorder = Recorder {
                            events: Vec::new(),
                            ticket: None,
                        };
                        for _ in 0..steps {
                            recorder.step(store, base, &mut rng, value);
                        }
                        if let Some(ticket) = recorder.ticket.take() {
                            let (key, token) = (*ticket.key(), ticket.token());
                            let invoke = stamp();
                            drop(ticket);
                            recorder.record(key, invoke, Call::Abandon(token));
                        }
                        recorder
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for key in base..base + 3 {
            let history: Vec<Event> = recorders
                .iter()
                .flat_map(|r| &r.events)
                .filter(|(k, _)| *k == key)
                .map(|(_, e)| *e)
                .collect();
            assert!(
                linearizable(&history),
                "episode {episode}, key {key}: history not linearizable:\n{history:#?}"
            );
        }
    }
}

/// The checker itself: it must reject histories no sequential order explains
/// and accept those that need reordering of overlapping operations.
#[test]
fn checker_tells_linearizable_from_not() {
    let at = |invoke, ret, call| Event { invoke, ret, call };
    // Two owners, one after the other, with nothing released between.
    assert!(!linearizable(&[
        at(0, 1, Call::ClaimOwner(1)),
        at(2, 3, Call::ClaimOwner(2)),
    ]));
    // A read of a value before its completion was invoked.
    assert!(!linearizable(&[
        at(0, 1, Call::ClaimOwner(1)),
        at(2, 3, Call::Get(Some(7))),
        at(
            4,
            5,
            Call::Complete {
                token: 1,
                value: 7,
                ok: true
            }
        ),
    ]));
    // Tokens must grow.
    assert!(!linearizable(&[
        at(0, 1, Call::ClaimOwner(5)),
        at(2, 3, Call::Abandon(5)),
        at(4, 5, Call::ClaimOwner(4)),
    ]));
    // The same read overlapping the completion: fine.
    assert!(linearizable(&[
        at(0, 1, Call::ClaimOwner(1)),
        at(2, 5, Call::Get(Some(7))),
        at(
            3,
            4,
            Call::Complete {
                token: 1,
                value: 7,
                ok: true
            }
        ),
    ]));
    // A stale owner refused after a remove and a new claim, all overlapping.
    assert!(linearizable(&[
        at(0, 1, Call::ClaimOwner(1)),
        at(
            2,
            9,
            Call::Complete {
                token: 1,
                value: 3,
                ok: false
            }
        ),
        at(3, 4, Call::Remove(true)),
        at(5, 6, Call::ClaimOwner(2)),
        at(7, 8, Call::ClaimInFlight),
    ]));
}
