//! The fleet backend against a real PostgreSQL 15 (a throwaway cluster with TLS, started
//! by testkit): the conformance races, the SQL TOTP against core's, what a host role may
//! not do, TLS refusals, an outage, and no thread in the calling process. Needs root.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::{Read, Write};
use std::net::TcpListener;

use twofactor_core::auth::{CodeResult, Purpose};
use twofactor_core::backend::postgresql::{AuditFilter, Postgresql, Role};
use twofactor_core::backend::{Authority, Backend, BackendError, Enrolled};
use twofactor_core::config::Config;
use twofactor_core::enroll::{Enrollment, SaveSettings};
use twofactor_core::random::{OsRandom, Random};
use twofactor_core::totp::{Algorithm, SecretKey, TotpParams};
use twofactor_testkit::behaviour;
use twofactor_testkit::conformance::{self, now, race_config};
use twofactor_testkit::enroll_with_codes;
use twofactor_testkit::postgres::{ADMIN, Cluster, HOSTS, STRANGER};

fn host(c: &Cluster, i: usize) -> Box<dyn Backend> {
    Box::new(c.backend(HOSTS[i]))
}

fn admin(c: &Cluster) -> Box<dyn Backend> {
    Box::new(c.backend(ADMIN))
}

fn settings() -> SaveSettings {
    SaveSettings {
        window: 1,
        backup_codes: 20,
    }
}

/// Enrolls `user` through the admin role; returns the key and its backup codes.
fn enroll(c: &Cluster, user: &str) -> (SecretKey, Vec<String>) {
    enroll_with_codes(&*admin(c), user, 20, &mut OsRandom)
}

fn code(key: &SecretKey) -> String {
    let p = TotpParams::default();
    key.code_at_step(&p, p.step_at(now())).to_string()
}

/// The backend's behaviour table (testkit's `behaviour`), on the fleet database: the
/// admin role for an administrator's changes, a host's role for logins and proof.
#[test]
fn the_behaviour_table_passes_on_postgresql() {
    let c = &Cluster::start();
    // The database lengthens any lock to its floor (60 s), which a host's config cannot
    // lower; the table's locks last a second, so an administrator lowers it here.
    c.psql(
        "twofactor",
        "UPDATE twofactor.settings SET lock_seconds_floor = 1",
    );
    behaviour::check(
        "PostgreSQL",
        &behaviour::Stores {
            admin: &|| admin(c),
            host: &|| host(c, 0),
        },
    );
}

#[test]
fn conformance_races_pass_with_hosts_racing() {
    let c = &Cluster::start();
    // Enrollment without a code is an administrator's; the races run as both hosts.
    conformance::all(&|| admin(c));
}

#[test]
fn both_stores_agree_on_replays_and_turned_off_authenticators() {
    let c = &Cluster::start();
    conformance::a_replay_is_refused_and_not_counted(&|| admin(c));
    conformance::a_turned_off_authenticator_is_replaced_at_login(&|| admin(c), &|| host(c, 1));
}

/// Replacing an authenticator (`enroll --replace`) with a mistyped code spends nothing:
/// the ticket of the verify on the old one still pays for the next, right code.
#[test]
fn a_mistyped_code_when_replacing_keeps_the_ticket() {
    let c = &Cluster::start();
    let (key, _) = enroll(c, "mover");
    let h = c.backend(HOSTS[0]);
    let checked = h
        .verify("mover", &code(&key), Purpose::Change, &race_config())
        .unwrap();
    assert_eq!(checked.result, CodeResult::Totp);
    let proof = checked.proof.unwrap();
    let expected = h.facts("mover").unwrap().authenticator_id().cloned();
    let e = Enrollment::new(&Config::default(), "mover", "x", &mut OsRandom).unwrap();
    let right = e
        .secret()
        .code_at_step(e.params(), e.params().step_at(now()))
        .to_string();
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    let enroll_with = |code: &str, authority| {
        h.enroll(
            "mover",
            &e,
            Some(code),
            expected.as_ref(),
            authority,
            settings(),
            &mut OsRandom,
        )
    };
    let Enrolled::Mismatch(back) = enroll_with(wrong, Some(Authority::Verified(proof))).unwrap()
    else {
        panic!("a wrong code saved");
    };
    assert!(matches!(back, Some(Authority::Verified(_))), "{back:?}");
    assert!(enroll_with(&right, back).unwrap().saved().is_some());
    // The mistyped enrolment reached the fleet's audit ('twofactor log'), not only the
    // host's syslog.
    let rows = c
        .backend(ADMIN)
        .audit(&AuditFilter {
            user: Some("mover"),
            host: None,
            outcome: None,
            since: None,
            limit: 100,
        })
        .unwrap();
    let enrol: Vec<&str> = rows
        .iter()
        .filter(|r| r.action == "enrol")
        .map(|r| r.outcome.as_str())
        .collect();
    assert_eq!(enrol, ["saved", "wrong code"], "{rows:?}");
}

