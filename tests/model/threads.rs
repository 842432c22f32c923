//! A script run by 2-3 threads against one store, checking invariants rather
//! than exact answers (the interleaving is the scheduler's).
//!
//! The script is split into rounds. In a round every thread runs its own
//! steps concurrently; between rounds the main thread advances the
//! `ManualClock`. So within a round the store's time is one known instant,
//! and every lease deadline is exact, which lets the checks be exact too:
//!
//! * **One execution per key per lease.** An owner is registered from the
//!   moment its claim returns until just before it completes, abandons or
//!   drops its ticket. For two registered owners of a key, the later claim
//!   (larger token: claims on one key are ordered by the shard lock) must
//!   come at or after the earlier owner's lease deadline, unless a `remove`
//!   of the key may have run in between.
//! * **A key's tokens strictly increase**: a claim's token exceeds every
//!   token a claim of the same key returned before this one started, and
//!   every token this thread saw for the key before. Tokens of different
//!   keys are never compared: no order between keys is promised.
//! * **Every waiter is answered within its deadline**: a timed wait returns
//!   no later than its timeout plus scheduling slack, never times out early,
//!   and a value it gets is one an owner of that key completed with.
//!
//! Shared by the `threads` fuzz target and `tests/fuzz_regressions.rs`.

use std::collections::HashSet;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use idemstore::{Claim, ManualClock, Pending, Store, Ticket, WaitError};

use super::{poll_once, Counted};

/// Keys the threads share: few, so they collide.
pub const KEYS: u8 = 4;
/// Bounds that keep one fuzz input fast.
const MAX_ROUNDS: usize = 12;
const MAX_STEPS: usize = 12;
/// How late a timed wait may return: scheduling noise on a loaded machine,
/// far below anything that would mean a missed timeout.
const WAIT_SLACK: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub struct Script {
    pub lease: u8,
    pub threads: u8,
    pub rounds: Vec<Round>,
}

#[derive(Debug, Clone)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub struct Round {
    /// Seconds the clock moves after the round.
    pub advance: u8,
    pub steps: [Vec<Step>; 3],
}

#[derive(Debug, Clone, Copy)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub enum Step {
    Claim {
        key: u8,
    },
    Complete {
        ticket: u8,
    },
    Abandon {
        ticket: u8,
    },
    Renew {
        ticket: u8,
    },
    /// `wait_timeout` on a pending handle, in microseconds.
    Wait {
        pending: u8,
        micros: u8,
    },
    /// Polls a pending handle's future once and drops it (cancellation).
    Poll {
        pending: u8,
    },
    Get {
        key: u8,
    },
    GetOrWait {
        key: u8,
        micros: u8,
    },
    Remove {
        key: u8,
    },
    Sweep,
    /// Lets the other threads run for a while.
    Yield {
        times: u8,
    },
}

/// A registered owner: the claim's token, the store time of the claim, its
/// current lease deadline, and how many removes of the key had finished
/// before the claim started.
#[derive(Debug, Clone, Copy)]
struct Execution {
    token: u64,
    claimed_at: u64,
    deadline: u64,
    removes_before: u64,
}

/// Per-key bookkeeping shared by the threads.
#[derive(Default)]
struct KeyLog {
    running: Mutex<Vec<Execution>>,
    /// Tokens ever handed out as owner of this key.
    tokens: Mutex<HashSet<u64>>,
    /// Largest token a finished claim of this key returned.
    max_token: AtomicU64,
    removes_started: AtomicU64,
    removes_finished: AtomicU64,
}

impl KeyLog {
    /// Checks `changed` against every other running owner of the key.
    fn check(&self, running: &[Execution], changed: &Execution) {
        let removes = self.removes_started.load(Ordering::SeqCst);
        for other in running.iter().filter(|o| o.token != changed.token) {
            let (earlier, later) = if other.token < changed.token {
                (other, changed)
            } else {
                (changed, other)
            };
            // A remove that had not finished before the earlier claim began
            // may have removed its entry: then the later claim is legal.
            let excused = removes > earlier.removes_before;
            assert!(
                excused || later.claimed_at >= earlier.deadline,
                "two executions in one lease: token {} claimed at {} while token {} \
                 held the key until {}",
                later.token,
                later.claimed_at,
                earlier.token,
                earlier.deadline
            );
        }
    }

