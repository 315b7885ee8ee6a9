//! The fleet rows: pam_twofactor on a throwaway PostgreSQL 15 with TLS (testkit's
//! cluster), two hosts with their own certificates. TOTP runs on the database's clock,
//! so moving the client's clock gives no fresh code: every login here is a different
//! enrolled user at the real time, each used once. The users exist only for the
//! processes that log in, through nss_wrapper.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Instant;

use openssl::ssl::{SslConnector, SslFiletype, SslMethod};
use postgres_openssl::MakeTlsConnector;
use twofactor_core::auth::Purpose;
use twofactor_core::backend::Backend;
use twofactor_core::backend::postgresql::Postgresql;
use twofactor_core::clock::{Clock, SystemClock};
use twofactor_core::config::Config;
use twofactor_core::random::OsRandom;
use twofactor_testkit::postgres::{ADMIN, Cluster, DBNAME, HOSTS};
use twofactor_testkit::{enroll, pam_module_so};

use crate::{Answer, child_result, code_at, login_with, percentile, write};

/// Users made for the run; each logs in once.
const POOL: usize = 1_300;

struct Fleet {
    cluster: Cluster,
    dir: PathBuf,
    users: Vec<(String, String)>,
    next: usize,
}

impl Fleet {
    /// The next `n` unused (user, key) pairs.
    fn take(&mut self, n: usize) -> Vec<(String, String)> {
        let out = self.users[self.next..self.next + n].to_vec();
        self.next += n;
        out
    }

    fn child(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.env("LD_PRELOAD", "libpam_wrapper.so libnss_wrapper.so")
            .env("PAM_WRAPPER", "1")
            .env("PAM_WRAPPER_SERVICE_DIR", self.dir.join("pam.d"))
            .env("NSS_WRAPPER_PASSWD", self.dir.join("passwd"))
            .env("NSS_WRAPPER_GROUP", self.dir.join("group"));
        c
    }
}

fn setup() -> Fleet {
    let cluster = Cluster::start();
    let dir = tempfile::Builder::new()
        .prefix("tfbenchpg")
        .tempdir()
        .expect("tempdir")
        .keep();
    fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let mut passwd = fs::read_to_string("/etc/passwd").expect("passwd");
    for i in 0..POOL {
        let _ = writeln!(
            passwd,
            "tfpg{i:04}:x:{}:100::/nonexistent:/bin/sh",
            60_000 + i
        );
    }
    write(&dir.join("passwd"), &passwd, 0o644);
    write(
        &dir.join("group"),
        &fs::read_to_string("/etc/group").expect("group"),
        0o644,
    );
    fs::create_dir_all(dir.join("pam.d")).expect("pam.d");
    for (service, host) in [("pg-a", HOSTS[0]), ("pg-b", HOSTS[1])] {
        let config = dir.join(format!("{service}.toml"));
        write(
            &config,
            &cluster.config_text(host, "[enforce]\nall_users = true\n"),
            0o644,
        );
        write(
            &dir.join(format!("pam.d/{service}")),
            &format!(
                "auth required {} config={}\n",
                pam_module_so().display(),
                config.display()
            ),
            0o644,
        );
    }
    Fleet {
        cluster,
        dir,
        users: Vec::with_capacity(POOL),
        next: 0,
    }
}

impl Fleet {
    /// Enrolls pool users (through the admin role) until `n` are.
    fn enroll_up_to(&mut self, n: usize) {
        let admin = self.cluster.backend(ADMIN);
        while self.users.len() < n.min(POOL) {
            let name = format!("tfpg{:04}", self.users.len());
            let (key, _) = enroll(&admin, &name, &mut OsRandom);
            self.users.push((name, key.to_base32().to_string()));
        }
    }

    /// Adds copies of one enrolled row under other names until the database holds `n`.
    fn fill_to(&self, n: usize) {
        let have = self.users.len();
        if n <= have {
            return;
        }
        self.cluster.psql(
            DBNAME,
            &format!(
                "INSERT INTO twofactor.users (name, secret, key_id, authenticator_id, algorithm, \
                 digits, period, enabled, enrolled_at) \
                 SELECT 'filler' || g, u.secret, u.key_id, u.authenticator_id, u.algorithm, \
                 u.digits, u.period, true, u.enrolled_at \
                 FROM generate_series(1, {}) g, twofactor.users u WHERE u.name = 'tfpg0000' \
                 ON CONFLICT (name) DO NOTHING; ANALYZE twofactor.users",
                n - have
            ),
        );
    }

