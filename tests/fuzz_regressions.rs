//! Replays of the fuzz targets' harnesses (`fuzz/`): hand-picked sequences
//! that walk every branch of the sequential model, and every input the
//! fuzzer ever crashed on, kept as a regression test.

mod model;

use model::threads::{run_script, Round, Script, Step};
use model::{run_ops, Op, Setup};

const SETUP: Setup = Setup {
    lease: 1,       // 2 s
    ttl: 3,         // 5 s
    max_entries: 1, // unbounded
    shards_log2: 0,
    max_bytes: 1, // unbounded (bytes still counted)
};

#[test]
fn ops_walk_every_state() {
    use Op::*;
    run_ops(
        SETUP,
        &[
            Claim { key: 1 },
            Claim { key: 1 }, // in flight: a pending handle
            ClaimWith {
                key: 1,
                fingerprint: 9,
            }, // the owner has none: agrees
            GetOrWait { key: 1 }, // times out at once
            WaitPending { pending: 0 }, // still in flight
            Renew { ticket: 0 },
            Complete {
                ticket: 0,
                value: 7,
            },
            WaitPending { pending: 0 }, // the owner's value
            PollPending { pending: 1 },
            Get { key: 1 },
            Claim { key: 1 }, // a replay
            Execute {
                key: 1,
                fail: false,
                value: 3,
            },
            Advance { secs: 5 }, // retention over
            Get { key: 1 },
            Execute {
                key: 1,
                fail: true,
                value: 3,
            }, // runs, fails, not stored
            Execute {
                key: 1,
                fail: false,
                value: 4,
            },
            Remove { key: 1 },
            Remove { key: 1 },
            ClaimWith {
                key: 2,
                fingerprint: 1,
            },
            ClaimWith {
                key: 2,
                fingerprint: 2,
            }, // mismatch while in flight
            Advance { secs: 2 }, // lease over
            Renew { ticket: 0 }, // not taken over yet: renews
            Advance { secs: 2 },
            Claim { key: 2 }, // takeover
            Complete {
                ticket: 0,
                value: 1,
            }, // one of the two is stale
            Complete {
                ticket: 0,
                value: 2,
            },
            CompleteWithTtl {
                ticket: 0,
                value: 1,
                ttl: 1,
            },
            Claim { key: 3 },
            Claim { key: 3 },
            Abandon { ticket: 0 },
            WaitPending { pending: 0 },
            DropPending { pending: 0 },
            Claim { key: 4 },
            CompleteWithTtl {
                ticket: 0,
                value: 8,
                ttl: 0,
            }, // expires at once
            Get { key: 4 },
            Sweep,
        ],
    );
}

#[test]
fn ops_bounded_store_sweeps_before_refusing() {
    use Op::*;
    let setup = Setup {
        max_entries: 0, // at most one entry
        ..SETUP
    };
    run_ops(
        setup,
        &[
            Claim { key: 1 },
            Claim { key: 2 }, // full: refused
            Advance { secs: 2 },
            Claim { key: 2 }, // full, but the expired lease is swept first
            Claim { key: 2 },
            Sweep,
        ],
    );
}

/// The byte bound (6 here; `model::weigh` gives key 1 with value 4, and key
/// 2 with value 3, 6 each): claims are admitted below it, completions of
/// admitted claims are stored over it, and removal and expiry give bytes
/// back, with every `Stats` field checked at each step.
#[test]
fn ops_byte_bound_refuses_claims_and_stores_completions_over_it() {
    use Op::*;
    let setup = Setup {
        max_bytes: 15, // a bound of 6
        ..SETUP
    };
    run_ops(
        setup,
        &[
            Claim { key: 1 },
            Claim { key: 2 },
            Complete {
                ticket: 0,
                value: 4,
            }, // key 1: 6 bytes, at the bound
            Claim { key: 3 }, // refused
            Complete {
                ticket: 0,
                value: 3,
            }, // key 2: stored, 12 bytes
            Get { key: 2 },
            Claim { key: 1 }, // a replay over the bound
            Remove { key: 1 },
            Claim { key: 4 }, // still at the bound; the sweep is not due
            Advance { secs: 5 },
            Claim { key: 2 }, // expired, at the bound: swept, then admitted
            Complete {
                ticket: 0,
                value: 0,
            },
            CompleteWithTtl {
                ticket: 0,
                value: 1,
                ttl: 0,
            },
            Sweep,
        ],
    );
}

/// `get_many` answers each key as `get` would: completed, in flight,
/// never claimed, expired, removed, and a key named twice, in batches that
/// span several prefetch windows and a table that grew.
#[test]
fn ops_get_many_answers_each_key_as_get_does() {
    use Op::*;
    let mut ops: Vec<Op> = (0..30).map(|key| Claim { key }).collect();
    ops.extend((0..20u16).map(|i| Complete {
        ticket: 0,
        value: i + 100,
    }));
    ops.extend([
        CompleteWithTtl {
            ticket: 0,
            value: 7,
            ttl: 1,
        },
        Remove { key: 3 },
        GetMany {
            first: 0,
            count: 39,
        },
        Advance { secs: 1 }, // the short-TTL value expires
        GetMany {
            first: 25,
            count: 30,
        }, // wraps: keys 25..39, then 0..14
        Advance { secs: 3 }, // every lease has passed
        GetMany {
            first: 0,
            count: 40,
        },
        GetMany { first: 9, count: 0 },
    ]);
    run_ops(SETUP, &ops);
}

#[test]
fn ops_table_grows_with_readers_and_waiters() {
    let mut ops: Vec<Op> = (0..40).map(|key| Op::Claim { key }).collect();
    ops.extend((0..40).map(|key| Op::Claim { key }));
    ops.extend((0..40).map(|i| Op::Complete {
        ticket: 39 - i,
        value: u16::from(i),
    }));
    ops.extend((0..40).map(|i| Op::WaitPending { pending: i }));
    ops.extend((0..40).map(|key| Op::Get { key }));
    run_ops(
        Setup {
            shards_log2: 0,
            ..SETUP
        },
        &ops,
    );
}

#[test]
fn threads_script_with_takeovers() {
    use Step::*;
    let round = |advance, a: Vec<Step>, b: Vec<Step>, c: Vec<Step>| Round {
        advance,
        steps: [a, b, c],
    };
    run_script(&Script {
        lease: 1, // 2 s
        threads: 1,
        rounds: vec![
            round(
                0,
                vec![Claim { key: 0 }, Claim { key: 1 }, Yield { times: 3 }],
                vec![
                    Claim { key: 0 },
                    Wait {
                        pending: 0,
                        micros: 50,
                    },
                    Claim { key: 1 },
                ],
                vec![
                    GetOrWait { key: 0, micros: 20 },
                    Remove { key: 2 },
                    Claim { key: 2 },
                ],
            ),
            round(
                3,
                vec![Renew { ticket: 0 }, Complete { ticket: 0 }],
                vec![Poll { pending: 0 }, Get { key: 0 }, Sweep],
                vec![Claim { key: 3 }, Abandon { ticket: 0 }],
            ),
            round(
                0,
                vec![Claim { key: 1 }, Claim { key: 0 }, Complete { ticket: 1 }],
                vec![
                    Claim { key: 1 },
                    Wait {
                        pending: 1,
                        micros: 200,
                    },
                ],
                vec![Remove { key: 1 }, Claim { key: 1 }, Complete { ticket: 0 }],
            ),
        ],
    });
}
