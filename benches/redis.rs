//! The Redis store against a real, throwaway `redis-server` (unix socket):
//! a claim, a replay and a completion each next to a raw `SET NX PX` on
//! the same connection (the floor); the round trips of 16 concurrent
//! same-key duplicates in one process, counted by the server
//! (`INFO commandstats`); throughput at 16 tasks against `SET NX PX` at 16.
//!
//! The one-task rows alternate with the floor in rounds, so a noisy
//! machine's drift falls on both: each ratio is the median of the rounds'
//! ratios. The server's own µs per call (`usec_per_call`) is shown beside
//! each, to tell the script's work from the client's and the round trip's.
//!
//! `cargo bench --features redis --bench redis`; prints a table. Without
//! `redis-server` on PATH it says so and exits.

#[path = "../tests/common/redis_server.rs"]
mod redis_server;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use idemstore::redis::{Claim, RedisStore, Ticket};
use redis::aio::ConnectionManager;
use redis_server::RedisServer;

const ROUNDS: usize = 15;
const BATCH: usize = 400;
const TASKS: usize = 16;
const PER_TASK: usize = 300;

fn micros(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

async fn set_nx_px(conn: &mut ConnectionManager, key: String) {
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

/// One timed batch: its client-side µs per call and the server's µs per
/// call of `command`.
struct Sample {
    client: f64,
    server: f64,
}

async fn sample<T, Fut>(server: &RedisServer, command: &str, run: Fut) -> (Sample, T)
where
    Fut: Future<Output = T>,
{
    let _ = server.command(&["CONFIG", "RESETSTAT"]);
    let started = Instant::now();
    let out = run.await;
    let client = micros(started.elapsed(), BATCH);
    let server = server.usec_per_call(command);
    (Sample { client, server }, out)
}

/// Ops per second of `TASKS` tasks each running `op(task, i)` `PER_TASK`
/// times.
async fn throughput<F, Fut>(op: F) -> f64
where
    F: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let op = op.clone();
            tokio::spawn(async move {
                for i in 0..PER_TASK {
                    op(t, i).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    (PER_TASK * TASKS) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(server));
}

async fn run(server: RedisServer) {
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

    // Rounds of: the floor, then each row, on one connection.
    let mut floor = conn.clone();
    let mut rows: [Vec<Sample>; 4] = Default::default();
    for round in 0..ROUNDS {
        let (raw, ()) = sample(&server, "set", async {
            for i in 0..BATCH {
                set_nx_px(&mut floor, format!("raw-{round}-{i}")).await;
            }
        })
        .await;
        let (claim, tickets) = sample(&server, "evalsha", async {
            let mut tickets: Vec<Ticket<String, String>> = Vec::with_capacity(BATCH);
            for i in 0..BATCH {
                match store.claim(format!("k-{round}-{i}")).await.expect("claim") {
                    Claim::Owner(ticket) => tickets.push(ticket),
                    _ => panic!("fresh key"),
                }
            }
            tickets
        })
        .await;
        let (complete, ()) = sample(&server, "evalsha", async {
            for ticket in tickets {
                ticket
                    .complete("value".to_string())
                    .await
                    .expect("complete");
            }
        })
        .await;
        let (replay, ()) = sample(&server, "evalsha", async {
            for i in 0..BATCH {
                assert!(matches!(
                    store.claim(format!("k-{round}-{i}")).await.expect("replay"),
                    Claim::Completed(_)
                ));
            }
        })
        .await;
        for (row, s) in rows.iter_mut().zip([raw, claim, complete, replay]) {
            row.push(s);
        }
    }
    let [raw, rest @ ..] = &rows;
    println!(
        "redis: one task, {ROUNDS} rounds of {BATCH} calls, medians, µs per call \
         (SET NX PX is the floor)\n"
    );
    println!(
        "  {:<10} {:>8} {:>9} {:>10}",
        "", "client", "ratio", "server"
    );
    let line = |name: &str, row: &[Sample], ratio: Option<f64>| {
        let client = median(row.iter().map(|s| s.client).collect());
        let server = median(row.iter().map(|s| s.server).collect());
        let ratio = ratio.map_or(String::new(), |r| format!("{r:.2}x"));
        println!("  {name:<10} {client:>8.1} {ratio:>9} {server:>10.2}");
    };
    line("SET NX PX", raw, None);
    for (name, row) in ["claim", "complete", "replay"].into_iter().zip(rest) {
        let ratio = median(
            row.iter()
                .zip(raw)
                .map(|(s, r)| s.client / r.client)
                .collect(),
        );
        line(name, row, Some(ratio));
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

    // Throughput at 16 tasks: SET NX PX, then execute (claim + complete)
    // on fresh keys, then the same keys again (replays).
    let raw16 = throughput(move |t, i| {
        let mut conn = conn.clone();
        async move { set_nx_px(&mut conn, format!("raw16-{t}-{i}")).await }
    })
    .await;
    let execute = |what: &'static str| {
        let store = store.clone();
        move |t, i| {
            let store = store.clone();
            async move {
                store
                    .execute(format!("x16-{t}-{i}"), || async {
                        Ok::<_, ()>("v".to_string())
                    })
                    .await
                    .expect(what);
            }
        }
    };
    let exec16 = throughput(execute("execute")).await;
    let replay16 = throughput(execute("replay")).await;
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