    fn register(&self, execution: Execution) {
        let mut running = self.running.lock().unwrap();
        self.check(&running, &execution);
        running.push(execution);
    }

    fn renewed(&self, token: u64, deadline: u64) {
        let mut running = self.running.lock().unwrap();
        let Some(i) = running.iter().position(|e| e.token == token) else {
            return;
        };
        running[i].deadline = deadline;
        let execution = running[i];
        self.check(&running, &execution);
    }

    fn deregister(&self, token: u64) {
        self.running.lock().unwrap().retain(|e| e.token != token);
    }
}

struct Shared {
    store: Store<u8, Counted>,
    clock: ManualClock,
    lease: u64,
    keys: Vec<KeyLog>,
    live: Arc<AtomicIsize>,
}

impl Shared {
    fn now(&self) -> u64 {
        use idemstore::Clock;
        self.clock.now().as_secs()
    }

    fn key(&self, key: u8) -> &KeyLog {
        &self.keys[usize::from(key)]
    }

    /// A value that names its key and owner, so a reader can check it.
    fn value(&self, key: u8, token: u64) -> Counted {
        let value = u32::try_from(token << 8 | u64::from(key)).expect("small token");
        Counted::new(value, &self.live)
    }

    /// Asserts that `value`, read for `key`, is one an owner of `key` made.
    fn check_value(&self, key: u8, value: &Counted) {
        assert_eq!(value.value & 0xff, u32::from(key), "a value of another key");
        let token = u64::from(value.value >> 8);
        assert!(
            self.key(key).tokens.lock().unwrap().contains(&token),
            "value of token {token}, which never owned key {key}"
        );
    }
}

/// One thread's holdings across rounds.
#[derive(Default)]
struct Worker {
    tickets: Vec<(Ticket<u8, Counted>, u64)>,
    pendings: Vec<Pending<u8, Counted>>,
    /// The last token this thread got for each key.
    last_tokens: [u64; KEYS as usize],
}

fn pick<T>(items: &[T], index: u8) -> Option<usize> {
    (!items.is_empty()).then(|| usize::from(index) % items.len())
}

impl Worker {
    fn step(&mut self, shared: &Shared, step: Step) {
        let store = &shared.store;
        match step {
            Step::Claim { key } => {
                let key = key % KEYS;
                let log = shared.key(key);
                let floor = log.max_token.load(Ordering::SeqCst);
                let removes_before = log.removes_finished.load(Ordering::SeqCst);
                match store.claim(key) {
                    Ok(Claim::Owner(ticket)) => {
                        let token = ticket.token();
                        assert!(token > floor, "token {token} not above {floor} seen before");
                        let last = &mut self.last_tokens[usize::from(key)];
                        assert!(token > *last, "a thread's tokens for key {key} went down");
                        *last = token;
                        log.max_token.fetch_max(token, Ordering::SeqCst);
                        log.tokens.lock().unwrap().insert(token);
                        let now = shared.now();
                        log.register(Execution {
                            token,
                            claimed_at: now,
                            deadline: now + shared.lease,
                            removes_before,
                        });
                        self.tickets.push((ticket, token));
                    }
                    Ok(Claim::Completed(value)) => shared.check_value(key, &value),
                    Ok(Claim::InFlight(pending)) => self.pendings.push(pending),
                    Err(e) => panic!("claim without fingerprint or bound failed: {e:?}"),
                }
            }
            Step::Complete { ticket } | Step::Abandon { ticket } => {
                let Some(i) = pick(&self.tickets, ticket) else {
                    return;
                };
                let (ticket, token) = self.tickets.swap_remove(i);
                let key = *ticket.key();
                shared.key(key).deregister(token);
                if let Step::Complete { .. } = step {
                    let _ = ticket.complete(shared.value(key, token));
                }
            }
            Step::Renew { ticket } => {
                let Some(i) = pick(&self.tickets, ticket) else {
                    return;
                };
                let (ticket, token) = &self.tickets[i];
                if ticket.renew().is_ok() {
                    let deadline = shared.now() + shared.lease;
                    shared.key(*ticket.key()).renewed(*token, deadline);
                }
            }
            Step::Wait { pending, micros } => {
                let Some(i) = pick(&self.pendings, pending) else {
                    return;
                };
                let pending = &self.pendings[i];
                let timeout = Duration::from_micros(u64::from(micros));
                let start = Instant::now();
                let result = pending.wait_timeout(timeout);
                check_wait(shared, *pending.key(), start, timeout, result.map(Some));
            }
            Step::Poll { pending } => {
                let Some(i) = pick(&self.pendings, pending) else {
                    return;
                };
                let pending = self.pendings.swap_remove(i);
                let key = *pending.key();
                if let std::task::Poll::Ready(Ok(value)) = poll_once(pending.into_future()) {
                    shared.check_value(key, &value);
                }
            }
            Step::Get { key } => {
                let key = key % KEYS;
                if let Some(value) = store.get(&key) {
                    shared.check_value(key, &value);
                }
            }
            Step::GetOrWait { key, micros } => {
                let key = key % KEYS;
                let timeout = Duration::from_micros(u64::from(micros));
                let start = Instant::now();
                let result = store.get_or_wait(&key, timeout);
                check_wait(shared, key, start, timeout, result);
            }
            Step::Remove { key } => {
                let log = shared.key(key % KEYS);
                log.removes_started.fetch_add(1, Ordering::SeqCst);
                store.remove(&(key % KEYS));
                log.removes_finished.fetch_add(1, Ordering::SeqCst);
            }
            Step::Sweep => {
                store.sweep();
            }
            Step::Yield { times } => {
                for _ in 0..times % 16 {
                    std::thread::yield_now();
                }
            }
        }
    }

