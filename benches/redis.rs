//! The Redis store against a real, throwaway `redis-server` (unix socket):
//! a claim, a replay and a completion each next to a raw `SET NX PX` on
//! the same connection (the floor); the round trips of 16 concurrent
//! same-key duplicates in one process, counted by the server
//! (`INFO commandstats`); throughput at 16 tasks against `SET NX PX` at 16.
//!
//! `cargo bench --features redis --bench redis`; prints a table. Without
//! `redis-server` on PATH it says so and exits.

#[path = "../tests/common/redis_server.rs"]
mod redis_server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use idemstore::redis::{Claim, RedisStore};
use redis::aio::ConnectionManager;

const N: usize = 5_000;
const TASKS: usize = 16;

fn micros(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

async fn set_nx_px(conn: &mut ConnectionManager, key: &str) {
    let _: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg("1")
        .arg("NX")
        .arg("PX")
        .arg(60_000)
        .query_async(conn)
        .await
        .expect("SET");
}

fn main() {
    let Some(server) = redis_server::RedisServer::start() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(server));
}

async fn run(server: redis_server::RedisServer) {
    let conn = ConnectionManager::new(server.client())
        .await
        .expect("connect");
    let store: RedisStore<String, String> = RedisStore::builder(server.client())
        .connection(conn.clone())
        .build()
        .expect("build");
    // Warm up: load the scripts, open the connections.
    for i in 0..100 {
        let _ = store
            .execute(format!("warm-{i}"), || async {
                Ok::<_, ()>("v".to_string())
            })
            .await;
    }

    // Each row is timed back to back with the floor, on one connection.
    let mut floor = conn.clone();
    let started = Instant::now();
    for i in 0..N {
        set_nx_px(&mut floor, &format!("raw-{i}")).await;
    }
    let raw = micros(started.elapsed(), N);

    let started = Instant::now();
    let mut tickets = Vec::with_capacity(N);
    for i in 0..N {
        match store.claim(format!("k-{i}")).await.expect("claim") {
            Claim::Owner(ticket) => tickets.push(ticket),
            _ => panic!("fresh key"),
        }
    }
    let claim = micros(started.elapsed(), N);

    let started = Instant::now();
    for ticket in tickets {
        ticket
            .complete("value".to_string())
            .await
            .expect("complete");
    }
    let complete = micros(started.elapsed(), N);

    let started = Instant::now();
    for i in 0..N {
        assert!(matches!(
            store.claim(format!("k-{i}")).await.expect("replay"),
            Claim::Completed(_)
        ));
    }
    let replay = micros(started.elapsed(), N);

    println!("redis: one task, {N} calls each, µs per call (SET NX PX is the floor)\n");
    println!("  SET NX PX         {raw:>7.1}");
    for (name, value) in [("claim", claim), ("complete", complete), ("replay", replay)] {
        println!("  {name:<17} {value:>7.1}   {:.2}x the floor", value / raw);
    }

    // 16 concurrent same-key duplicates in one process.
    let before = server.calls("evalsha");
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .execute("dup".to_string(), || async {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        Ok::<_, ()>("once".to_string())
                    })
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("execute");
    }
    let scripts = server.calls("evalsha") - before;
    println!(
        "\n  {TASKS} same-key duplicates, one process: {scripts} script calls in all (a claim and a completion)"
    );

    // Throughput at 16 tasks: execute (claim + complete) on fresh keys
    // against SET NX PX.
    let per_task = N / TASKS;
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let mut conn = conn.clone();
            tokio::spawn(async move {
                for i in 0..per_task {
                    set_nx_px(&mut conn, &format!("raw16-{t}-{i}")).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let raw16 = (per_task * TASKS) as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..per_task {
                    store
                        .execute(format!("x16-{t}-{i}"), || async {
                            Ok::<_, ()>("v".to_string())
                        })
                        .await
                        .expect("execute");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let exec16 = (per_task * TASKS) as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..per_task {
                    store
                        .execute(format!("x16-{t}-{i}"), || async {
                            Ok::<_, ()>("v".to_string())
                        })
                        .await
                        .expect("replay");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let replay16 = (per_task * TASKS) as f64 / started.elapsed().as_secs_f64();
    println!("\n  {TASKS} tasks, ops/s");
    println!("  SET NX PX                      {raw16:>9.0}");
    println!(
        "  execute (claim + complete)     {exec16:>9.0}   {:.2}x SET NX PX",
        exec16 / raw16
    );
    println!(
        "  execute, replays               {replay16:>9.0}   {:.2}x SET NX PX",
        replay16 / raw16
    );
}
