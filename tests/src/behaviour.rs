//! The backend's behaviour, written once as a table of scenarios and run against each
//! store: the file store (no root) and the fleet database (root, a throwaway cluster).
//!
//! Each scenario drives a store through the [`Backend`] trait and writes down what each
//! step answered, in words; the table holds the answers every store must give. A store
//! that answers otherwise fails the table, so the two can no longer drift apart.
//!
//! `admin` is the administrator's handle and `host` a host's: the same files for the
//! file store, the admin role and a host's role for the database. Codes come from the
//! real clock, since the database checks them on its own.

use std::fmt::Write as _;
use std::thread;
use std::time::Duration;

use twofactor_core::auth::{CodeResult, Purpose};
use twofactor_core::backend::{Authority, Backend, BackendError, Checked, Enrolled, Revoke};
use twofactor_core::config::Config;
use twofactor_core::enroll::{Enrollment, SaveSettings};
use twofactor_core::random::OsRandom;
use twofactor_core::totp::{SecretKey, TotpParams};
use twofactor_core::trusted::RemoteHost;

use crate::conformance::{Open, now};

/// The handles a scenario may use.
pub struct Stores<'a> {
    /// An administrator's.
    pub admin: Open<'a>,
    /// A host's, where logins and users' own changes happen.
    pub host: Open<'a>,
}

/// One row of the table.
pub struct Scenario {
    /// What it shows.
    pub name: &'static str,
    /// Drives the store; returns what each step answered.
    pub run: fn(&Stores<'_>) -> Vec<String>,
    /// What every store must answer.
    pub expect: &'static [&'static str],
}

impl std::fmt::Debug for Stores<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The table.
pub const TABLE: &[Scenario] = &[
    Scenario {
        name: "lockout escalates, holds a right code back, and an unlock ends it",
        run: lockout_escalates,
        expect: &[
            "wrong",
            "wrong",
            "wrong, locked for 1 s",
            "locked",
            "facts: failures 0, locks 1",
            "wrong",
            "wrong",
            "wrong, locked for 2 s",
            "facts: failures 0, locks 2",
            "unlock: was locked",
            "facts: failures 0, locks 0",
            "totp",
        ],
    },
    Scenario {
        name: "a replay is refused and not counted",
        run: replay,
        expect: &[
            "totp",
            "wrong",
            "replayed",
            "replayed",
            "facts: failures 1, locks 0",
            "locked replay: locked",
        ],
    },
    Scenario {
        name: "a backup code is spent once",
        run: backup_code,
        expect: &[
            "backup code, 2 left",
            "wrong",
            "backup code, 1 left",
            "facts: 1 backup code left",
        ],
    },
    Scenario {
        name: "a disabled authenticator logs nobody in, answers for changes, and counts nothing",
        run: disabled,
        expect: &[
            "set_enabled: true",
            "login, right code: not enrolled",
            "login, wrong code: not enrolled",
            "facts: failures 0, locks 0",
            "change, wrong code: wrong",
            "change, right code: totp",
            "set_enabled with proof: true",
            "facts: enabled",
        ],
    },
    Scenario {
        name: "changes take proof: one change per proof, for its own user only",
        run: changes_need_proof,
        expect: &[
            "change: totp, with proof",
            "new backup codes for another user: refused",
            "change: backup code, 1 left, with proof",
            "new backup codes: 3 codes",
            "facts: 3 backup codes left",
            "wrong code: no proof",
            "replace without proof: refused",
            "save without a code, without an administrator: refused",
            "set_enabled as administrator: true",
        ],
    },
    Scenario {
        name: "trust takes proof, and revoking it too",
        run: trust_needs_proof,
        expect: &[
            "login: totp",
            "trust: an id",
            "facts: 1 trusted host",
            "login: backup code, 1 left",
            "revoke with proof: 1",
            "facts: 0 trusted hosts",
            "revoke an unknown id as administrator: 0",
        ],
    },
    Scenario {
        name: "grace logins count down and stop",
        run: grace,
        expect: &[
            "grace: 1 left",
            "grace: 0 left",
            "grace: none left",
            "facts: 2 grace logins used",
            "enroll: saved, 2 codes",
            "facts: enrolled, enabled",
        ],
    },
    Scenario {
        name: "enroll and replace, with a wrong code and a retry",
        run: enroll_and_replace,
        expect: &[
            "enroll, wrong code: mismatch",
            "enroll, right code: saved, 2 codes",
            "facts: enrolled, enabled, 2 backup codes left",
            "enroll again over it: changed",
            "change: backup code, 1 left, with proof",
            "replace, wrong code: mismatch, authority back",
            "replace, right code: saved, 2 codes",
            "old code: wrong",
            "old backup code: wrong",
        ],
    },
    Scenario {
        name: "an administrator's provisioning, reset and removal",
        run: admin_changes,
        expect: &[
            "provision: saved, 2 codes",
            "remove as administrator: true",
            "facts: not enrolled, 0 backup codes left",
            "remove again: false",
            "provision: saved, 2 codes",
            "reset: done",
            "facts: not enrolled, failures 0, 0 grace logins used",
        ],
    },
    Scenario {
        name: "names the store must refuse",
        run: bad_names,
        expect: &[
            "\"\": refused",
            "\"a/b\": refused",
            "\".hidden\": refused",
            "\"-option\": refused",
            "\"tab\\there\": refused",
            "257 bytes: refused",
            "\"bt.name-ok_1\": no state",
        ],
    },
];

