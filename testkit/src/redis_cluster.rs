//! A private Redis Cluster for the sharded cluster-mode tests: six `redis-server` processes
//! (three masters, one replica each) on free loopback ports, without persistence, created
//! with `redis-cli --cluster create`, killed on drop. Nodes can be killed (a crash),
//! restarted (they rejoin with their saved cluster configuration, empty) and failed over.

use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::temp::TempDir;
use crate::{free_port, wait_until};

/// One node: its process (none while killed), client port and cluster bus port.
struct Node {
    child: Option<Child>,
    port: u16,
    bus: u16,
}

/// A running Redis Cluster this test owns.
pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: TempDir,
    /// Held for the cluster's whole life (dropped last): the tests of one process that use
    /// a Redis Cluster run one at a time. Each starts six redis-servers and two or three
    /// herald nodes; several at once on a 2-core machine starve each other's failover
    /// timers and stretch every wait past its bound.
    _turn: MutexGuard<'static, ()>,
}

/// Whose turn it is to run a Redis Cluster in this test process.
static TURN: Mutex<()> = Mutex::new(());

/// A connection to the node on `port`, or `None` while it is down.
pub fn try_client(port: u16) -> Option<redis::Connection> {
    let conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .ok()?
        .get_connection_with_timeout(Duration::from_secs(2))
        .ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    Some(conn)
}

/// `CLUSTER INFO` / `INFO replication` field `name` of the node on `port`.
fn info_field(port: u16, command: &[&str], name: &str) -> Option<String> {
    let mut c = try_client(port)?;
    let mut cmd = redis::cmd(command[0]);
    for arg in &command[1..] {
        cmd.arg(*arg);
    }
    let text: String = cmd.query(&mut c).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_string())
}

