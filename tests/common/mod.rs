//! Test harness: real `redis-server` processes with the module loaded, on free
//! loopback ports, killed when the handle drops (also when a test fails).
#![allow(dead_code)]

pub mod cluster;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use redis::{cmd, Connection, Value};

/// The module under test: `RCACHE_MODULE`, or the release build of this checkout.
pub fn module_path() -> PathBuf {
    let path = std::env::var_os("RCACHE_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/librcache.so"));
    assert!(path.exists(), "module not built: {} (run `make build`)", path.display());
    path
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// A fresh working directory for one server (its RDB / AOF files live there).
pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "rcache-test-{}-{}",
        std::process::id(),
        DIRS.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

pub struct Server {
    pub port: u16,
    pub dir: PathBuf,
    /// A configuration file given before the arguments (`start_with_conf`).
    conf: Option<PathBuf>,
    args: Vec<String>,
    child: Option<Child>,
}

impl Server {
    /// Starts a server with the module and `extra` redis-server arguments
    /// (`["--maxmemory", "10mb"]`); `module_args` go after the module path.
    pub fn start_with(extra: &[&str], module_args: &[&str]) -> Server {
        let mut args: Vec<String> = vec!["--save".into(), "".into(), "--appendonly".into(), "no".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push("--loadmodule".into());
        args.push(module_path().display().to_string());
        args.extend(module_args.iter().map(|s| s.to_string()));
        let mut server = Server { port: free_port(), dir: temp_dir(), conf: None, args, child: None };
        server.spawn();
        server
    }

    /// A server without the module (to load it later with MODULE LOAD).
    pub fn start_plain() -> Server {
        let mut server = Server { port: free_port(), dir: temp_dir(), conf: None, args: vec!["--save".into(), "".into(), "--enable-module-command".into(), "yes".into()], child: None };
        server.spawn();
        server
    }

    pub fn start() -> Server {
        Self::start_with(&[], &[])
    }

    /// Starts a server from a configuration file's text (as an operator would), with
    /// its port, address, directory and log file overridden and `extra` arguments.
    pub fn start_with_conf(conf: &str, extra: &[&str]) -> Server {
        let dir = temp_dir();
        let path = dir.join("test.conf");
        std::fs::write(&path, conf).expect("write the configuration");
        let args = extra.iter().map(|s| s.to_string()).collect();
        let mut server = Server { port: free_port(), dir, conf: Some(path), args, child: None };
        server.spawn();
        server
    }

    /// Kills the server with SIGKILL (a crash: nothing is saved) and starts it again
    /// on the same port, directory and arguments.
    pub fn crash_and_restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Kills the server with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            let _ = child.wait();
        }
    }

    fn spawn(&mut self) {
        let child = Command::new(std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into()))
            .args(&self.conf)
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (is it installed? `make test` installs it)");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("redis-server exited ({status}); log:\n{}", self.log());
            }
            if let Ok(mut c) = self.try_conn() {
                // Still loading data answers LOADING: wait until it serves.
                if cmd("PING").query::<String>(&mut c).is_ok() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn try_conn(&self) -> redis::RedisResult<Connection> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))?;
        client.get_connection_with_timeout(Duration::from_secs(5))
    }

    pub fn conn(&self) -> Connection {
        let c = self.try_conn().expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        c
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// Stops the server (SHUTDOWN SAVE or NOSAVE) and starts it again on the same
    /// port and directory, with `extra` appended to its arguments.
    pub fn restart(&mut self, save: bool, extra: &[&str]) {
        let mut c = self.conn();
        let _: redis::RedisResult<()> = cmd("SHUTDOWN").arg(if save { "SAVE" } else { "NOSAVE" }).query(&mut c);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        self.args.extend(extra.iter().map(|s| s.to_string()));
        self.spawn();
    }

    /// Sends a signal (`STOP`, `CONT`, ...) to the server process.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill").arg(format!("-{name}")).arg(pid).status().expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Kills the server with SIGKILL (no shutdown, no save) and starts it again on the
    /// same port and directory, with `extra` appended to its arguments.
    /// Whether the process is still running (it did not crash).
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `INFO rcache` as (field without the `rcache_` prefix, value) pairs.
pub fn info(c: &mut Connection) -> std::collections::HashMap<String, String> {
    let text: String = cmd("INFO").arg("rcache").query(c).expect("INFO rcache");
    text.lines()
        .filter_map(|l| l.strip_prefix("rcache_"))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

pub fn info_u64(c: &mut Connection, field: &str) -> u64 {
    info(c).get(field).unwrap_or_else(|| panic!("INFO rcache has no {field}")).parse().expect("number")
}

/// Runs a command given as words; panics with the command on error.
pub fn q<T: redis::FromRedisValue>(c: &mut Connection, words: &[&str]) -> T {
    let mut command = cmd(words[0]);
    for w in &words[1..] {
        command.arg(*w);
    }
    command.query(c).unwrap_or_else(|e| panic!("{words:?}: {e}"))
}

/// `RCACHE.SET words…`, which must reply OK.
pub fn set(c: &mut Connection, words: &[&str]) {
    let mut all = vec!["RCACHE.SET"];
    all.extend_from_slice(words);
    assert_eq!(q::<String>(c, &all), "OK", "{all:?}");
}

/// `RCACHE.GET words…`: the value, or None on a miss.
pub fn get(c: &mut Connection, words: &[&str]) -> Option<Vec<u8>> {
    let mut all = vec!["RCACHE.GET"];
    all.extend_from_slice(words);
    q(c, &all)
}

/// Runs a command that must fail; returns the error text.
pub fn q_err(c: &mut Connection, words: &[&str]) -> String {
    let mut command = cmd(words[0]);
    for w in &words[1..] {
        command.arg(*w);
    }
    match command.query::<Value>(c) {
        Ok(v) => panic!("{words:?} should fail, got {v:?}"),
        Err(e) => {
            let code = e.code().unwrap_or("");
            let detail = e.detail().unwrap_or("");
            format!("{code} {detail}").trim().to_string()
        }
    }
}

/// The entry keys (rcache:*) in the selected database, sorted.
pub fn entry_keys(c: &mut Connection) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("rcache:*").query(c).expect("KEYS");
    // Not the bookkeeping keys of purges still running in the background.
    keys.retain(|k| !k.starts_with("rcache:#purge:"));
    keys.sort();
    keys
}

/// Waits until `f` holds (up to `secs`), for effects that are asynchronous.
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}