/// Runs every scenario on one store; panics listing each one whose answers differ from
/// the table, after printing every transcript.
pub fn check(store: &str, stores: &Stores<'_>) {
    let mut failed = String::new();
    for s in TABLE {
        let got = (s.run)(stores);
        println!("[{store}] {}:", s.name);
        for line in &got {
            println!("    {line}");
        }
        if got != s.expect {
            let _ = writeln!(
                failed,
                "{}:\n    expected {:?}\n    got      {:?}",
                s.name, s.expect, got
            );
        }
    }
    assert!(
        failed.is_empty(),
        "the {store} store disagrees with the behaviour table:\n{failed}"
    );
}

fn strict() -> Config {
    let mut c = Config::default();
    c.lockout.max_failures = 3;
    c.lockout.lock_seconds = 1;
    c
}

fn settings(codes: usize) -> SaveSettings {
    SaveSettings {
        window: 1,
        backup_codes: codes,
    }
}

/// Sets `user` up through the administrator's handle; the key and backup codes.
fn provision(stores: &Stores<'_>, user: &str, codes: usize) -> (SecretKey, Vec<String>) {
    crate::enroll_with_codes(&*(stores.admin)(), user, codes, &mut OsRandom)
}

fn code(key: &SecretKey) -> String {
    let p = TotpParams::default();
    key.code_at_step(&p, p.step_at(now())).to_string()
}

/// A code that is wrong for every step in the window.
fn wrong(key: &SecretKey) -> String {
    let p = TotpParams::default();
    let step = p.step_at(now());
    let valid: Vec<String> = (step - 2..=step + 2)
        .map(|s| key.code_at_step(&p, s).to_string())
        .collect();
    (0..)
        .map(|n| format!("{n:06}"))
        .find(|c| !valid.contains(c))
        .unwrap()
}

fn result(r: CodeResult) -> String {
    match r {
        CodeResult::Totp => "totp".into(),
        CodeResult::BackupCode { left } => format!("backup code, {left} left"),
        CodeResult::Wrong { locked_for: None } => "wrong".into(),
        CodeResult::Wrong {
            locked_for: Some(s),
        } => format!("wrong, locked for {s} s"),
        CodeResult::Replayed => "replayed".into(),
        CodeResult::VoidedBackupCode => "voided backup code".into(),
        CodeResult::Locked { .. } => "locked".into(),
        CodeResult::NotEnrolled => "not enrolled".into(),
    }
}

/// An error by its kind: the text differs between stores, the kind must not.
fn error(e: &BackendError) -> String {
    match e {
        BackendError::Refused(_) => "refused".into(),
        BackendError::Changed(_) => "changed".into(),
        other => format!("error: {other}"),
    }
}

