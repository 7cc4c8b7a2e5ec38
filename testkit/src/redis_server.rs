//! A private `redis-server` for the cluster-mode tests: on a free loopback port, without
//! persistence, killed on drop (or on demand, like a crash).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait_until;

/// A running `redis-server` this test owns.
pub struct Redis {
    child: Child,
    /// Its loopback port (a restart with [`Redis::start_on`] reuses it).
    pub port: u16,
}

impl Redis {
    /// A Redis on a free loopback port, or `None` (after a loud message naming `what` was
    /// skipped) when the binary is not installed and this is not CI; under `CI=true` a
    /// missing binary fails the test instead.
    pub fn start_or_skip(what: &str) -> Option<Redis> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok();
        if !installed {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("redis-server is not installed but CI=true: {what} must run (apt-get install redis-server)");
            }
            eprintln!("\n********\n*** SKIPPED {what}: redis-server is not installed (apt-get install redis-server)\n********\n");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Some(Redis::start_on(port))
    }

    /// A Redis on `port` (e.g. the same port again, after [`Redis::kill`]).
    pub fn start_on(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let redis = Redis { child, port };
        let up = wait_until(Duration::from_secs(10), || {
            redis
                .try_client()
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).ok())
                .is_some()
        });
        assert!(up, "redis-server did not come up on port {port}");
        redis
    }

    /// The `--broker` URL of this Redis.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A client connection, or `None` while it is down.
    /// Its reads and writes time out (5 s), so a Redis that hangs fails the test instead of
    /// blocking it forever.
    pub fn try_client(&self) -> Option<redis::Connection> {
        let conn = redis::Client::open(self.url())
            .ok()?
            .get_connection_with_timeout(Duration::from_secs(2))
            .ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        conn.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
        Some(conn)
    }

    /// A client connection (the test fails if Redis is down).
    pub fn client(&self) -> redis::Connection {
        self.try_client().expect("connect to the test redis")
    }

    /// SIGKILL, like a crash: everything it held is gone (no persistence).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