    fn count(&self) -> String {
        self.cluster
            .psql(DBNAME, "SELECT count(*) FROM twofactor.users")
            .trim()
            .to_string()
    }
}

/// Child: one pam_authenticate per "user key" line on stdin, at the real time, through
/// `service`; prints "median_us p99_us successes".
pub fn inproc_child(service: &str) {
    let mut input = String::new();
    let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut input);
    let mut times = Vec::new();
    let mut ok = 0;
    for line in input.lines() {
        let Some((user, key)) = line.split_once(' ') else {
            continue;
        };
        let code = code_at(key, SystemClock.now());
        let t = Instant::now();
        let accepted = twofactor_pam_client::Context::start(service, user, Answer(&code))
            .is_ok_and(|mut pam| pam.authenticate(0).is_ok());
        times.push(t.elapsed().as_secs_f64() * 1e6);
        ok += usize::from(accepted);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{:.1} {:.1} {ok}",
        percentile(&times, 0.5),
        percentile(&times, 0.99)
    );
}

fn inproc(f: &Fleet, service: &str, logins: &[(String, String)]) -> (f64, f64, usize) {
    let mut child = f
        .child(&std::env::current_exe().expect("exe"))
        .args(["--inproc-fleet", service])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("child");
    let lines: String = logins.iter().map(|(u, k)| format!("{u} {k}\n")).collect();
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(lines.as_bytes());
    child_result(&child.wait_with_output().expect("child"))
}

/// One pamtester login through `service`; whether it was accepted, and its wall time.
fn pamtester(f: &Fleet, service: &str, user: &str, code: &str) -> (bool, f64) {
    let mut cmd = f.child(Path::new("/usr/bin/pamtester"));
    cmd.args([service, user, "authenticate"]);
    login_with(cmd, code)
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (percentile(&v, 0.5), percentile(&v, 0.99))
}

/// The database floor: a bare TLS connect as the host, and one committed one-row UPDATE,
/// with the postgres crate and nothing of twofactor's (the TLS connector built once).
fn floor(f: &Fleet, runs: usize) -> (f64, f64) {
    // The host's own role, as `fleet add-host` made it.
    let role = twofactor_core::backend::postgresql::host_role(HOSTS[0]);
    f.cluster.psql(
        DBNAME,
        &format!(
            "CREATE TABLE IF NOT EXISTS public.bench_floor (id int PRIMARY KEY, n bigint); \
             INSERT INTO public.bench_floor VALUES (1, 0) ON CONFLICT DO NOTHING; \
             GRANT SELECT, UPDATE ON public.bench_floor TO {role}"
        ),
    );
    let s = f.cluster.settings(HOSTS[0]);
    let mut b = SslConnector::builder(SslMethod::tls_client()).expect("tls");
    b.set_ca_file(&s.ca).expect("ca");
    b.set_certificate_file(&s.cert, SslFiletype::PEM)
        .expect("cert");
    b.set_private_key_file(&s.key, SslFiletype::PEM)
        .expect("key");
    let tls = MakeTlsConnector::new(b.build());
    let (host, port) = s.hosts[0].clone();
    let mut config = postgres::Config::new();
    config
        .host(&host)
        .port(port)
        .dbname(DBNAME)
        .user(&role)
        .ssl_mode(postgres::config::SslMode::Require);
    let times = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let mut c = config.connect(tls.clone()).expect("floor connect");
            c.execute("UPDATE public.bench_floor SET n = n + 1 WHERE id = 1", &[])
                .expect("floor update");
            drop(c);
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    stats(times)
}

/// The module's database work split: a new connection (TCP, TLS with this host's
/// certificate, the first call), then the verify on it.
fn split(f: &mut Fleet, runs: usize) -> ((f64, f64), (f64, f64), usize) {
    let config = Config::default();
    let mut connect = Vec::new();
    let mut verify = Vec::new();
    let mut ok = 0;
    for (user, key) in f.take(runs) {
        let t = Instant::now();
        let db: Postgresql = f.cluster.backend(HOSTS[0]);
        db.facts(&user).expect("facts");
        connect.push(t.elapsed().as_secs_f64() * 1e6);
        let code = code_at(&key, SystemClock.now());
        let t = Instant::now();
        let r = db
            .verify(&user, &code, Purpose::Login, &config)
            .expect("verify");
        verify.push(t.elapsed().as_secs_f64() * 1e6);
        ok += usize::from(r.result.is_success());
    }
    (stats(connect), stats(verify), ok)
}

