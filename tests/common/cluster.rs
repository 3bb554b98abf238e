//! A real Redis Cluster for tests: servers with the module on loopback ports, slots
//! assigned by `redis-cli --cluster create`, routing done by asking the cluster.

use std::process::Command;

use super::*;

pub struct Cluster {
    pub nodes: Vec<Server>,
}

fn node_args(node_timeout_ms: u64) -> Vec<String> {
    ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", &node_timeout_ms.to_string()]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

impl Cluster {
    /// `primaries` primaries (3 or more, as `redis-cli --cluster create` wants), each
    /// with the module loaded with `module_args`.
    pub fn start(primaries: usize, node_timeout_ms: u64, module_args: &[&str]) -> Cluster {
        let args = node_args(node_timeout_ms);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let nodes: Vec<Server> = (0..primaries).map(|_| Server::start_with(&args, module_args)).collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(out.status.success(), "cluster create failed: {}", String::from_utf8_lossy(&out.stdout));
        let cluster = Cluster { nodes };
        cluster.wait_stable();
        cluster
    }

    /// Adds a replica of primary `of` (an index into `nodes`); returns its index.
    pub fn add_replica(&mut self, of: usize, node_timeout_ms: u64, module_args: &[&str]) -> usize {
        let args = node_args(node_timeout_ms);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let replica = Server::start_with(&args, module_args);
        let primary_id = self.id(of);
        q::<()>(&mut replica.conn(), &["CLUSTER", "MEET", "127.0.0.1", &self.nodes[0].port.to_string()]);
        self.nodes.push(replica);
        let at = self.nodes.len() - 1;
        assert!(
            eventually(30, || cmd("CLUSTER").arg("REPLICATE").arg(&primary_id).query::<()>(&mut self.nodes[at].conn()).is_ok()),
            "the new node never learnt of its primary"
        );
        self.wait_stable();
        assert!(
            eventually(30, || q::<String>(&mut self.nodes[at].conn(), &["INFO", "replication"]).contains("master_link_status:up")),
            "the replica never synced"
        );
        at
    }

    pub fn id(&self, node: usize) -> String {
        q(&mut self.nodes[node].conn(), &["CLUSTER", "MYID"])
    }

    /// Waits until every live node sees the cluster up, knows every node, and has its
    /// bus links connected (so fanned-out requests can reach everyone).
    pub fn wait_stable(&self) {
        let n = self.nodes.len();
        let stable = eventually(60, || {
            self.nodes.iter().all(|node| {
                let Ok(mut c) = node.try_conn() else { return false };
                let info: String = cmd("CLUSTER").arg("INFO").query(&mut c).unwrap_or_default();
                let nodes: String = cmd("CLUSTER").arg("NODES").query(&mut c).unwrap_or_default();
                info.contains("cluster_state:ok")
                    && nodes.lines().filter(|l| !l.contains("fail")).count() >= n
                    && nodes.lines().all(|l| l.contains("connected") || l.contains("fail"))
            })
        });
        assert!(stable, "the cluster did not settle");
    }

    /// The index of the node serving `key`'s slot as a primary.
    pub fn owner(&self, key: &str) -> usize {
        let slot: i64 = q(&mut self.nodes[0].conn(), &["CLUSTER", "KEYSLOT", key]);
        self.owner_of_slot(slot)
    }

    pub fn owner_of_slot(&self, slot: i64) -> usize {
        for node in &self.nodes {
            let Ok(mut c) = node.try_conn() else { continue };
            let Ok(Value::Array(ranges)) = cmd("CLUSTER").arg("SLOTS").query::<Value>(&mut c) else { continue };
            for range in ranges {
                let Value::Array(parts) = range else { continue };
                let (Some(Value::Int(lo)), Some(Value::Int(hi)), Some(Value::Array(primary))) = (parts.first(), parts.get(1), parts.get(2)) else {
                    continue;
                };
                if (*lo..=*hi).contains(&slot) {
                    if let Some(Value::Int(port)) = primary.get(1) {
                        if let Some(at) = self.nodes.iter().position(|n| i64::from(n.port) == *port) {
                            return at;
                        }
                    }
                }
            }
        }
        panic!("no node serves slot {slot}")
    }

    /// A connection to the primary serving `key`.
    pub fn conn_for(&self, key: &str) -> Connection {
        self.nodes[self.owner(key)].conn()
    }

    pub fn primaries(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i]
                    .try_conn()
                    .ok()
                    .and_then(|mut c| cmd("ROLE").query::<Vec<Value>>(&mut c).ok())
                    .is_some_and(|role| matches!(role.first(), Some(Value::BulkString(r)) if r == b"master"))
            })
            .collect()
    }

    /// Entry keys on every primary, and checks each primary's index matches its keys.
    pub fn assert_indexes_exact(&self) -> usize {
        let mut total = 0;
        for i in self.primaries() {
            let mut c = self.nodes[i].conn();
            // Keys a background purge hid are still there until it is done.
            assert!(eventually(30, || info_u64(&mut c, "purge_pending") == 0), "node {i}: background purges did not finish");
            let keys = entry_keys(&mut c);
            assert_eq!(info_u64(&mut c, "entries") as usize, keys.len(), "node {i}'s index does not match its entry keys {:?}", &keys[..keys.len().min(5)]);
            total += keys.len();
        }
        total
    }
}