/// `label: ` and what `r` answered: `ok`'s words, or the error's kind.
fn shown<T>(label: &str, r: Result<T, BackendError>, ok: impl FnOnce(T) -> String) -> String {
    let answer = match r {
        Ok(v) => ok(v),
        Err(e) => error(&e),
    };
    format!("{label}: {answer}")
}

fn verify(b: &dyn Backend, user: &str, code: &str, purpose: Purpose) -> Checked {
    b.verify(user, code, purpose, &strict()).unwrap()
}

fn lockout_escalates(stores: &Stores<'_>) -> Vec<String> {
    let user = "bt_lock";
    let (key, _) = provision(stores, user, 0);
    let host = (stores.host)();
    let mut out = Vec::new();
    let try_code = |c: &str, out: &mut Vec<String>| {
        out.push(result(verify(&*host, user, c, Purpose::Login).result));
    };
    for _ in 0..3 {
        try_code(&wrong(&key), &mut out);
    }
    try_code(&code(&key), &mut out);
    let facts = |out: &mut Vec<String>| {
        let f = host.facts(user).unwrap();
        out.push(format!(
            "facts: failures {}, locks {}",
            f.lockout.failures, f.lockout.locks
        ));
    };
    facts(&mut out);
    // The database counts whole seconds: let the 1 s lock run out for sure.
    thread::sleep(Duration::from_millis(2100));
    for _ in 0..3 {
        try_code(&wrong(&key), &mut out);
    }
    facts(&mut out);
    out.push(shown("unlock", (stores.admin)().unlock(user), |was| {
        if was.is_some() {
            "was locked"
        } else {
            "was not locked"
        }
        .into()
    }));
    facts(&mut out);
    try_code(&code(&key), &mut out);
    out
}

fn replay(stores: &Stores<'_>) -> Vec<String> {
    let user = "bt_replay";
    let (key, _) = provision(stores, user, 0);
    let host = (stores.host)();
    let c = code(&key);
    let mut out: Vec<String> = [c.clone(), wrong(&key), c.clone(), c.clone()]
        .iter()
        .map(|input| result(verify(&*host, user, input, Purpose::Login).result))
        .collect();
    let f = host.facts(user).unwrap();
    out.push(format!(
        "facts: failures {}, locks {}",
        f.lockout.failures, f.lockout.locks
    ));
    // Locked, a replay is not even looked at.
    for _ in 0..2 {
        verify(&*host, user, &wrong(&key), Purpose::Login);
    }
    out.push(format!(
        "locked replay: {}",
        result(verify(&*host, user, &c, Purpose::Login).result)
    ));
    out
}

fn backup_code(stores: &Stores<'_>) -> Vec<String> {
    let user = "bt_backup";
    let (_, codes) = provision(stores, user, 3);
    let host = (stores.host)();
    let mut out: Vec<String> = [&codes[0], &codes[0], &codes[2].to_uppercase()]
        .iter()
        .map(|input| result(verify(&*host, user, input, Purpose::Login).result))
        .collect();
    out.push(format!(
        "facts: {} backup code left",
        host.facts(user).unwrap().backup_codes_left
    ));
    out
}

fn disabled(stores: &Stores<'_>) -> Vec<String> {
    let user = "bt_disabled";
    let (key, _) = provision(stores, user, 0);
    let admin = (stores.admin)();
    let host = (stores.host)();
    let mut out = vec![shown(
        "set_enabled",
        admin.set_enabled(user, Authority::Admin, false),
        |v| v.to_string(),
    )];
    let c = code(&key);
    out.push(format!(
        "login, right code: {}",
        result(verify(&*host, user, &c, Purpose::Login).result)
    ));
    out.push(format!(
        "login, wrong code: {}",
        result(verify(&*host, user, &wrong(&key), Purpose::Login).result)
    ));
    let f = host.facts(user).unwrap();
    out.push(format!(
        "facts: failures {}, locks {}",
        f.lockout.failures, f.lockout.locks
    ));
    out.push(format!(
        "change, wrong code: {}",
        result(verify(&*host, user, &wrong(&key), Purpose::Change).result)
    ));
    let checked = verify(&*host, user, &c, Purpose::Change);
    out.push(format!("change, right code: {}", result(checked.result)));
    let proof = checked.proof.expect("a right code's proof");
    out.push(shown(
        "set_enabled with proof",
        host.set_enabled(user, Authority::Verified(proof), true),
        |v| v.to_string(),
    ));
    let enabled = host
        .facts(user)
        .unwrap()
        .authenticator
        .is_some_and(|a| a.enabled);
    out.push(format!(
        "facts: {}",
        if enabled { "enabled" } else { "disabled" }
    ));
    out
}