    /// Ends every claim this worker still holds.
    fn release(&mut self, shared: &Shared) {
        for (ticket, token) in self.tickets.drain(..) {
            shared.key(*ticket.key()).deregister(token);
        }
        self.pendings.clear();
    }
}

fn check_wait(
    shared: &Shared,
    key: u8,
    start: Instant,
    timeout: Duration,
    result: Result<Option<Counted>, WaitError>,
) {
    let waited = start.elapsed();
    assert!(
        waited <= timeout + WAIT_SLACK,
        "a wait of {timeout:?} took {waited:?}"
    );
    match result {
        Ok(Some(value)) => shared.check_value(key, &value),
        Err(WaitError::Timeout) => {
            assert!(
                waited >= timeout,
                "timed out after {waited:?} of {timeout:?}"
            )
        }
        Ok(None) | Err(WaitError::Abandoned | WaitError::LeaseExpired) => {}
        Err(e) => panic!("unexpected wait error {e:?}"),
    }
}

/// Runs `script`; panics if an invariant breaks. At the end every claim is
/// released and expired, and the store must be empty and every value gone.
pub fn run_script(script: &Script) {
    let lease = 1 + u64::from(script.lease % 6);
    let threads = 2 + usize::from(script.threads % 2);
    let clock = ManualClock::new();
    let live = Arc::new(AtomicIsize::new(0));
    let store = Store::builder()
        .lease(Duration::from_secs(lease))
        .ttl(Duration::from_secs(lease * 3))
        .shards(1)
        .background_sweeper(false)
        .clock(clock.clone())
        .build()
        .expect("valid settings");
    let shared = Shared {
        store,
        clock,
        lease,
        keys: (0..KEYS).map(|_| KeyLog::default()).collect(),
        live: live.clone(),
    };
    let mut workers: Vec<Worker> = (0..threads).map(|_| Worker::default()).collect();
    for round in script.rounds.iter().take(MAX_ROUNDS) {
        std::thread::scope(|scope| {
            let handles: Vec<_> = workers
                .iter_mut()
                .zip(&round.steps)
                .map(|(worker, steps)| {
                    let shared = &shared;
                    scope.spawn(move || {
                        for step in steps.iter().take(MAX_STEPS) {
                            worker.step(shared, *step);
                        }
                    })
                })
                .collect();
            // Joined one by one, so each thread has fully exited (its
            // thread-locals gone) before the leak checks at the end.
            for handle in handles {
                if let Err(panic) = handle.join() {
                    std::panic::resume_unwind(panic);
                }
            }
        });
        shared
            .clock
            .advance(Duration::from_secs(u64::from(round.advance % 8)));
    }
    for worker in &mut workers {
        worker.release(&shared);
    }
    drop(workers);
    shared.clock.advance(Duration::from_secs(3600));
    shared.store.sweep();
    assert_eq!(
        shared.store.len(),
        0,
        "entries left after everything expired"
    );
    drop(shared);
    assert_eq!(live.load(Ordering::SeqCst), 0, "values leaked");
}
