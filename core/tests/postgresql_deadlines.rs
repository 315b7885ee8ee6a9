//! Deadlines on every wait for the fleet database, measured on the client: a server that
//! accepts and never answers, a stopped postmaster, a commit waiting for a synchronous
//! standby that does not exist, and a dead first server before one that serves. Each
//! login is refused within addresses × connect_timeout + calls × statement_timeout (a hard
//! limit, checked with generous slack), the log names the server and the phase, and an
//! exempt account still logs in through real libpam. Needs root.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use twofactor_core::auth::{CodeResult, Purpose};
use twofactor_core::backend::postgresql::{Postgresql, Role};
use twofactor_core::backend::{Backend, BackendError};
use twofactor_core::random::OsRandom;
use twofactor_core::totp::TotpParams;
use twofactor_testkit::conformance::{now, race_config};
use twofactor_testkit::postgres::{ADMIN, Cluster, HOSTS};
use twofactor_testkit::{Accounts, PamFixture, enroll, pamtester, run, tag};

const CONNECT_MS: u64 = 700;
const STATEMENT_MS: u64 = 700;
/// Slack on top of each bound: process start, TLS setup, a loaded machine.
const SLACK: Duration = Duration::from_millis(2500);

/// A listener that accepts every connection and never says a word, as a server stuck on
/// a dead disk or stopped with SIGSTOP does. The connections stay open while it lives.
struct Silent {
    port: u16,
    _held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Silent {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&held);
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                keep.lock().unwrap().push(s);
            }
        });
        Self { port, _held: held }
    }
}

/// A host backend reaching `servers` (ports on 127.0.0.1) in order, with the test's
/// deadlines.
fn host_at(c: &Cluster, servers: &[u16]) -> Postgresql {
    let mut s = c.settings(HOSTS[0]);
    s.hosts = servers
        .iter()
        .map(|p| ("127.0.0.1".to_string(), *p))
        .collect();
    s.connect_timeout_ms = CONNECT_MS;
    s.statement_timeout_ms = STATEMENT_MS;
    Postgresql::new(s, Role::Host, 0)
}

/// The login's bound: `addresses` × connect + `calls` × statement.
fn bound(addresses: u32, calls: u32) -> Duration {
    Duration::from_millis(CONNECT_MS) * addresses + Duration::from_millis(STATEMENT_MS) * calls
}

fn unreachable_within<T: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> Result<T, BackendError>,
) -> String {
    let t = Instant::now();
    let r = f();
    let took = t.elapsed();
    println!("{what}: refused after {took:?} (bound {limit:?}): {r:?}");
    assert!(
        took <= limit + SLACK,
        "{what}: took {took:?}, bound {limit:?}"
    );
    match r {
        Err(e @ BackendError::Unreachable { .. }) => {
            let m = e.to_string();
            assert!(
                m.starts_with("the two-factor database cannot be reached"),
                "{what}: {m}"
            );
            m
        }
        other => panic!("{what}: {other:?}"),
    }
}

#[test]
fn a_server_that_accepts_and_never_answers_is_given_up_on_in_time() {
    let c = Cluster::start();
    let silent = Silent::start();
    let b = host_at(&c, &[silent.port]);
    let m = unreachable_within("silent server", bound(1, 1), || b.facts("nobody"));
    assert!(
        m.contains(&format!("127.0.0.1:{}", silent.port)) && m.contains("(tls)"),
        "the server and the phase: {m}"
    );
    assert!(
        m.contains(&format!("no answer within {CONNECT_MS} ms")),
        "{m}"
    );

    // Through real libpam: the required user is refused in time, the exempt one gets in.
    let exempt = format!("tfdlx{}", tag() % 10_000);
    let user = format!("tfdlu{}", tag() % 10_000);
    let mut accounts = Accounts::default();
    let home = tempfile::tempdir().unwrap();
    for u in [&user, &exempt] {
        accounts.login_user(u, &home.path().join(u), "pw");
    }
    let f = PamFixture::new("");
    let mut settings = c.settings(HOSTS[0]);
    settings.connect_timeout_ms = CONNECT_MS;
    let config = format!(
        "version = 1\n[enforce]\nall_users = true\nexempt_users = [\"{exempt}\"]\n\
         [storage]\nbackend = \"postgresql\"\n[storage.postgresql]\n\
         hosts = [\"127.0.0.1:{}\"]\ndbname = \"twofactor\"\nca = \"{}\"\ncert = \"{}\"\n\
         key = \"{}\"\nconnect_timeout_ms = {CONNECT_MS}\nstatement_timeout_ms = {STATEMENT_MS}\n",
        silent.port,
        settings.ca.display(),
        settings.cert.display(),
        settings.key.display()
    );
    fs::write(f.config(), config).unwrap();
    fs::set_permissions(f.config(), fs::Permissions::from_mode(0o644)).unwrap();
    f.service(
        "tf",
        "auth requisite pam_permit.so\nauth required {module}\n",
    );
    let t = Instant::now();
    let (code, text) = pamtester(&f.services(), "tf", &user, None).finish();
    let took = t.elapsed();
    println!("pamtester, required user, silent server: {took:?}\n{text}");
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("cannot be reached"), "{text}");
    // The routing facts: one connection (one address) and one call.
    assert!(took <= bound(1, 1) + SLACK, "took {took:?}");
    let t = Instant::now();
    let (code, text) = pamtester(&f.services(), "tf", &exempt, None).finish();
    println!(
        "pamtester, exempt user, silent server: {:?}\n{text}",
        t.elapsed()
    );
    assert_eq!(code, Some(0), "the exempt account was shut out:\n{text}");
}

