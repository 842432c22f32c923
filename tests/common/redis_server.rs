//! A throwaway `redis-server` per test: started from PATH in a temporary
//! directory on a unix socket (no port to collide on), with no persistence,
//! killed when dropped.
//!
//! Without `redis-server` on PATH, [`RedisServer::start`] returns `None`
//! and says loudly, once per test binary, what did not run and the command
//! that installs the server; with `IDEMSTORE_REQUIRE_REDIS=1` (set by
//! `.ci/run`) it fails the test instead, so CI can never skip these tests.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

pub const INSTALL: &str = "apt-get install -y redis-server";

pub struct RedisServer {
    child: Option<Child>,
    dir: PathBuf,
    pub socket: PathBuf,
}

fn announce_missing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Straight to the process's stderr: the test harness captures
        // `eprintln!` of passing tests, and this must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "\n!!! redis-server is not on PATH: the Redis tests in this binary did NOT run.\n\
             !!! Install it with: {INSTALL}\n"
        );
    });
}

impl RedisServer {
    /// A fresh server, or `None` (announced) where none can be started.
    pub fn start() -> Option<RedisServer> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            if std::env::var_os("IDEMSTORE_REQUIRE_REDIS").is_some_and(|v| v == "1") {
                panic!("IDEMSTORE_REQUIRE_REDIS=1 but redis-server is not on PATH ({INSTALL})");
            }
            announce_missing();
            return None;
        }
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "idemstore-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let socket = dir.join("redis.sock");
        let mut server = RedisServer {
            child: None,
            dir,
            socket,
        };
        server.spawn();
        Some(server)
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&self.socket)
            .args([
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--enable-debug-command", "yes", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.command(&["PING"]).as_deref() != Some("+PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("client")
    }

    /// Sends one command on a fresh connection; the first line of the
    /// answer, or `None` if the server is not reachable.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut stream = UnixStream::connect(&self.socket).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).ok()?;
        let mut answer = Vec::new();
        let mut byte = [0u8; 1];
        while !answer.ends_with(b"\r\n") {
            if stream.read(&mut byte).ok()? == 0 {
                return None;
            }
            answer.push(byte[0]);
        }
        answer.truncate(answer.len() - 2);
        String::from_utf8(answer).ok()
    }

    /// How many times `command` (lowercase, e.g. `evalsha`) ran, from
    /// `INFO commandstats`.
    pub fn calls(&self, command: &str) -> u64 {
        self.command_stat(command, "calls").map_or(0, |n| n as u64)
    }

    /// The server's own time per call of `command` (its `usec_per_call`
    /// in `INFO commandstats`) since the last `CONFIG RESETSTAT`.
    pub fn usec_per_call(&self, command: &str) -> f64 {
        self.command_stat(command, "usec_per_call").unwrap_or(0.0)
    }

    fn command_stat(&self, command: &str, field: &str) -> Option<f64> {
        let mut client = redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("connect");
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut client)
            .expect("info");
        let prefix = format!("cmdstat_{command}:");
        let line = info.lines().find_map(|line| line.strip_prefix(&prefix))?;
        line.split(',')
            .find_map(|kv| kv.strip_prefix(field)?.strip_prefix('='))
            .and_then(|n| n.parse().ok())
    }

    /// Kills the server (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same socket, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
