//! A throwaway high-availability fleet database: one etcd and three PostgreSQL nodes run
//! by Patroni (Debian's `patroni` and `etcd-server`), on loopback, as the unprivileged
//! `postgres` user, in a temp dir. Each node has its own TLS certificate from a throwaway
//! CA; Patroni writes the pg_hba and pg_ident lines twofactor needs on every node;
//! `synchronous_mode_strict` is on, with Patroni's timings shortened for tests. The
//! schema is installed by `fleet init` on the leader and each test host added with
//! `fleet add-host`. Everything is stopped and removed on drop. Needs root.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use twofactor_core::backend::postgresql::{self, Postgresql, Role};
use twofactor_core::config::PostgresqlSettings;

use crate::free_port;
use crate::postgres::{ADMIN, DBNAME, HOSTS, PG_BIN, as_postgres, issue, make_key, new_ca, pg};

/// Each node's Patroni config. Timings are shortened for tests (`loop_wait` + 2 ×
/// `retry_timeout` must not exceed `ttl`); `use_pg_rewind` with data checksums lets an
/// old leader rejoin as a replica; Patroni writes pg_hba and pg_ident on every node.
const PATRONI_YML: &str = r"scope: tfha
name: @NAME@
log:
  level: WARNING
restapi:
  listen: 127.0.0.1:@REST@
  connect_address: 127.0.0.1:@REST@
etcd3:
  hosts: 127.0.0.1:@ETCD@
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 2
    retry_timeout: 3
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    synchronous_mode_strict: true
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_log_hints: 'on'
        max_connections: 60
        shared_buffers: 16MB
  initdb:
  - encoding: UTF8
  - data-checksums
postgresql:
  listen: 127.0.0.1:@PORT@
  connect_address: 127.0.0.1:@PORT@
  data_dir: @NODE@/data
  bin_dir: @BIN@
  pgpass: @NODE@/pgpass
  authentication:
    superuser: {username: postgres, password: tf-super}
    replication: {username: replicator, password: tf-repl}
    rewind: {username: rewinder, password: tf-rewind}
  parameters:
    unix_socket_directories: @NODE@
    ssl: 'on'
    ssl_cert_file: @DIR@/@NAME@.crt
    ssl_key_file: @DIR@/@NAME@.key
    ssl_ca_file: @DIR@/ca.crt
    fsync: 'off'
  pg_hba:
  - local all all trust
  - host replication replicator 127.0.0.1/32 scram-sha-256
  - host all postgres,rewinder 127.0.0.1/32 scram-sha-256
  - hostssl @DB@ +twofactor_hosts,twofactor_admin 127.0.0.1/32 cert map=twofactor
  pg_ident:
@IDENT@";

/// How many PostgreSQL nodes.
pub const NODES: usize = 3;

/// One node: its PostgreSQL port and Patroni's REST port.
#[derive(Debug, Clone)]
pub struct Node {
    /// `node0`...
    pub name: String,
    /// PostgreSQL, on 127.0.0.1.
    pub port: u16,
    /// Patroni's REST API, on 127.0.0.1.
    pub rest: u16,
}

/// The running cluster.
#[derive(Debug)]
pub struct HaCluster {
    dir: tempfile::TempDir,
    /// The nodes, in the order hosts list them.
    pub nodes: Vec<Node>,
    etcd: Option<Child>,
    patroni: Vec<Option<Child>>,
}

fn postgres_ids() -> (u32, u32) {
    let user = nix::unistd::User::from_name("postgres")
        .unwrap()
        .expect("the postgres user (tests/setup installs postgresql)");
    (user.uid.as_raw(), user.gid.as_raw())
}

/// `GET path` on a Patroni REST port: the status code, or 0 if it cannot be reached.
pub fn rest_status(port: u16, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    ) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    if write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return (0, String::new());
    }
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    let code = reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

impl HaCluster {
    /// Starts etcd and three Patroni nodes, waits for a leader and a synchronous
    /// standby, creates the database, runs `fleet init` and adds [`HOSTS`].
    pub fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("tfha").tempdir().unwrap();
        let d = dir.path().to_path_buf();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        new_ca(&d, "ca");
        let nodes: Vec<Node> = (0..NODES)
            .map(|i| Node {
                name: format!("node{i}"),
                port: free_port(),
                rest: free_port(),
            })
            .collect();
        for n in &nodes {
            issue(&d, "ca", &n.name, Some("DNS:localhost,IP:127.0.0.1"));
        }
        for client in HOSTS.iter().chain([&ADMIN]) {
            issue(&d, "ca", client, None);
        }
        for f in fs::read_dir(&d).unwrap().flatten() {
            let is_key = f.path().extension().is_some_and(|e| e == "key");
            fs::set_permissions(
                f.path(),
                fs::Permissions::from_mode(if is_key { 0o600 } else { 0o644 }),
            )
            .unwrap();
        }
        for n in &nodes {
            for ext in ["crt", "key"] {
                crate::run(
                    "chown",
                    &[
                        "postgres",
                        d.join(format!("{}.{ext}", n.name)).to_str().unwrap(),
                    ],
                );
            }
        }
        // The key file: at the same path on every node (here, one machine).
        make_key(&d, "fleet.key");