fn proof_shown(c: &Checked) -> String {
    format!(
        "{}, {}",
        result(c.result),
        if c.proof.is_some() {
            "with proof"
        } else {
            "no proof"
        }
    )
}

fn changes_need_proof(stores: &Stores<'_>) -> Vec<String> {
    let user = "bt_proof";
    let (key, codes) = provision(stores, user, 2);
    provision(stores, "bt_proof_other", 0);
    let host = (stores.host)();
    let mut out = Vec::new();
    let checked = verify(&*host, user, &code(&key), Purpose::Change);
    out.push(format!("change: {}", proof_shown(&checked)));
    let proof = checked.proof.unwrap();
    out.push(shown(
        "new backup codes for another user",
        host.new_backup_codes(
            "bt_proof_other",
            Authority::Verified(proof),
            3,
            &mut OsRandom,
        ),
        |c| format!("{} codes", c.map_or(0, |c| c.0.len())),
    ));
    let checked = verify(&*host, user, &codes[0], Purpose::Change);
    out.push(format!("change: {}", proof_shown(&checked)));
    out.push(shown(
        "new backup codes",
        host.new_backup_codes(
            user,
            Authority::Verified(checked.proof.unwrap()),
            3,
            &mut OsRandom,
        ),
        |c| format!("{} codes", c.map_or(0, |c| c.0.len())),
    ));
    out.push(format!(
        "facts: {} backup codes left",
        host.facts(user).unwrap().backup_codes_left
    ));
    out.push(format!(
        "wrong code: {}",
        if verify(&*host, user, &wrong(&key), Purpose::Change)
            .proof
            .is_some()
        {
            "proof"
        } else {
            "no proof"
        }
    ));
    // A new authenticator over the enabled one, with its own right code but no proof of
    // the old one; and one saved without any code by a user.
    let e = Enrollment::new(&Config::default(), user, "table", &mut OsRandom).unwrap();
    let fresh = e
        .secret()
        .code_at_step(e.params(), e.params().step_at(now()))
        .to_string();
    let expected = host.facts(user).unwrap().authenticator_id().cloned();
    out.push(shown(
        "replace without proof",
        host.enroll(
            user,
            &e,
            Some(&fresh),
            expected.as_ref(),
            None,
            settings(1),
            &mut OsRandom,
        ),
        enrolled,
    ));
    out.push(shown(
        "save without a code, without an administrator",
        host.enroll(
            "bt_proof_new",
            &e,
            None,
            None,
            None,
            settings(1),
            &mut OsRandom,
        ),
        enrolled,
    ));
    out.push(shown(
        "set_enabled as administrator",
        (stores.admin)().set_enabled(user, Authority::Admin, true),
        |v| v.to_string(),
    ));
    out
}

fn enrolled(r: Enrolled) -> String {
    match r {
        Enrolled::Saved(codes) => format!("saved, {} codes", codes.0.len()),
        Enrolled::Mismatch(None) => "mismatch".into(),
        Enrolled::Mismatch(Some(_)) => "mismatch, authority back".into(),
    }
}

