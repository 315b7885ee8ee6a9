//! Failover on Patroni, tested by killing the leader: three PostgreSQL nodes with etcd,
//! two "hosts" (their own configs and certificates) logging users in continuously through
//! pamtester and the real module, and the leader's Patroni and PostgreSQL killed together
//! with SIGKILL, then restarted as after a crash and a reboot. No code is ever accepted
//! twice (a code spent just before the kill is refused after it), logins succeed again
//! after the switch, the old leader comes back as a replica, and no login after the kill
//! was accepted by it. Needs root; slow (about a minute).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use twofactor_core::clock::{Clock, SystemClock};
use twofactor_core::random::OsRandom;
use twofactor_core::totp::TotpParams;
use twofactor_testkit::patroni::HaCluster;
use twofactor_testkit::postgres::{ADMIN, HOSTS};
use twofactor_testkit::{Accounts, PamFixture, Syslog, enroll, pamtester_with, tag};

/// Users logging in; each can log in once per 30-second step.
const USERS: usize = 16;

/// One login through pamtester on `host`'s fixture: whether it was let in, the server
/// the module's audit line says decided it, and that line's reason.
fn login(f: &PamFixture, user: &str, code: &str) -> (bool, Option<String>, String) {
    let log = Syslog::new();
    let mut s = pamtester_with(&f.services(), "tf", user, None, &log.wrap());
    s.send(code);
    let (status, _) = s.finish();
    let lines = log.wait_for(&format!("user={user} "), 1);
    let server = lines.iter().find_map(|l| {
        l.split("server=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .map(str::to_string)
    });
    // Every decision of the login in order (a replay, then "no code entered" when
    // pamtester has no second line to type).
    let reason = lines
        .iter()
        .filter_map(|l| l.split(" reason=").nth(1))
        .map(|r| r.split(" server=").next().unwrap_or(r).trim_matches('"'))
        .collect::<Vec<_>>()
        .join(" / ");
    (status == Some(0), server, reason)
}

/// The port in a `host:port (address)` server name.
fn port_of(server: &str) -> Option<u16> {
    server
        .split_whitespace()
        .next()?
        .rsplit(':')
        .next()?
        .parse()
        .ok()
}

#[derive(Debug, Clone)]
struct Attempt {
    at: Duration,
    user: String,
    step: u64,
    code: String,
    host: usize,
    accepted: bool,
    server: Option<String>,
    reason: String,
}

impl Attempt {
    /// Refused without a decision on the code: no database could be reached in time, or
    /// the user's row was still held by a commit that a timed-out login left waiting for
    /// the new primary's synchronous standby (lock_timeout). Never a wrong or used code.
    fn undecided(&self) -> bool {
        !self.accepted && self.reason.starts_with("error: ")
    }
}

#[test]
fn killing_the_leader_accepts_no_code_twice_and_the_old_leader_rejoins_as_a_replica() {
    let mut ha = HaCluster::start();
    let admin = ha.backend(ADMIN);
    let mut accounts = Accounts::default();
    let home = tempfile::tempdir().unwrap();
    fs::set_permissions(home.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let t = tag() % 10_000;
    let users: Vec<(String, twofactor_core::totp::SecretKey)> = (0..USERS)
        .map(|i| {
            let name = format!("tfha{t}u{i}");
            accounts.login_user(&name, &home.path().join(&name), "pw");
            let (key, _) = enroll(&admin, &name, &mut OsRandom);
            (name, key)
        })
        .collect();
    drop(admin);
    let fixtures: Vec<PamFixture> = HOSTS
        .iter()
        .map(|h| {
            let f = PamFixture::new("");
            fs::write(
                f.config(),
                ha.config_text(h, "[enforce]\nall_users = true\n"),
            )
            .unwrap();
            fs::set_permissions(f.config(), fs::Permissions::from_mode(0o644)).unwrap();
            f.service(
                "tf",
                "auth requisite pam_permit.so\nauth required {module}\n",
            );
            f
        })
        .collect();
    let p = TotpParams::default();
    let start = Instant::now();
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut next = 0usize;
    let attempt = |attempts: &mut Vec<Attempt>, user: usize, host: usize, code: Option<String>| {
        let (name, key) = &users[user];
        let step = p.step_at(SystemClock.now());
        let code = code.unwrap_or_else(|| key.code_at_step(&p, step).to_string());
        let (accepted, server, reason) = login(&fixtures[host], name, &code);
        attempts.push(Attempt {
            at: start.elapsed(),
            user: name.clone(),
            step,
            code,
            host,
            accepted,
            server,
            reason,
        });
        attempts.last().unwrap().clone()
    };

    // 1. Logins before the kill, from both hosts, each user once.
    for u in 0..USERS / 2 {
        let a = attempt(&mut attempts, u, u % 2, None);
        assert!(a.accepted, "before the kill: {a:?}\n{}", ha.logs());
        next = u + 1;
    }
    // The code spent just before the kill, on host A.
    let spent = attempt(&mut attempts, next, 0, None);
    assert!(spent.accepted, "{spent:?}");
    let spent_user = next;
    next += 1;

    // 2. Kill the leader.
    let leader_port = ha.nodes[ha.leader().unwrap()].port;
    let killed_at = start.elapsed();
    let old = ha.kill_leader();
    println!(
        "{:>6.1} s: killed {} (Patroni and PostgreSQL, SIGKILL), the leader on port {leader_port}",
        killed_at.as_secs_f64(),
        ha.nodes[old].name
    );
    // Doctor's view with the leader down: that server cannot be reached.
    let seen = ha.backend(HOSTS[1]).probe_servers().unwrap();
    let dead = &seen[old];
    println!("doctor, leader down: {} {:?}", dead.server, dead.state);
    assert!(dead.state.is_err(), "{seen:?}");
    // The code spent just before the kill, again, on host B: refused now and ever.
    let replay_code = spent.code.clone();
    let mut replays = Vec::new();
    // 3. Logins go on until some succeed again; each user tries once per step.
    let mut recovered_at = None;
    let mut refused = 0usize;
    let deadline = Instant::now() + Duration::from_secs(90);
    // Each user logs in once per step: a second try in the same step is a replay.
    let mut tried: HashMap<(usize, u64), bool> = HashMap::new();
    for a in &attempts {
        let u = users.iter().position(|(n, _)| *n == a.user).unwrap();
        tried.insert((u, a.step), a.accepted);
    }
    while recovered_at.is_none() && Instant::now() < deadline {
        let r = attempt(&mut attempts, spent_user, 1, Some(replay_code.clone()));
        replays.push(r.clone());
        let u = next % USERS;
        next += 1;
        if u == spent_user {
            continue;
        }
        let step = p.step_at(SystemClock.now());
        if tried.contains_key(&(u, step)) {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        let a = attempt(&mut attempts, u, next % 2, None);
        tried.insert((u, step), a.accepted);
        if a.accepted {
            recovered_at = Some(a.at);
        } else {
            assert!(
                a.undecided(),
                "a fresh code refused for another reason: {a:?}"
            );
            refused += 1;
        }
    }
    let recovered_at =
        recovered_at.unwrap_or_else(|| panic!("no login succeeded after the kill:\n{}", ha.logs()));
    println!(
        "{:>6.1} s: logins succeed again, {:.1} s after the kill; {refused} refused in between",
        recovered_at.as_secs_f64(),
        (recovered_at - killed_at).as_secs_f64()
    );

    // 4. The old leader comes back, as after a reboot, and rejoins as a replica.
    ha.restart(old);
    let back_by = Instant::now() + Duration::from_secs(90);
    while !ha.is_replica(old) {
        assert!(
            Instant::now() < back_by,
            "the old leader never rejoined as a replica:\n{}",
            ha.logs()
        );
        // Keep logging users in meanwhile, and try the spent code again.
        let u = next % USERS;
        next += 1;
        let step = p.step_at(SystemClock.now());
        if u != spent_user && !tried.contains_key(&(u, step)) {
            let a = attempt(&mut attempts, u, next % 2, None);
            tried.insert((u, step), a.accepted);
        }
        let r = attempt(&mut attempts, spent_user, 0, Some(replay_code.clone()));
        replays.push(r);
        std::thread::sleep(Duration::from_millis(300));
    }
    let rejoined_at = start.elapsed();
    println!(
        "{:>6.1} s: {} is back as a replica; the leader is now {}",
        rejoined_at.as_secs_f64(),
        ha.nodes[old].name,
        ha.leader()
            .map_or("none".into(), |i| ha.nodes[i].name.clone())
    );
    // A few more logins with the old leader back, each on a fresh step of its user.
    for _ in 0..USERS {
        let u = next % USERS;
        next += 1;
        let step = p.step_at(SystemClock.now());
        if u != spent_user && !tried.contains_key(&(u, step)) {
            let a = attempt(&mut attempts, u, next % 2, None);
            tried.insert((u, step), a.accepted);
        }
    }
    let r = attempt(&mut attempts, spent_user, 1, Some(replay_code.clone()));
    replays.push(r);

    // The transcript from just before the kill on.
    for a in attempts
        .iter()
        .filter(|a| a.at + Duration::from_secs(2) >= killed_at)
    {
        println!(
            "{:>6.1} s  {}  {:<12} {}  {:<28} {}",
            a.at.as_secs_f64(),
            HOSTS[a.host],
            a.user,
            if a.accepted { "accepted" } else { "refused " },
            a.server.as_deref().unwrap_or("-"),
            a.reason
        );
    }
    // No code was ever accepted twice: per user and step, at most one acceptance.
    let mut accepted: HashMap<(String, u64), Vec<&Attempt>> = HashMap::new();
    for a in attempts.iter().filter(|a| a.accepted) {
        accepted
            .entry((a.user.clone(), a.step))
            .or_default()
            .push(a);
    }
    let twice: Vec<_> = accepted.values().filter(|v| v.len() > 1).collect();
    assert!(twice.is_empty(), "codes accepted twice: {twice:#?}");
    assert!(
        replays.iter().all(|r| !r.accepted),
        "the code spent before the kill was accepted again: {:?}",
        replays.iter().find(|r| r.accepted)
    );
    // Whenever a database decided on it, it said why: the code was already used, or,
    // two steps later, had expired.
    for r in replays.iter().filter(|r| !r.undecided()) {
        assert!(
            r.reason.starts_with("replay") || r.reason.starts_with("wrong code"),
            "{r:?}"
        );
    }
    // Every acceptance after the kill came from a server other than the old leader.
    let after: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.accepted && a.at > killed_at)
        .collect();
    assert!(!after.is_empty());
    for a in &after {
        let port = a.server.as_deref().and_then(port_of);
        assert!(port.is_some(), "no server in the audit line: {a:?}");
        assert_ne!(
            port,
            Some(leader_port),
            "accepted by the old leader after the kill: {a:?}"
        );
    }
    assert!(ha.is_replica(old));
    // What doctor reports of each server now: one primary, two standbys, all answering.
    let seen = ha.backend(HOSTS[0]).probe_servers().unwrap();
    for r in &seen {
        println!("doctor: {} {:?}", r.server, r.state);
    }
    assert!(seen.iter().all(|r| r.state.is_ok()), "{seen:?}");
    assert_eq!(
        seen.iter()
            .filter(|r| r.state.as_ref().is_ok_and(|s| s.primary))
            .count(),
        1,
        "{seen:?}"
    );
    let total = attempts.len();
    let ok = attempts.iter().filter(|a| a.accepted).count();
    println!(
        "FAILOVER: {total} logins, {ok} accepted, {refused} refused during the switch, \
         recovered {:.1} s after the kill, old leader a replica {:.1} s after the kill, \
         the spent code tried {} more times and refused each time, 0 codes accepted twice, \
         {} acceptances after the kill, none by the old leader",
        (recovered_at - killed_at).as_secs_f64(),
        (rejoined_at - killed_at).as_secs_f64(),
        replays.len(),
        after.len()
    );
}