#[test]
fn a_stopped_postmaster_and_a_stopped_backend_are_given_up_on_in_time() {
    let c = Cluster::start();
    let (key, _) = enroll(&c.backend(ADMIN), "stopped", &mut OsRandom);
    let pid = fs::read_to_string(c.path().join("data/postmaster.pid")).unwrap();
    let pid = pid.lines().next().unwrap().trim().to_string();

    // A connection opened before the stop: its call runs out of time.
    let open = host_at(&c, &[c.port]);
    assert!(open.facts("stopped").unwrap().is_enrolled());
    let backend_pid = c.psql(
        "postgres",
        "SELECT pid FROM pg_stat_activity WHERE usename LIKE 'tf_host_%' LIMIT 1",
    );
    run("kill", &["-STOP", &pid, backend_pid.trim()]);
    let p = TotpParams::default();
    let totp = key.code_at_step(&p, p.step_at(now())).to_string();
    let m = unreachable_within("stopped backend, open connection", bound(0, 1), || {
        open.verify("stopped", &totp, Purpose::Login, &race_config())
    });
    assert!(m.contains("(call)"), "{m}");
    // A new connection: the kernel accepts, the postmaster never answers.
    let fresh = host_at(&c, &[c.port]);
    let m = unreachable_within("stopped postmaster", bound(1, 1), || {
        fresh.verify("stopped", &totp, Purpose::Login, &race_config())
    });
    assert!(m.contains("(tls)"), "{m}");
    run("kill", &["-CONT", &pid, backend_pid.trim()]);
    // Nothing was spent while it was stopped.
    assert_eq!(
        host_at(&c, &[c.port])
            .verify("stopped", &totp, Purpose::Login, &race_config())
            .unwrap()
            .result,
        CodeResult::Totp
    );
}

#[test]
fn a_commit_waiting_for_a_missing_synchronous_standby_is_given_up_on_in_time() {
    let c = Cluster::start();
    let (key, _) = enroll(&c.backend(ADMIN), "syncwait", &mut OsRandom);
    c.psql(
        "postgres",
        "ALTER SYSTEM SET synchronous_standby_names = 'a_standby_that_is_not_there'",
    );
    c.psql("postgres", "SELECT pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(300));
    let b = host_at(&c, &[c.port]);
    let p = TotpParams::default();
    let totp = key.code_at_step(&p, p.step_at(now())).to_string();
    // facts reads only (no commit to wait for); the verify's commit waits.
    assert!(b.facts("syncwait").unwrap().is_enrolled());
    let m = unreachable_within("commit waiting for a standby", bound(0, 1), || {
        b.verify("syncwait", &totp, Purpose::Login, &race_config())
    });
    assert!(m.contains("(call)"), "{m}");
    c.psql("postgres", "ALTER SYSTEM RESET synchronous_standby_names");
    c.psql("postgres", "SELECT pg_reload_conf()");
}

#[test]
fn a_dead_first_server_is_passed_over_for_one_that_serves() {
    let c = Cluster::start();
    let p = TotpParams::default();
    // A refused port fails at once; a silent one takes its whole budget.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let silent = Silent::start();
    // Two connections' budgets (the dead server's and the live one's), two calls.
    for (what, user, first) in [
        ("a refused first server", "failover1", closed),
        ("a silent first server", "failover2", silent.port),
    ] {
        let (key, _) = enroll(&c.backend(ADMIN), user, &mut OsRandom);
        let b = host_at(&c, &[first, c.port]);
        let t = Instant::now();
        assert!(b.facts(user).unwrap().is_enrolled());
        let code = key.code_at_step(&p, p.step_at(now())).to_string();
        let r = b
            .verify(user, &code, Purpose::Login, &race_config())
            .unwrap()
            .result;
        let took = t.elapsed();
        println!(
            "{what}: served by the second after {took:?} (bound {:?})",
            bound(2, 2)
        );
        assert!(took <= bound(2, 2) + SLACK, "{what}: {took:?}");
        assert_eq!(r, CodeResult::Totp, "{what}");
    }
}