fn trust_needs_proof(stores: &Stores<'_>) -> Vec<String> {
    let user = "bt_trust";
    let (key, codes) = provision(stores, user, 2);
    let host = (stores.host)();
    let client = RemoteHost::parse("192.0.2.7").unwrap();
    let mut out = Vec::new();
    let checked = verify(&*host, user, &code(&key), Purpose::Login);
    out.push(format!("login: {}", result(checked.result)));
    out.push(shown(
        "trust",
        host.trust_host(checked.proof.unwrap(), "sshd", &client, 30),
        |id| if id.is_empty() { "no id" } else { "an id" }.to_string(),
    ));
    let trusted = |out: &mut Vec<String>| {
        let n = host
            .facts(user)
            .unwrap()
            .trusted_devices
            .active(now())
            .count();
        out.push(format!(
            "facts: {n} trusted host{}",
            if n == 1 { "" } else { "s" }
        ));
    };
    trusted(&mut out);
    let checked = verify(&*host, user, &codes[0], Purpose::Login);
    out.push(format!("login: {}", result(checked.result)));
    out.push(shown(
        "revoke with proof",
        host.revoke_trust(
            user,
            Authority::Verified(checked.proof.unwrap()),
            Revoke::All,
        ),
        |n| n.to_string(),
    ));
    trusted(&mut out);
    out.push(shown(
        "revoke an unknown id as administrator",
        (stores.admin)().revoke_trust(user, Authority::Admin, Revoke::One("no-such-id")),
        |n| n.to_string(),
    ));
    out
}

fn grace(stores: &Stores<'_>) -> Vec<String> {
    let user = "bt_grace";
    let host = (stores.host)();
    let mut out: Vec<String> = (0..3)
        .map(|_| {
            shown(
                "grace",
                host.count_grace_login(user, 2),
                |left| match left {
                    Some(n) => format!("{n} left"),
                    None => "none left".into(),
                },
            )
        })
        .collect();
    out.push(format!(
        "facts: {} grace logins used",
        host.facts(user).unwrap().grace_logins_used
    ));
    // The user then enrolls at login: no authority needed for a first authenticator.
    let e = Enrollment::new(&Config::default(), user, "table", &mut OsRandom).unwrap();
    let fresh = e
        .secret()
        .code_at_step(e.params(), e.params().step_at(now()))
        .to_string();
    out.push(shown(
        "enroll",
        host.enroll(
            user,
            &e,
            Some(&fresh),
            None,
            None,
            settings(2),
            &mut OsRandom,
        ),
        enrolled,
    ));
    out.push(facts_line(&*host, user));
    out
}

fn facts_line(b: &dyn Backend, user: &str) -> String {
    let f = b.facts(user).unwrap();
    match &f.authenticator {
        None => "facts: not enrolled".into(),
        Some(a) => format!(
            "facts: enrolled, {}",
            if a.enabled { "enabled" } else { "disabled" }
        ),
    }
}

fn enroll_and_replace(stores: &Stores<'_>) -> Vec<String> {
    let user = "bt_enroll";
    let host = (stores.host)();
    let mut out = Vec::new();
    let first = Enrollment::new(&Config::default(), user, "table", &mut OsRandom).unwrap();
    let first_key = first.secret().clone();
    out.push(shown(
        "enroll, wrong code",
        host.enroll(
            user,
            &first,
            Some(&wrong(&first_key)),
            None,
            None,
            settings(2),
            &mut OsRandom,
        ),
        enrolled,
    ));
    let mut first_codes = Vec::new();
    out.push(shown(
        "enroll, right code",
        host.enroll(
            user,
            &first,
            Some(&code(&first_key)),
            None,
            None,
            settings(2),
            &mut OsRandom,
        ),
        |r| {
            if let Enrolled::Saved(c) = &r {
                first_codes = c.0.iter().map(|c| c.to_string()).collect();
            }
            enrolled(r)
        },
    ));
    let f = host.facts(user).unwrap();
    out.push(format!(
        "{}, {} backup codes left",
        facts_line(&*host, user),
        f.backup_codes_left
    ));
    // Another enrollment that still believes the user had none.
    let other = Enrollment::new(&Config::default(), user, "table", &mut OsRandom).unwrap();
    out.push(shown(
        "enroll again over it",
        host.enroll(
            user,
            &other,
            Some(&code(other.secret())),
            None,
            None,
            settings(2),
            &mut OsRandom,
        ),
        enrolled,
    ));
    // Replacing: a code from the current authenticator, then the new one's code.
    let expected = f.authenticator_id().cloned();
    let checked = verify(&*host, user, &first_codes[0], Purpose::Change);
    out.push(format!("change: {}", proof_shown(&checked)));
    let authority = checked.proof.map(Authority::Verified);
    let replacement = Enrollment::new(&Config::default(), user, "table", &mut OsRandom).unwrap();
    let new_key = replacement.secret().clone();
    let mut back = None;
    out.push(shown(
        "replace, wrong code",
        host.enroll(
            user,
            &replacement,
            Some(&wrong(&new_key)),
            expected.as_ref(),
            authority,
            settings(2),
            &mut OsRandom,
        ),
        |r| enrolled_keep(r, &mut back),
    ));
    out.push(shown(
        "replace, right code",
        host.enroll(
            user,
            &replacement,
            Some(&code(&new_key)),
            expected.as_ref(),
            back,
            settings(2),
            &mut OsRandom,
        ),
        enrolled,
    ));
    out.push(format!(
        "old code: {}",
        result(verify(&*host, user, &code(&first_key), Purpose::Login).result)
    ));
    out.push(format!(
        "old backup code: {}",
        result(verify(&*host, user, &first_codes[1], Purpose::Login).result)
    ));
    out
}