impl RedisCluster {
    /// Three masters with a replica each, or `None` (after a loud message naming `what`)
    /// when `redis-server`/`redis-cli` are not installed and this is not CI.
    pub fn start_or_skip(what: &str) -> Option<RedisCluster> {
        let installed = ["redis-server", "redis-cli"].iter().all(|bin| {
            Command::new(bin)
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .is_ok()
        });
        if !installed {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("redis-server/redis-cli are not installed but CI=true: {what} must run (apt-get install redis-server)");
            }
            eprintln!("\n********\n*** SKIPPED {what}: redis-server is not installed (apt-get install redis-server)\n********\n");
            return None;
        }
        // A test that failed while holding the turn poisons the lock; the turn is still free.
        let turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = TempDir::new("redis-cluster");
        let mut cluster = RedisCluster {
            nodes: (0..6)
                .map(|_| Node {
                    child: None,
                    port: free_port(),
                    bus: free_port(),
                })
                .collect(),
            dir,
            _turn: turn,
        };
        for i in 0..6 {
            cluster.start_node(i);
        }
        let addrs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_ok();
        Some(cluster)
    }

    fn start_node(&mut self, i: usize) {
        let Node { port, bus, .. } = self.nodes[i];
        let conf = self.dir.path().join(format!("nodes-{port}.conf"));
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus.to_string(),
            ])
            .arg("--cluster-config-file")
            .arg(&conf)
            // Fast failure detection, and the healthy shards keep serving while one is down.
            .args(["--cluster-node-timeout", "1000"])
            .args(["--cluster-require-full-coverage", "no"])
            .args(["--cluster-allow-pubsubshard-when-down", "yes"])
            .args(["--save", "", "--appendonly", "no"])
            // Replicas in sync at once (a replica that never synced cannot be promoted).
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.nodes[i].child = Some(child);
        let up = wait_until(Duration::from_secs(10), || {
            try_client(port)
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).ok())
                .is_some()
        });
        assert!(up, "redis-server did not come up on port {port}");
    }

    /// Wait until every running node reports `cluster_state:ok`, three masters serve
    /// slots, and every replica is in sync with its master (one that never synced could not
    /// be promoted).
    pub fn wait_ok(&self) {
        let ok = wait_until(Duration::from_secs(30), || {
            self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
                let replication = |field| info_field(n.port, &["INFO", "replication"], field);
                info_field(n.port, &["CLUSTER", "INFO"], "cluster_state").as_deref() == Some("ok")
                    && (replication("role").as_deref() == Some("master")
                        || replication("master_link_status").as_deref() == Some("up"))
            }) && self.masters().len() == 3
        });
        assert!(ok, "the Redis Cluster did not settle");
    }

    /// The `--broker` value: every node as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// Every node's port.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// Ports of the running nodes that are masters serving slots (as they say themselves).
    pub fn masters(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .filter(|n| {
                info_field(n.port, &["INFO", "replication"], "role").as_deref() == Some("master")
                    && self.slots_of(n.port) > 0
            })
            .map(|n| n.port)
            .collect()
    }

    /// How many slots the node on `port` serves, by its own view (`CLUSTER NODES`'s
    /// `myself` line).
    fn slots_of(&self, port: u16) -> u32 {
        let Some(mut c) = try_client(port) else {
            return 0;
        };
        let Ok(nodes) = redis::cmd("CLUSTER").arg("NODES").query::<String>(&mut c) else {
            return 0;
        };
        let Some(me) = nodes.lines().find(|l| l.contains("myself")) else {
            return 0;
        };
        if !me.split(' ').nth(2).is_some_and(|f| f.contains("master")) {
            return 0;
        }
        me.split(' ')
            .skip(8)
            .filter(|r| !r.starts_with('['))
            .map(|r| match r.split_once('-') {
                Some((a, b)) => b.parse::<u32>().unwrap_or(0) + 1 - a.parse::<u32>().unwrap_or(0),
                None => 1,
            })
            .sum()
    }

    /// The port of the master serving `slot` now.
    pub fn master_of_slot(&self, slot: u16) -> u16 {
        let port = self.masters()[0];
        let mut c = try_client(port).expect("a master");
        let table: redis::Value = redis::cmd("CLUSTER").arg("SLOTS").query(&mut c).unwrap();
        let redis::Value::Array(rows) = table else {
            panic!("CLUSTER SLOTS: {table:?}")
        };
        for row in rows {
            let redis::Value::Array(f) = row else {
                continue;
            };
            let (redis::Value::Int(a), redis::Value::Int(b), redis::Value::Array(m)) =
                (&f[0], &f[1], &f[2])
            else {
                continue;
            };
            if (*a..=*b).contains(&i64::from(slot)) {
                if let redis::Value::Int(p) = m[1] {
                    return p as u16;
                }
            }
        }
        panic!("no master for slot {slot}")
    }

    /// The port of the replica of the master on `master`.
    pub fn replica_of(&self, master: u16) -> u16 {
        let mut c = try_client(master).expect("the master");
        let info: String = redis::cmd("INFO").arg("replication").query(&mut c).unwrap();
        info.lines()
            .filter(|l| l.starts_with("slave"))
            .find_map(|l| {
                l.split(',')
                    .find_map(|kv| kv.strip_prefix("port="))
                    .and_then(|p| p.parse().ok())
            })
            .unwrap_or_else(|| panic!("master {master} has no replica: {info}"))
    }

    /// The slot of `key` as the cluster computes it.
    pub fn keyslot(&self, key: &str) -> u16 {
        let mut c = try_client(self.masters()[0]).expect("a master");
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut c)
            .unwrap()
    }

    fn index(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|n| n.port == port)
            .expect("a node of this cluster")
    }

    /// The cluster id of the node on `port` (`CLUSTER MYID`).
    pub fn node_id(&self, port: u16) -> String {
        let mut c = try_client(port).expect("the node");
        redis::cmd("CLUSTER").arg("MYID").query(&mut c).unwrap()
    }

    /// Live resharding, as `redis-cli --cluster reshard` does it: move `slot` from the
    /// master on `from` to the master on `to` while clients keep using it. The slot is
    /// marked importing on `to` and migrating on `from` (from then on clients get `ASK`
    /// for keys already moved, `TRYAGAIN` for a script whose keys are split), its keys are
    /// moved with `MIGRATE` a few at a time, pausing `pause` between batches so the test's
    /// clients run across the migration, and then every master is told the slot's new owner
    /// (clients get `MOVED`; sharded subscribers of the slot are unsubscribed by Redis).
    pub fn migrate_slot(&self, slot: u16, from: u16, to: u16, pause: Duration) {
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let mut dst = try_client(to).expect("the importing master");
        let mut src = try_client(from).expect("the migrating master");
        let setslot = |c: &mut redis::Connection, state: &str, id: &str| {
            let ok: String = redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(state)
                .arg(id)
                .query(c)
                .unwrap_or_else(|e| panic!("CLUSTER SETSLOT {slot} {state}: {e}"));
            assert_eq!(ok, "OK");
        };
        setslot(&mut dst, "IMPORTING", &from_id);
        setslot(&mut src, "MIGRATING", &to_id);
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(1)
                .query(&mut src)
                .unwrap();
            if keys.is_empty() {
                break;
            }
            let moved: String = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(to)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query(&mut src)
                .unwrap_or_else(|e| panic!("MIGRATE {keys:?}: {e}"));
            assert!(moved == "OK" || moved == "NOKEY", "MIGRATE: {moved}");
            std::thread::sleep(pause);
        }
        // The new owner first, then the old one, then the rest (the order redis-cli uses).
        setslot(&mut dst, "NODE", &to_id);
        setslot(&mut src, "NODE", &to_id);
        for port in self.masters() {
            if port != from && port != to {
                let mut c = try_client(port).expect("a master");
                setslot(&mut c, "NODE", &to_id);
            }
        }
    }

    /// SIGKILL the node on `port`, like a crash (no persistence: its data is gone).
    pub fn kill(&mut self, port: u16) {
        let i = self.index(port);
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start the node on `port` again (empty; it rejoins with its saved cluster config).
    pub fn restart(&mut self, port: u16) {
        let i = self.index(port);
        self.start_node(i);
    }

    /// Wait until the node on `port` is a master serving slots (a replica promoted).
    pub fn wait_master(&self, port: u16, timeout: Duration) -> bool {
        let promoted = wait_until(timeout, || self.masters().contains(&port));
        if !promoted {
            let nodes = try_client(port).and_then(|mut c| {
                redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query::<String>(&mut c)
                    .ok()
            });
            eprintln!("node {port} was not promoted; it sees:\n{nodes:?}");
        }
        promoted
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