#[test]
fn one_code_sent_twenty_times_at_once_from_two_hosts_logs_in_once() {
    let c = &Cluster::start();
    let (key, _) = enroll(c, "fleet0");
    let totp = code(&key);
    let config = race_config();
    let results: Vec<CodeResult> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let (totp, config) = (&totp, &config);
                s.spawn(move || {
                    host(c, i % 2)
                        .verify("fleet0", totp, Purpose::Login, config)
                        .unwrap()
                        .result
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wins = results.iter().filter(|r| r.is_success()).count();
    println!("20 concurrent logins with one code from two hosts: {wins} accepted");
    assert_eq!(wins, 1, "{results:?}");
}

#[test]
fn the_sql_totp_agrees_with_core_on_random_secrets_and_the_rfc_vectors() {
    let c = &Cluster::start();
    // RFC 6238 appendix B, SHA1, 8 digits.
    let rfc = c.psql(
        "twofactor",
        "SELECT twofactor.totp_code(convert_to('12345678901234567890','UTF8'),'SHA1',8,59/30) \
         || ' ' || twofactor.totp_code(convert_to('12345678901234567890','UTF8'),'SHA1',8,1111111109/30)",
    );
    assert_eq!(rfc.trim(), "94287082 07081804");
    let mut rng = OsRandom;
    let mut queries = Vec::new();
    let mut expected = Vec::new();
    for i in 0..120 {
        let mut b = [0u8; 4];
        rng.fill(&mut b).unwrap();
        let algorithm = [Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha512][i % 3];
        let digits = if b[0] % 2 == 0 { 6 } else { 8 };
        let len = [10usize, 20, 32, 64][usize::from(b[1] % 4)];
        let mut raw = vec![0u8; len];
        rng.fill(&mut raw).unwrap();
        let key = SecretKey::from_bytes(raw.clone()).unwrap();
        let step = u64::from(u32::from_be_bytes(b)) % 200_000_000;
        let p = TotpParams {
            algorithm,
            digits,
            period: 30,
        };
        expected.push(key.code_at_step(&p, step).to_string());
        let hex: String = raw.iter().map(|x| format!("{x:02x}")).collect();
        queries.push(format!(
            "SELECT twofactor.totp_code('\\x{hex}'::bytea, '{}', {digits}, {step})",
            algorithm.as_str()
        ));
    }
    let got = c.psql("twofactor", &queries.join(" UNION ALL "));
    let got: Vec<&str> = got.lines().collect();
    assert_eq!(got, expected);
}

#[test]
fn a_code_spent_on_one_host_is_refused_on_the_other_and_backup_codes_go_once() {
    let c = &Cluster::start();
    let (key, backups) = enroll(c, "fleet1");
    let config = race_config();
    let totp = code(&key);
    assert_eq!(
        host(c, 0)
            .verify("fleet1", &totp, Purpose::Login, &config)
            .unwrap()
            .result,
        CodeResult::Totp
    );
    assert!(matches!(
        host(c, 1)
            .verify("fleet1", &totp, Purpose::Login, &config)
            .unwrap()
            .result,
        CodeResult::Replayed
    ));
    assert_eq!(
        host(c, 0)
            .verify("fleet1", &backups[0], Purpose::Login, &config)
            .unwrap()
            .result,
        CodeResult::BackupCode { left: 19 }
    );
    assert!(matches!(
        host(c, 1)
            .verify("fleet1", &backups[0], Purpose::Login, &config)
            .unwrap()
            .result,
        CodeResult::Wrong { .. }
    ));
    // 19 different backup codes spent at once from both hosts: each exactly once.
    let results: Vec<CodeResult> = std::thread::scope(|s| {
        let handles: Vec<_> = backups[1..]
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let config = &config;
                s.spawn(move || {
                    host(c, i % 2)
                        .verify("fleet1", b, Purpose::Login, config)
                        .unwrap()
                        .result
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        results
            .iter()
            .all(|r| matches!(r, CodeResult::BackupCode { .. })),
        "{results:?}"
    );
    assert_eq!(admin(c).facts("fleet1").unwrap().backup_codes_left, 0);
}

#[test]
fn wrong_codes_on_both_hosts_lock_everywhere_and_an_admin_unlock_clears_it() {
    let c = &Cluster::start();
    let (key, _) = enroll(c, "fleet2");
    let mut config = Config::default();
    config.lockout.max_failures = 4;
    config.lockout.lock_seconds = 300;
    for i in 0..3 {
        assert!(matches!(
            host(c, i % 2)
                .verify("fleet2", "000000", Purpose::Login, &config)
                .unwrap()
                .result,
            CodeResult::Wrong { locked_for: None }
        ));
    }
    assert_eq!(
        host(c, 1)
            .verify("fleet2", "000000", Purpose::Login, &config)
            .unwrap()
            .result,
        CodeResult::Wrong {
            locked_for: Some(300)
        }
    );
    for i in 0..2 {
        assert!(matches!(
            host(c, i)
                .verify("fleet2", &code(&key), Purpose::Login, &config)
                .unwrap()
                .result,
            CodeResult::Locked { .. }
        ));
    }
    // A host cannot unlock.
    assert!(host(c, 0).unlock("fleet2").is_err());
    assert!(admin(c).unlock("fleet2").unwrap().is_some());
    assert_eq!(
        host(c, 0)
            .verify("fleet2", &code(&key), Purpose::Login, &config)
            .unwrap()
            .result,
        CodeResult::Totp
    );
}

#[test]
fn a_host_role_cannot_read_secrets_or_run_admin_functions_and_dumps_hold_no_secret() {
    let c = &Cluster::start();
    let (key, _) = enroll(c, "fleet3");
    let h = c.backend(HOSTS[0]);
    let denied = |sql: &str| {
        let err = h.probe(sql).unwrap_err();
        assert!(err.contains("permission denied"), "{sql}: {err}");
    };
    for table in [
        "users",
        "backup_codes",
        "trusted_hosts",
        "audit",
        "keys",
        "settings",
        "meta",
    ] {
        denied(&format!("SELECT * FROM twofactor.{table}"));
    }
    for f in [
        "twofactor.a_reset('fleet3', true)",
        "twofactor.a_unlock('fleet3')",
        "twofactor.a_set_enabled('fleet3', false)",
        "twofactor.a_users()",
        "twofactor.key(1)",
        "twofactor.decrypt('\\x00'::bytea, 1)",
        "twofactor.totp_code('\\x00'::bytea, 'SHA1', 6, 1)",
        "twofactor.install('fleet3', '\\x00'::bytea, 'SHA1', 6, 30, NULL, NULL)",
        "twofactor.need_ticket('fleet3', '\\x00'::bytea, 'x')",
        "pg_read_file('/etc/passwd')",
    ] {
        denied(&format!("SELECT {f}"));
    }
    // Through the trait too: no disable, reset or re-key without the admin role.
    assert!(matches!(
        h.set_enabled("fleet3", Authority::Admin, false),
        Err(BackendError::Refused(_))
    ));
    assert!(matches!(h.reset("fleet3"), Err(BackendError::Refused(_))));
    assert!(matches!(
        h.remove_authenticator("fleet3", Authority::Admin),
        Err(BackendError::Refused(_))
    ));
    let forged = h
        .probe("SELECT twofactor.h_remove('fleet3', '\\x00'::bytea)")
        .unwrap_err();
    assert!(forged.contains("needs a current code"), "{forged}");
    let other = Enrollment::new(&Config::default(), "fleet3", "x", &mut OsRandom).unwrap();
    let new_code = other
        .secret()
        .code_at_step(other.params(), other.params().step_at(now()));
    let expected = h.facts("fleet3").unwrap().authenticator_id().cloned();
    assert!(matches!(
        h.enroll(
            "fleet3",
            &other,
            Some(&new_code),
            expected.as_ref(),
            None,
            settings(),
            &mut OsRandom
        ),
        Err(BackendError::Refused(_))
    ));
    assert!(
        admin(c)
            .facts("fleet3")
            .unwrap()
            .authenticator
            .unwrap()
            .enabled
    );
    // A dump of the database alone reveals no secret.
    let dump = c.dump();
    let hex: String = key.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert!(dump.contains("fleet3"), "the dump holds the users");
    assert!(!dump.contains(&*key.to_base32()) && !dump.contains(&hex));
}

#[test]
fn trust_granted_on_one_host_does_not_skip_the_code_on_another() {
    let c = &Cluster::start();
    use twofactor_core::trusted::RemoteHost;
    let (key, _) = enroll(c, "fleet4");
    let a = c.backend(HOSTS[0]);
    let client = RemoteHost::parse("192.0.2.7").unwrap();
    // No verify, no trust: only verify makes the proof trust_host takes.
    let checked = a
        .verify("fleet4", &code(&key), Purpose::Login, &race_config())
        .unwrap();
    assert_eq!(checked.result, CodeResult::Totp);
    a.trust_host(checked.proof.unwrap(), "sshd", &client, 30)
        .unwrap();
    assert_eq!(a.facts("fleet4").unwrap().trusted_devices.0.len(), 1);
    assert!(
        host(c, 1)
            .facts("fleet4")
            .unwrap()
            .trusted_devices
            .0
            .is_empty()
    );
}

#[test]
fn tls_refusals_plain_server_other_ca_wrong_name_and_unmapped_certificate() {
    let c = &Cluster::start();
    let fails = |settings, role| {
        let b = Postgresql::new(settings, role, 0);
        match b.facts("nobody") {
            Err(e @ BackendError::Unreachable { .. }) => e.to_string(),
            other => panic!("connected: {other:?}"),
        }
    };
    // A server that answers the TLS request with "no".
    let plain = TcpListener::bind("127.0.0.1:0").unwrap();
    let plain_port = plain.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let (mut s, _) = plain.accept().unwrap();
        let mut req = [0u8; 8];
        s.read_exact(&mut req).unwrap();
        s.write_all(b"N").unwrap();
    });
    let m = fails(
        c.settings_for(HOSTS[0], "ca", "127.0.0.1", plain_port),
        Role::Host,
    );
    t.join().unwrap();
    assert!(
        m.contains("TLS") || m.contains("tls") || m.contains("ssl"),
        "{m}"
    );
    // A CA that did not sign the server's certificate.
    let m = fails(
        c.settings_for(HOSTS[0], "other-ca", "127.0.0.1", c.port),
        Role::Host,
    );
    assert!(m.contains("certificate verify failed"), "{m}");
    // A certificate from the right CA that the server does not map.
    // A certificate from the right CA that the server does not map: its would-be role
    // is no member of twofactor_hosts, and the shared role does not exist.
    let m = fails(c.settings(STRANGER), Role::Host);
    assert!(m.contains("no pg_hba.conf entry"), "{m}");
    assert!(m.contains("tf_host_stranger"), "{m}");
    // A host certificate asking for the admin role.
    let m = fails(c.settings(HOSTS[0]), Role::Admin);
    assert!(m.contains("certificate authentication failed"), "{m}");
}

/// One function the Rust code calls: its name and its arguments as written (`p_x => $1`
/// or positional).
fn sql_calls(source: &str) -> Vec<(String, Vec<String>)> {
    let mut calls = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find("twofactor.") {
        rest = &rest[at + "twofactor.".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let is_api = name.starts_with("h_") || name.starts_with("a_");
        let Some(args) = rest[name.len()..].strip_prefix('(') else {
            continue;
        };
        if !is_api {
            continue;
        }
        let end = args.find(')').expect("a closing parenthesis");
        let args: Vec<String> = args[..end]
            .replace('\\', " ")
            .split(',')
            .map(|a| a.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|a| !a.is_empty())
            .collect();
        calls.push((name, args));
    }
    calls
}

/// The SQL is a checked artefact: every function the Rust code calls exists with the
/// arguments it passes (by name where it names them), the host group may run exactly
/// the host functions the code calls and nothing else, administrators every function
/// the code calls, and PUBLIC nothing in the schema.
#[test]
fn the_functions_the_code_calls_match_the_catalog_and_the_grants() {
    let c = &Cluster::start();
    let calls = sql_calls(include_str!("../src/backend/postgresql.rs"));
    assert!(calls.len() >= 20, "found only {calls:?}");
    let catalog = c.psql(
        "twofactor",
        "SELECT p.proname || '|' || coalesce(array_to_string(p.proargnames[1:p.pronargs], ','), '') \
         || '|' || p.pronargs || '|' || p.pronargdefaults \
         || '|' || has_function_privilege('twofactor_hosts', p.oid, 'EXECUTE') \
         || '|' || has_function_privilege('twofactor_admin', p.oid, 'EXECUTE') \
         || '|' || (SELECT count(*) FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a \
                    WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE') \
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
         WHERE n.nspname = 'twofactor' ORDER BY 1",
    );
    struct Proc {
        name: String,
        args: Vec<String>,
        required: usize,
        hosts: bool,
        admin: bool,
        public: bool,
    }
    let procs: Vec<Proc> = catalog
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            let n: usize = f[2].parse().unwrap();
            let defaults: usize = f[3].parse().unwrap();
            Proc {
                name: f[0].to_string(),
                args: f[1]
                    .split(',')
                    .filter(|a| !a.is_empty())
                    .map(String::from)
                    .collect(),
                required: n - defaults,
                hosts: f[4] == "true",
                admin: f[5] == "true",
                public: f[6] != "0",
            }
        })
        .collect();
    assert!(procs.len() > 20, "{catalog}");
    let public: Vec<&str> = procs
        .iter()
        .filter(|p| p.public)
        .map(|p| p.name.as_str())
        .collect();
    assert!(public.is_empty(), "PUBLIC may run {public:?}");
    for (name, args) in &calls {
        let fits = |p: &&Proc| {
            p.name == *name
                && args.len() >= p.required
                && args.len() <= p.args.len()
                && args
                    .iter()
                    .enumerate()
                    .all(|(i, a)| match a.split_once(" => ") {
                        Some((param, _)) => p.args.get(i).is_some_and(|have| have == param),
                        None => !a.contains("=>"),
                    })
        };
        let p = procs
            .iter()
            .find(fits)
            .unwrap_or_else(|| panic!("no twofactor.{name} takes ({})", args.join(", ")));
        assert!(p.admin, "administrators cannot run twofactor.{name}");
        assert_eq!(
            p.hosts,
            name.starts_with("h_"),
            "twofactor.{name}: hosts may run it: {}",
            p.hosts
        );
    }
    let called: std::collections::BTreeSet<&str> = calls
        .iter()
        .filter(|(n, _)| n.starts_with("h_"))
        .map(|(n, _)| n.as_str())
        .collect();
    let granted: std::collections::BTreeSet<&str> = procs
        .iter()
        .filter(|p| p.hosts)
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(
        granted, called,
        "the host group may run exactly the host functions the code calls"
    );
}