/// A minimal cluster client, as cluster clients behave: follows MOVED and ASK
/// (sending ASKING first) and retries TRYAGAIN after a short pause.
pub struct Router {
    conns: std::collections::HashMap<u16, Connection>,
    start: u16,
    /// TRYAGAIN replies seen (retried).
    pub tryagains: u64,
}

impl Router {
    pub fn new(start_port: u16) -> Router {
        Router { conns: Default::default(), start: start_port, tryagains: 0 }
    }

    fn conn(&mut self, port: u16) -> &mut Connection {
        self.conns.entry(port).or_insert_with(|| {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("client");
            let c = client.get_connection_with_timeout(std::time::Duration::from_secs(5)).expect("connect");
            c.set_read_timeout(Some(std::time::Duration::from_secs(30))).expect("timeout");
            c
        })
    }

    /// Runs `words`, routed; the reply, or the first error that is no redirection.
    pub fn run<T: redis::FromRedisValue>(&mut self, words: &[&str]) -> redis::RedisResult<T> {
        let mut port = self.start;
        let mut asking = false;
        for _ in 0..2000 {
            let c = self.conn(port);
            if asking {
                cmd("ASKING").query::<()>(c)?;
            }
            let mut command = cmd(words[0]);
            for w in &words[1..] {
                command.arg(*w);
            }
            match command.query::<T>(c) {
                Ok(v) => return Ok(v),
                Err(e) if matches!(e.kind(), redis::ErrorKind::Moved | redis::ErrorKind::Ask) => {
                    asking = e.kind() == redis::ErrorKind::Ask;
                    let target = e.detail().and_then(|d| d.rsplit(':').next()).and_then(|p| p.parse().ok());
                    port = target.expect("a redirection names host:port");
                    if !asking {
                        self.start = port;
                    }
                }
                Err(e) if e.kind() == redis::ErrorKind::TryAgain => {
                    self.tryagains += 1;
                    asking = false;
                    port = self.start;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => return Err(e),
            }
        }
        panic!("{words:?}: still redirected after 2000 tries")
    }
}

/// Runs `words` on `node` until it answers anything but TRYAGAIN or CLUSTERDOWN (as
/// cluster clients retry them: the latter while a failover settles), for at most 30 s.
pub fn q_retrying<T: redis::FromRedisValue>(cl: &Cluster, node: usize, words: &[&str]) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let mut command = cmd(words[0]);
        for w in &words[1..] {
            command.arg(*w);
        }
        match command.query::<T>(&mut cl.nodes[node].conn()) {
            Err(e) if matches!(e.kind(), redis::ErrorKind::TryAgain | redis::ErrorKind::ClusterDown) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            other => return other.unwrap_or_else(|e| panic!("{words:?}: {e}")),
        }
    }
}
