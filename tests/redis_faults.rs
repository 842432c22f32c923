//! The Redis store when the server fails (rule 27) and when its input is
//! bad: a killed, restarted or slow server, killed connections, lost
//! notices, foreign keys, bytes that are not UTF-8, long keys; and the
//! in-process coalescing in front of Redis, counted on the server.
#![cfg(feature = "redis")]

#[path = "common/redis_server.rs"]
mod redis_server;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use idemstore::redis::{Claim, ClaimError, Error, ExecuteError, RedisStore};
use idemstore::Outcome;
use redis_server::RedisServer;

const TIMEOUT: Duration = Duration::from_millis(200);

fn store<K, V>(server: &RedisServer) -> RedisStore<K, V>
where
    K: idemstore::Codec + Clone + Send + Sync + 'static,
    V: idemstore::Codec + Clone + Send + Sync + 'static,
{
    RedisStore::builder(server.client())
        .prefix("faults")
        .timeout(TIMEOUT)
        .lease(Duration::from_millis(500))
        .ttl(Duration::from_secs(30))
        .build()
        .expect("build")
}

fn backend(e: &ExecuteError<String>) -> bool {
    matches!(
        e,
        ExecuteError::Backend(Error::Unavailable(_) | Error::Timeout(_))
    )
}

/// Retries `execute` until the store answers again, for at most 10 s.
async fn recovers(store: &RedisStore<String, String>, key: &str) -> Outcome<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store
            .execute(key.to_string(), || async {
                Ok::<_, String>("back".to_string())
            })
            .await
        {
            Ok(outcome) => return outcome,
            Err(e) => {
                assert!(backend(&e), "{e}");
                assert!(Instant::now() < deadline, "the store did not recover: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Redis killed mid-storm: every call ends within a bounded time with the
/// clear error, nothing hangs; every result reported stored was read back
/// before the kill; after a restart the same store works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_mid_storm_fails_bounded_then_recovers_on_restart() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let store: RedisStore<String, String> = store(&server);
    let executed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..16)
        .map(|task| {
            let (store, executed) = (store.clone(), executed.clone());
            tokio::spawn(async move {
                let mut errors = 0;
                for i in 0..1000 {
                    let key = format!("storm-{task}-{i}");
                    let started = Instant::now();
                    let result = store
                        .execute(key.clone(), || async {
                            tokio::time::sleep(Duration::from_millis(2)).await;
                            Ok::<_, String>(format!("v{i}"))
                        })
                        .await;
                    match result {
                        Ok(_) => executed.lock().unwrap().push(key),
                        Err(e) => {
                            assert!(backend(&e), "{e}");
                            // Claim and completion each within the timeout,
                            // plus the connection's own bound.
                            assert!(started.elapsed() < TIMEOUT * 6, "{:?}", started.elapsed());
                            errors += 1;
                            if errors == 5 {
                                return;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let before: Vec<String> = executed.lock().unwrap().clone();
    assert!(!before.is_empty(), "the storm ran before the kill");
    // Every completion reported so far is on the server.
    for key in before.iter().take(50) {
        assert!(store.get(key).await.expect("get").is_some(), "{key}");
    }
    server.kill();
    let all = tokio::time::timeout(Duration::from_secs(20), async {
        for task in tasks {
            task.await.expect("task");
        }
    })
    .await;
    assert!(all.is_ok(), "a call hung after the kill");
    server.restart();
    assert_eq!(
        recovers(&store, "after").await,
        Outcome::Executed("back".into())
    );
}

/// A restarted server (empty: no persistence) is reached again by the same
/// store, and its subscription comes back: a cross-replica waiter gets its
/// value.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_recovers_without_a_new_store() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let (a, b): (RedisStore<String, String>, RedisStore<String, String>) =
        (store(&server), store(&server));
    assert!(matches!(recovers(&a, "k").await, Outcome::Executed(_)));
    server.restart();
    assert_eq!(recovers(&a, "k").await, Outcome::Executed("back".into()));
    let Ok(Claim::Owner(owner)) = a.claim("w".into()).await else {
        panic!("owner")
    };
    let Ok(Claim::InFlight(pending)) = b.claim("w".into()).await else {
        panic!("in flight")
    };
    let waiter = tokio::spawn(pending.wait_timeout(Duration::from_secs(5)));
    owner.complete("done".into()).await.expect("complete");
    assert_eq!(waiter.await.unwrap().expect("waited"), "done");
}

/// `CLIENT KILL` of the store's connections: the next calls reconnect;
/// with the subscription killed while a waiter waits, the notice is lost
/// and the waiter still finishes by re-reading the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_kill_reconnects_and_a_lost_notice_does_not_hang() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b): (RedisStore<String, String>, RedisStore<String, String>) =
        (store(&server), store(&server));
    assert!(matches!(recovers(&a, "k").await, Outcome::Executed(_)));
    let killed = server.command(&["CLIENT", "KILL", "TYPE", "normal"]);
    assert!(killed.is_some_and(|n| n != ":0"), "connections were killed");
    assert_eq!(recovers(&a, "k").await, Outcome::Replayed("back".into()));

    let Ok(Claim::Owner(owner)) = a.claim("w".into()).await else {
        panic!("owner")
    };
    let Ok(Claim::InFlight(pending)) = b.claim("w".into()).await else {
        panic!("in flight")
    };
    let waiter = tokio::spawn(pending.wait_timeout(Duration::from_secs(5)));
    server.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    let started = Instant::now();
    owner.complete("done".into()).await.expect("complete");
    assert_eq!(waiter.await.unwrap().expect("waited"), "done");
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// A slow server (`DEBUG SLEEP`) answers after the timeout: the call fails
/// with `Timeout` in about the timeout, and the store works once the server
/// is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_server_hits_the_timeout() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let server = Arc::new(server);
    let store: RedisStore<String, String> = store(&server);
    assert!(matches!(recovers(&store, "k").await, Outcome::Executed(_)));
    let sleeper = {
        let server = server.clone();
        std::thread::spawn(move || server.command(&["DEBUG", "SLEEP", "1"]))
    };
    // The sleep has begun once a PING is slow.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let claimed = store.claim("slow".into()).await;
    let took = started.elapsed();
    assert!(
        matches!(claimed, Err(ClaimError::Backend(Error::Timeout(_)))),
        "{claimed:?}"
    );
    assert!(took >= TIMEOUT && took < TIMEOUT * 3, "{took:?}");
    sleeper.join().unwrap();
    // The claim that timed out may have been made on the server once it
    // woke. Its release by claim id is best effort (it may reach the server
    // first, over a new connection): the key is claimable again at the
    // latest when that claim's lease passes, and nothing was completed.
    let woke = Instant::now();
    let deadline = woke + Duration::from_secs(5);
    loop {
        match store.claim("slow".into()).await {
            Ok(Claim::Owner(_)) => {
                assert!(
                    woke.elapsed() < Duration::from_millis(1500),
                    "{:?}",
                    woke.elapsed()
                );
                break;
            }
            Ok(Claim::InFlight(_)) | Err(_) => {
                assert!(Instant::now() < deadline, "the lost claim was not released");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(Claim::Completed(_)) => panic!("nothing was completed"),
        }
    }
}

/// Keys and values that are not UTF-8 and very long keys round-trip; keys
/// with braces do not collide.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bytes_long_keys_and_braces() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store: RedisStore<Vec<u8>, Vec<u8>> = store(&server);
    let keys = [
        vec![0xff, 0xfe, 0, b'}', b'{'],
        vec![b'a'; 100_000],
        b"a}b".to_vec(),
        b"a}c".to_vec(),
        b"{a}".to_vec(),
        Vec::new(),
    ];
    for (i, key) in keys.iter().enumerate() {
        let value = vec![0x80, i as u8, 0xff];
        let out = store
            .execute(key.clone(), || async { Ok::<_, String>(value.clone()) })
            .await
            .expect("execute");
        assert_eq!(out, Outcome::Executed(value));
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            store.get(key).await.expect("get"),
            Some(vec![0x80, i as u8, 0xff])
        );
    }
}

/// Redis keys under the prefix written by something else: a clear error,
/// never a panic, never another key's value, and left as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn foreign_keys_are_clear_errors() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store: RedisStore<String, String> = store(&server);
    server.command(&["SET", "faults:{string}", "hello"]);
    server.command(&["HSET", "faults:{hash}", "s", "c", "v", "other"]);
    server.command(&[
        "HSET",
        "faults:{damaged}",
        "m",
        "idemstore/1",
        "s",
        "z",
        "t",
        "1",
    ]);
    server.command(&["RPUSH", "faults:{list}", "x"]);
    for key in ["string", "hash", "damaged", "list"] {
        let claimed = store.claim(key.into()).await;
        assert!(
            matches!(claimed, Err(ClaimError::Backend(Error::Foreign { .. }))),
            "{key}: {claimed:?}"
        );
        assert!(matches!(
            store.get(&key.to_string()).await,
            Err(Error::Foreign { .. })
        ));
        assert!(matches!(
            store.remove(&key.to_string()).await,
            Err(Error::Foreign { .. })
        ));
        let message = claimed.unwrap_err().to_string();
        assert!(message.contains("not written by idemstore"), "{message}");
    }
    assert_eq!(
        server.command(&["GET", "faults:{string}"]).as_deref(),
        Some("$5")
    );
    // A value another store wrote that does not decode: an error, no panic.
    let bytes: RedisStore<String, Vec<u8>> = store_bytes(&server);
    bytes
        .execute("bad".into(), || async { Ok::<_, String>(vec![0xff, 0xfe]) })
        .await
        .expect("execute");
    assert!(matches!(
        store.get(&"bad".to_string()).await,
        Err(Error::Codec(_))
    ));
    assert!(matches!(
        store.claim("bad".into()).await,
        Err(ClaimError::Backend(Error::Codec(_)))
    ));
}

fn store_bytes(server: &RedisServer) -> RedisStore<String, Vec<u8>> {
    store(server)
}

/// 16 concurrent duplicates on one replica make one claim round trip (and
/// one completion): the others wait in process. Counted on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_local_duplicates_make_one_claim_round_trip() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store: RedisStore<String, String> = store(&server);
    // Loads the scripts (the first EVALSHA of each is refused, NOSCRIPT).
    assert!(matches!(
        recovers(&store, "warm").await,
        Outcome::Executed(_)
    ));
    let before = server.calls("evalsha");
    let runs = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(16));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (store, runs, barrier) = (store.clone(), runs.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .execute("dup".to_string(), || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, String>("once".to_string())
                    })
                    .await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().expect("execute").into_inner(), "once");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        server.calls("evalsha") - before,
        2,
        "one claim, one completion"
    );
}