/// Logins started together as pamtester processes, alternating the two hosts; how many
/// were accepted, and the wall time.
fn parallel(f: &Fleet, logins: Vec<(String, String)>) -> (usize, f64) {
    let t = Instant::now();
    let accepted = thread::scope(|s| {
        let handles: Vec<_> = logins
            .iter()
            .enumerate()
            .map(|(i, (user, code))| {
                let service = ["pg-a", "pg-b"][i % 2];
                s.spawn(move || pamtester(f, service, user, code).0)
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(false))
            .filter(|b| *b)
            .count()
    });
    (accepted, t.elapsed().as_secs_f64())
}

pub fn run() {
    let mut f = setup();
    println!(
        "Fleet: pam_twofactor on PostgreSQL 15 (TLS, client certificates), two hosts; \
         each login a different enrolled user at the real time"
    );

    // Scale first, while the database is small; filler rows are copies of one enrolled row.
    let mut scale = Vec::new();
    for target in [100usize, 10_000, 100_000] {
        if target == 100 {
            f.enroll_up_to(100);
        } else {
            f.enroll_up_to(POOL);
            f.fill_to(target);
        }
        let logins = f.take(100);
        let (m, p, ok) = inproc(&f, "pg-a", &logins);
        scale.push(format!("| {} | {m:.1} | {p:.1} | {ok}/100 |", f.count()));
        if target == 100 {
            // The rest of the run uses the pool at 1,300 users.
            f.enroll_up_to(POOL);
        }
    }

    let logins = f.take(400);
    let (med, p99, ok) = inproc(&f, "pg-a", &logins);
    let (fmed, fp99) = floor(&f, 400);
    let ((cmed, cp99), (vmed, vp99), vok) = split(&mut f, 200);
    println!(
        "In-process pam_authenticate on the fleet database ({} users in it)",
        f.count()
    );
    println!("| case | median µs | p99 µs | accepted |");
    println!("|---|---:|---:|---:|");
    println!("| pam_twofactor, postgresql backend | {med:.1} | {p99:.1} | {ok}/400 |");
    println!("| of which: new connection (TCP, TLS, the first call) | {cmed:.1} | {cp99:.1} | |");
    println!(
        "| of which: from the code typed to the answer (the verify call) | {vmed:.1} | {vp99:.1} | {vok}/200 |"
    );
    println!("| database floor: TLS connect + one committed UPDATE | {fmed:.1} | {fp99:.1} | |");
    println!(
        "| ratio login / floor | {:.2} | {:.2} | |\n",
        med / fmed,
        p99 / fp99
    );

    let mut ms = Vec::new();
    let mut good = 0;
    for (user, key) in f.take(60) {
        let (accepted, t) = pamtester(&f, "pg-a", &user, &code_at(&key, SystemClock.now()));
        good += usize::from(accepted);
        ms.push(t);
    }
    let (pm, _) = stats(ms);
    println!("Whole process (pamtester) on the fleet database, 60 logins");
    // No ratio to another product: a number measured elsewhere, on other hardware, is
    // not one; peers are compared only when measured in the same run.
    println!("| module | median ms | accepted |");
    println!("|---|---:|---:|");
    println!("| pam_twofactor, postgresql backend | {pm:.2} | {good}/60 |\n");

    println!("Scale: users in the database (100 logins at each, in-process)");
    println!("| users in the database | median µs | p99 µs | accepted |");
    println!("|---:|---:|---:|---:|");
    for row in scale {
        println!("{row}");
    }
    println!();

    let now = SystemClock.now();
    let logins: Vec<_> = f
        .take(32)
        .into_iter()
        .map(|(u, k)| (u, code_at(&k, now)))
        .collect();
    let (ok, secs) = parallel(&f, logins);
    let (user, key) = f.take(1).remove(0);
    let code = code_at(&key, SystemClock.now());
    let (same, _) = parallel(&f, (0..20).map(|_| (user.clone(), code.clone())).collect());
    println!(
        "Concurrency on the fleet database (pamtester processes started together, hosts A and B alternating)"
    );
    println!("| case | result |");
    println!("|---|---|");
    println!(
        "| 32 logins of distinct users | {ok}/32 accepted, {} errors, {:.0} logins/s |",
        32 - ok,
        32.0 / secs
    );
    println!("| 20 logins of one user, the same TOTP code, both hosts | {same}/20 accepted |\n");
    let _ = fs::remove_dir_all(&f.dir);
}