/// As [`enrolled`], keeping the authority a mismatch hands back.
fn enrolled_keep(r: Enrolled, back: &mut Option<Authority>) -> String {
    match r {
        Enrolled::Mismatch(Some(a)) => {
            *back = Some(a);
            "mismatch, authority back".into()
        }
        other => enrolled(other),
    }
}

fn admin_changes(stores: &Stores<'_>) -> Vec<String> {
    let user = "bt_admin";
    let admin = (stores.admin)();
    let mut out = Vec::new();
    let provisioned = |out: &mut Vec<String>| {
        let e = Enrollment::new(&Config::default(), user, "table", &mut OsRandom).unwrap();
        out.push(shown(
            "provision",
            admin.enroll(
                user,
                &e,
                None,
                admin.facts(user).unwrap().authenticator_id(),
                Some(Authority::Admin),
                settings(2),
                &mut OsRandom,
            ),
            enrolled,
        ));
    };
    provisioned(&mut out);
    out.push(shown(
        "remove as administrator",
        admin.remove_authenticator(user, Authority::Admin),
        |v| v.to_string(),
    ));
    let f = admin.facts(user).unwrap();
    out.push(format!(
        "facts: {}, {} backup codes left",
        if f.is_enrolled() {
            "enrolled"
        } else {
            "not enrolled"
        },
        f.backup_codes_left
    ));
    out.push(shown(
        "remove again",
        admin.remove_authenticator(user, Authority::Admin),
        |v| v.to_string(),
    ));
    provisioned(&mut out);
    (stores.host)().count_grace_login(user, 3).unwrap();
    out.push(shown("reset", admin.reset(user), |()| "done".into()));
    let f = admin.facts(user).unwrap();
    out.push(format!(
        "facts: {}, failures {}, {} grace logins used",
        if f.is_enrolled() {
            "enrolled"
        } else {
            "not enrolled"
        },
        f.lockout.failures,
        f.grace_logins_used
    ));
    out
}

fn bad_names(stores: &Stores<'_>) -> Vec<String> {
    let host = (stores.host)();
    let long = "x".repeat(257);
    let names = [
        "",
        "a/b",
        ".hidden",
        "-option",
        "tab\there",
        &long,
        "bt.name-ok_1",
    ];
    names
        .iter()
        .map(|name| {
            let label = if name.len() > 64 {
                format!("{} bytes", name.len())
            } else {
                format!("{name:?}")
            };
            let r = host.verify(name, "123456", Purpose::Login, &strict());
            shown(&label, r, |c| match c.result {
                CodeResult::NotEnrolled => "no state".into(),
                other => result(other),
            })
        })
        .collect()
}