        let (uid, gid) = postgres_ids();
        let etcd_dir = d.join("etcd");
        fs::create_dir(&etcd_dir).unwrap();
        fs::set_permissions(&etcd_dir, fs::Permissions::from_mode(0o700)).unwrap();
        crate::run("chown", &["postgres", etcd_dir.to_str().unwrap()]);
        let (client_port, peer_port) = (free_port(), free_port());
        let etcd_log = fs::File::create(d.join("etcd.log")).unwrap();
        let etcd = Command::new("etcd")
            .args(["--name", "tf", "--data-dir"])
            .arg(&etcd_dir)
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{client_port}"),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{client_port}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
                "--initial-cluster",
                &format!("tf=http://127.0.0.1:{peer_port}"),
                "--initial-cluster-state",
                "new",
                "--log-level",
                "warn",
            ])
            .uid(uid)
            .gid(gid)
            .stdout(etcd_log.try_clone().unwrap())
            .stderr(etcd_log)
            .spawn()
            .expect("etcd must be installed (tests/setup: etcd-server)");
        let mut cluster = Self {
            dir,
            nodes,
            etcd: Some(etcd),
            patroni: Vec::new(),
        };
        let ident: String = HOSTS
            .iter()
            .map(|h| format!("  - twofactor {h} {}\n", postgresql::host_role(h)))
            .chain([format!("  - twofactor {ADMIN} twofactor_admin\n")])
            .collect();
        for n in &cluster.nodes {
            let nd = d.join(&n.name);
            fs::create_dir(&nd).unwrap();
            fs::set_permissions(&nd, fs::Permissions::from_mode(0o700)).unwrap();
            crate::run("chown", &["postgres", nd.to_str().unwrap()]);
            let config = PATRONI_YML
                .replace("@NAME@", &n.name)
                .replace("@REST@", &n.rest.to_string())
                .replace("@ETCD@", &client_port.to_string())
                .replace("@PORT@", &n.port.to_string())
                .replace("@NODE@", &nd.display().to_string())
                .replace("@DIR@", &d.display().to_string())
                .replace("@BIN@", PG_BIN)
                .replace("@DB@", DBNAME)
                .replace("@IDENT@", &ident);
            let file = nd.join("patroni.yml");
            fs::write(&file, config).unwrap();
            crate::run("chown", &["postgres", file.to_str().unwrap()]);
        }
        for i in 0..NODES {
            let child = cluster.spawn_patroni(i);
            cluster.patroni.push(Some(child));
        }
        let leader = cluster.wait_for_leader(Duration::from_secs(90));
        cluster.wait_for_replicas(Duration::from_secs(90));
        let socket = d.join(&cluster.nodes[leader].name);
        as_postgres(&[
            &pg("createdb"),
            "-h",
            socket.to_str().unwrap(),
            "-p",
            &cluster.nodes[leader].port.to_string(),
            DBNAME,
        ]);
        let url = cluster.admin_url();
        let key = d.join("fleet.key");
        postgresql::init(&url, None, key.to_str().unwrap(), None).unwrap();
        for h in HOSTS {
            postgresql::add_host(&url, None, h, None).unwrap();
        }
        cluster
    }

    fn spawn_patroni(&self, i: usize) -> Child {
        let (uid, gid) = postgres_ids();
        let nd = self.path().join(&self.nodes[i].name);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path().join(format!("{}.log", self.nodes[i].name)))
            .unwrap();
        Command::new("patroni")
            .arg(nd.join("patroni.yml"))
            .env("HOME", &nd)
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("patroni must be installed (tests/setup)")
    }

    /// The cluster's directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The index of the node Patroni says leads now, if any.
    pub fn leader(&self) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| rest_status(n.rest, "/primary").0 == 200)
    }

    /// Waits until a node leads; its index.
    pub fn wait_for_leader(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            if let Some(i) = self.leader() {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "no Patroni leader; logs in {}",
                self.path().display()
            );
            thread::sleep(Duration::from_millis(300));
        }
    }

    /// Waits until every node but the leader is a streaming replica and one of them is
    /// the synchronous standby.
    pub fn wait_for_replicas(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let replicas = self
                .nodes
                .iter()
                .filter(|n| rest_status(n.rest, "/replica").0 == 200)
                .count();
            let sync = self
                .nodes
                .iter()
                .any(|n| rest_status(n.rest, "/sync").0 == 200);
            if replicas == NODES - 1 && sync {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{replicas} replicas, sync standby: {sync}; logs in {}",
                self.path().display()
            );
            thread::sleep(Duration::from_millis(300));
        }
    }

    /// Whether node `i` is a running replica now.
    pub fn is_replica(&self, i: usize) -> bool {
        rest_status(self.nodes[i].rest, "/replica").0 == 200
    }

    /// "Kills the leader" as a crash does: SIGKILL to its Patroni and its PostgreSQL
    /// together. Returns its index; [`Self::restart`] brings it back, as a reboot would.
    pub fn kill_leader(&mut self) -> usize {
        let i = self.leader().expect("a leader to kill");
        let pid_file = self
            .path()
            .join(&self.nodes[i].name)
            .join("data/postmaster.pid");
        let postmaster = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.lines().next().map(str::to_string));
        if let Some(mut child) = self.patroni[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(pid) = postmaster {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
        i
    }

    /// Starts node `i`'s Patroni again.
    pub fn restart(&mut self, i: usize) {
        let child = self.spawn_patroni(i);
        self.patroni[i] = Some(child);
    }

    /// The superuser's connection to the leader, over its socket.
    pub fn admin_url(&self) -> String {
        let i = self.leader().expect("a leader");
        format!(
            "host={} port={} user=postgres dbname={DBNAME}",
            self.path().join(&self.nodes[i].name).display(),
            self.nodes[i].port
        )
    }

    /// Settings for a client with certificate `client`, listing every node.
    pub fn settings(&self, client: &str) -> PostgresqlSettings {
        let d = self.path();
        PostgresqlSettings {
            hosts: self
                .nodes
                .iter()
                .map(|n| ("127.0.0.1".to_string(), n.port))
                .collect(),
            dbname: DBNAME.into(),
            ca: d.join("ca.crt"),
            cert: d.join(format!("{client}.crt")),
            key: d.join(format!("{client}.key")),
            connect_timeout_ms: 1000,
            statement_timeout_ms: 2000,
        }
    }

    /// A backend as host `client` (or the administrator) sees it.
    pub fn backend(&self, client: &str) -> Postgresql {
        let role = if client == ADMIN {
            Role::Admin
        } else {
            Role::Host
        };
        Postgresql::new(self.settings(client), role, 0)
    }

    /// The config file text for host `client`, with `extra` before `[storage]`.
    pub fn config_text(&self, client: &str, extra: &str) -> String {
        let s = self.settings(client);
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"127.0.0.1:{}\"", n.port))
            .collect();
        format!(
            "version = 1\n{extra}\n[storage]\nbackend = \"postgresql\"\n\
             [storage.postgresql]\nhosts = [{}]\ndbname = \"{DBNAME}\"\n\
             ca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nconnect_timeout_ms = {}\n\
             statement_timeout_ms = {}\n",
            hosts.join(", "),
            s.ca.display(),
            s.cert.display(),
            s.key.display(),
            s.connect_timeout_ms,
            s.statement_timeout_ms
        )
    }

    /// The Patroni and etcd logs, for a failed test.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for name in self.nodes.iter().map(|n| n.name.as_str()).chain(["etcd"]) {
            let text =
                fs::read_to_string(self.path().join(format!("{name}.log"))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("--- {name} ---\n"));
            for l in tail.iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.path().join(&self.nodes[i].name).join("data")
    }
}

impl Drop for HaCluster {
    fn drop(&mut self) {
        // Patroni stops its PostgreSQL on SIGTERM; anything left is stopped at once.
        for child in self.patroni.iter_mut().flatten() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for child in self.patroni.iter_mut().flatten() {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for i in 0..self.nodes.len() {
            let data = self.data_dir(i);
            if data.join("postmaster.pid").exists() {
                let _ = Command::new("runuser")
                    .args(["-u", "postgres", "--", &pg("pg_ctl"), "-D"])
                    .arg(&data)
                    .args(["-w", "-m", "immediate", "stop"])
                    .output();
            }
        }
        if let Some(mut etcd) = self.etcd.take() {
            let _ = etcd.kill();
            let _ = etcd.wait();
        }
    }
}
