//! The security review's attacks, replayed through real libpam (pam_wrapper and
//! pamtester): a file-size limit against the lockout, a wrong password against every
//! documented stack, aliases of one account through a real NSS module, trust, and the
//! grace-login race.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::thread;

use pam_twofactor::conversation::{ConvError, Conversation};
use pam_twofactor::decision::Decision;
use pam_twofactor::flow::{self, Env, Login};
use twofactor_core::audit::Reason;
use twofactor_core::clock::SystemClock;
use twofactor_core::config::Config;
use twofactor_core::policy::Nss;
use twofactor_core::random::OsRandom;
use twofactor_testkit::{
    Accounts, CHEAP_HASH, NssAliases, PamFixture, Session, Wrap, enroll, fresh_code, oathtool,
    pam_module_so, pamtester, pamtester_with, tag,
};
use zeroize::Zeroizing;

const PASSWORD: &str = "Review-Pass-31";

fn verdict(t: &str) -> &'static str {
    for (text, v) in [
        ("successfully authenticated", "success"),
        ("Authentication failure", "auth_err"),
        ("Permission denied", "ignored"),
        ("Error in service module", "service_err"),
        ("cannot retrieve authentication info", "unavailable"),
    ] {
        if t.contains(text) {
            return v;
        }
    }
    panic!("no PAM result in:\n{t}");
}

fn answer(mut s: Session, answers: &[&str]) -> (&'static str, String) {
    for a in answers {
        s.send(a);
    }
    let (_, t) = s.finish();
    (verdict(&t), t)
}

fn state_file(f: &PamFixture, user: &str) -> PathBuf {
    f.path().join("state").join(format!("{user}.json"))
}

/// Finding 1: a caller sets RLIMIT_FSIZE to the state file's size and ignores SIGXFSZ,
/// so a write that starts a lock (a few bytes longer) fails. Guesses made that way must
/// not be free: the attempt is recorded before the code is looked at, or the login is
/// refused unchecked, and a right code never gets in.
#[test]
fn a_file_size_limit_cannot_hide_wrong_guesses() {
    let user = format!("tflim{}", tag());
    let mut accounts = Accounts::default();
    accounts.user(&user, "users", &[]);
    let f = PamFixture::new(&format!("[enforce]\nusers = [\"{user}\"]\n"));
    f.service("tf", "auth required {module}\n");
    let (key, _) = enroll(&f.store(), &user, &mut OsRandom);
    let key = key.to_base32().to_string();
    // One good login first, so the used step is a number and a success write is no
    // longer than the file.
    let first = oathtool(&key);
    let (v, t) = answer(pamtester(&f.services(), "tf", &user, None), &[&first]);
    assert_eq!(v, "success", "{t}");
    let (v, _) = answer(
        pamtester(&f.services(), "tf", &user, None),
        &["000000", "000001", "000002"],
    );
    assert_eq!(v, "auth_err");
    let (v, _) = answer(pamtester(&f.services(), "tf", &user, None), &["000003"]);
    assert_eq!(v, "auth_err");
    assert_eq!(f.store().load(&user).unwrap().lockout.failures, 4);

    let size = fs::metadata(state_file(&f, &user)).unwrap().len();
    let limited = Wrap {
        prefix: vec!["prlimit".into(), format!("--fsize={size}"), "--".into()],
        ignore_signals: vec!["XFSZ".into()],
        ..Wrap::default()
    };
    let before = fs::read(state_file(&f, &user)).unwrap();
    for _ in 0..7 {
        let (v, t) = answer(
            pamtester_with(&f.services(), "tf", &user, None, &limited),
            &["111111", "222222", "333333"],
        );
        assert_ne!(v, "success", "{t}");
    }
    let right = fresh_code(&key, &first);
    let (v, t) = answer(
        pamtester_with(&f.services(), "tf", &user, None, &limited),
        &[&right],
    );
    assert_ne!(v, "success", "a right code got in under the limit:\n{t}");
    assert_eq!(
        fs::read(state_file(&f, &user)).unwrap(),
        before,
        "nothing was accepted or changed under the limit"
    );

    // Without the limit the next wrong guess is the fifth and locks; a right code is then
    // refused without a prompt.
    let (v, t) = answer(pamtester(&f.services(), "tf", &user, None), &["444444"]);
    assert_eq!(v, "auth_err");
    assert!(t.contains("locked for 5 minutes"), "{t}");
    let (v, t) = answer(pamtester(&f.services(), "tf", &user, None), &[&right]);
    assert_eq!(v, "auth_err", "{t}");
    assert!(
        !t.contains("Authentication code:"),
        "no prompt while locked: {t}"
    );
}

/// The example stacks, with the module and its config filled in.
fn example_services(f: &PamFixture) -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/pam.d/examples");
    let module = format!(
        "{} config={}",
        pam_module_so().display(),
        f.config().display()
    );
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        // pam_wrapper moves only the service's own file, so a substack names its file by
        // absolute path, which Linux-PAM accepts.
        let text: String = fs::read_to_string(entry.path())
            .unwrap()
            .lines()
            .map(
                |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                    ["auth", kind @ ("substack" | "include"), inner] => {
                        format!("auth {kind} {}\n", f.services().join(inner).display())
                    }
                    _ => format!("{}\n", line.replace("pam_twofactor.so", &module)),
                },
            )
            .collect();
        fs::write(f.services().join(&name), text).unwrap();
        names.push(name);
    }
    names.sort();
    names
}

/// Finding 2: with every stack twofactor documents, a wrong password ends the stack
/// before the module: no prompt, no QR code, no state. The right password does reach
/// enrollment, so the stacks are not simply broken. The `required pam_unix.so` layout the
/// review found shows what goes wrong without that (doctor flags it).
#[test]
fn a_wrong_password_never_reaches_the_module_in_any_documented_stack() {
    let user = format!("tfpw{}", tag());
    let base = tempfile::tempdir().unwrap();
    fs::set_permissions(base.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let mut accounts = Accounts::default();
    accounts.login_user(&user, &base.path().join("home"), PASSWORD);
    let f = PamFixture::new(&format!("[enforce]\nusers = [\"{user}\"]\n"));
    let services = example_services(&f);
    assert!(services.len() >= 5, "{services:?}");
    for service in &services {
        let (v, t) = answer(
            pamtester(&f.services(), service, &user, None),
            &["wrong-password"],
        );
        assert_eq!(v, "auth_err", "{service}: {t}");
        for shown in [
            "Set it up now",
            "Key:",
            "Authentication code",
            "Code from the app",
        ] {
            assert!(
                !t.contains(shown),
                "{service}: {shown:?} after a wrong password:\n{t}"
            );
        }
        // The config's last good copy is the module's, not the user's.
        let left: Vec<_> = fs::read_dir(f.path().join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != "last-good-config.toml")
            .collect();
        assert!(left.is_empty(), "{service}: state written: {left:?}");

        let mut s = pamtester(&f.services(), service, &user, None);
        s.send(PASSWORD);
        if service == "one-prompt" {
            // After one prompt no QR code can be shown: the user is told how to enroll.
            let (_, t) = s.finish();
            assert_eq!(verdict(&t), "auth_err", "{service}: {t}");
            assert!(t.contains("twofactor enroll"), "{service}: {t}");
            continue;
        }
        s.wait_for("Code from the app to finish setup: ");
        let (_, t) = s.finish();
        assert_eq!(verdict(&t), "auth_err", "{service}: no code given: {t}");
    }

    f.service("bad", "auth required pam_unix.so\nauth required {module}\n");
    let mut s = pamtester(&f.services(), "bad", &user, None);
    s.send("wrong-password");
    let shown = s.wait_for("Code from the app to finish setup: ");
    assert!(shown.contains("Key:"), "the hole the review found: {shown}");
    s.finish();
}

/// Finding 3: `NAME` and `name@corp.example` are the same account as `name`. They get
/// its policy, its state and its lockout, never state of their own; a name no account
/// has is refused with no state written.
#[test]
fn aliases_share_the_canonical_account_and_unknown_names_get_nothing() {
    let user = format!("tfcanon{}", tag());
    let mut accounts = Accounts::default();
    accounts.user(&user, "users", &[]);
    let aliases = NssAliases::new(&user);
    let f = PamFixture::new(&format!(
        "[enforce]\nusers = [\"{user}\"]\n[lockout]\nmax_failures = 50\n"
    ));
    f.service("tf", "auth required {module}\n");
    let (key, _) = enroll(&f.store(), &user, &mut OsRandom);
    let key = key.to_base32().to_string();
    let upper = user.to_uppercase();
    let realm = format!("{user}@corp.example");

    for alias in [&upper, &realm] {
        let (v, t) = answer(
            pamtester_with(&f.services(), "tf", alias, None, &aliases.wrap()),
            &["000000"],
        );
        assert_eq!(v, "auth_err", "{alias}: asked like the account: {t}");
        assert!(t.contains("Wrong code"), "{alias}: {t}");
    }
    assert_eq!(
        f.store().load(&user).unwrap().lockout.failures,
        2,
        "the aliases' failures count for the account"
    );
    let code = oathtool(&key);
    let (v, t) = answer(
        pamtester_with(&f.services(), "tf", &upper, None, &aliases.wrap()),
        &[&code],
    );
    assert_eq!(v, "success", "{t}");
    // Replay protection is the account's too: the same code through the other alias.
    let (v, t) = answer(
        pamtester_with(&f.services(), "tf", &realm, None, &aliases.wrap()),
        &[&code],
    );
    assert_eq!(v, "auth_err", "{t}");
    assert!(t.contains("already used"), "{t}");
    let files: Vec<String> = fs::read_dir(f.path().join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "last-good-config.toml")
        .collect();
    assert!(
        files.iter().all(|n| n.starts_with(&format!("{user}."))),
        "only the canonical name has files: {files:?}"
    );

    // A name no account has: refused, nothing written, even with all_users.
    let g = PamFixture::new("[enforce]\nall_users = true\n");
    g.service("tf", "auth required {module}\n");
    let (v, t) = answer(
        pamtester(&g.services(), "tf", &format!("tfnobody{}", tag()), None),
        &["123456"],
    );
    assert_eq!(v, "auth_err", "{t}");
    assert!(!t.contains("Set it up now"), "{t}");
    let left: Vec<_> = fs::read_dir(g.path().join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "last-good-config.toml")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Finding 10: the lock is checked before trust, trust holds for one service, and host
/// names are not trusted unless the admin allows them. Trust from a version 1 file is
/// dropped.
#[test]
fn trust_is_per_service_after_the_lock_and_for_addresses_only() {
    let user = format!("tftrust{}", tag());
    let mut accounts = Accounts::default();
    accounts.user(&user, "users", &[]);
    let f = PamFixture::new(&format!(
        "[enforce]\nusers = [\"{user}\"]\n[trusted_devices]\nenabled = true\n[lockout]\nmax_failures = 2\n"
    ));
    f.service("tf", "auth required {module}\n");
    f.service("other", "auth required {module}\n");
    let (key, _) = enroll(&f.store(), &user, &mut OsRandom);
    let key = key.to_base32().to_string();

    // A host name is never offered trust.
    let code = oathtool(&key);
    let (v, t) = answer(
        pamtester(&f.services(), "tf", &user, Some("laptop.example")),
        &[&code],
    );
    assert_eq!(v, "success", "{t}");
    assert!(!t.contains("[y/N]"), "{t}");

    // An address is; the trust holds for that service only.
    let code = fresh_code(&key, &code);
    let (v, t) = answer(
        pamtester(&f.services(), "tf", &user, Some("192.0.2.10")),
        &[&code, "y"],
    );
    assert_eq!(v, "success", "{t}");
    assert!(t.contains("for tf logins from 192.0.2.10"), "{t}");
    let (v, _) = answer(
        pamtester(&f.services(), "tf", &user, Some("192.0.2.10")),
        &[],
    );
    assert_eq!(v, "success");
    let (v, t) = answer(
        pamtester(&f.services(), "other", &user, Some("192.0.2.10")),
        &[],
    );
    assert_eq!(v, "auth_err", "another service asks: {t}");
    assert!(t.contains("Authentication code"), "{t}");

    // Locked: the trusted host is refused too.
    let (v, _) = answer(
        pamtester(&f.services(), "other", &user, Some("192.0.2.99")),
        &["000000", "000001"],
    );
    assert_eq!(v, "auth_err");
    let (v, t) = answer(
        pamtester(&f.services(), "tf", &user, Some("192.0.2.10")),
        &[],
    );
    assert_eq!(v, "auth_err", "a lock holds for trusted hosts: {t}");
    assert!(t.contains("locked"), "{t}");

    // A version 1 file's trust is not honoured.
    let g = PamFixture::new(&format!(
        "[enforce]\nusers = [\"{user}\"]\n[trusted_devices]\nenabled = true\n"
    ));
    g.service("tf", "auth required {module}\n");
    enroll(&g.store(), &user, &mut OsRandom);
    let path = state_file(&g, &user);
    let text = fs::read_to_string(&path).unwrap();
    let mut v1: serde_json::Value = serde_json::from_str(&text).unwrap();
    v1["version"] = 1.into();
    v1["state"]["trusted_devices"] = serde_json::json!([
        {"id": "a1a1a1a1a1a1", "host": "192.0.2.10", "created": 1, "expires": 99_999_999_999u64}
    ]);
    fs::write(&path, v1.to_string()).unwrap();
    let (v, t) = answer(
        pamtester(&g.services(), "tf", &user, Some("192.0.2.10")),
        &[],
    );
    assert_eq!(v, "auth_err", "{t}");
    assert!(t.contains("Authentication code"), "old trust dropped: {t}");
}

/// Answers nothing: enough for a grace login, which asks nothing.
struct Silent;

impl Conversation for Silent {
    fn ask_hidden(&mut self, _: &str) -> Result<Option<Zeroizing<String>>, ConvError> {
        Ok(None)
    }
    fn ask_visible(&mut self, _: &str) -> Result<Option<String>, ConvError> {
        Ok(None)
    }
    fn info(&mut self, _: &str) -> Result<(), ConvError> {
        Ok(())
    }
    fn error(&mut self, _: &str) -> Result<(), ConvError> {
        Ok(())
    }
}

/// Finding 6: logins racing for the last grace login; exactly one gets it.
#[test]
fn racing_logins_get_each_grace_login_once() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    fs::create_dir(&state).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();
    let mut config = Config::default();
    config.storage.state_dir = state.clone();
    config.policy.users = vec!["root".into()];
    config.enroll.at_login = false;
    config.enroll.grace_logins = 1;
    let config = Arc::new(config);
    let racers = 8;
    let barrier = Arc::new(Barrier::new(racers));
    let handles: Vec<_> = (0..racers)
        .map(|_| {
            let (config, barrier) = (Arc::clone(&config), Arc::clone(&barrier));
            thread::spawn(move || {
                let mut rng = OsRandom;
                let mut audit = |_: &_, _: Option<&str>, _: Option<&str>| {};
                let mut env = Env {
                    config: &config,
                    directory: &Nss,
                    store: twofactor_core::backend::Opening {
                        owner: 0,
                        clock: Arc::new(SystemClock),
                        hash_cost: CHEAP_HASH,
                    },
                    rng: &mut rng,
                    host: "h".into(),
                    audit: &mut audit,
                    served_by: None,
                };
                let login = Login {
                    user: "root",
                    service: "sshd",
                    rhost: None,
                    silent: false,
                    password: None,
                    code_from: flow::CodeFrom::Prompt,
                    ssh_auth_info: None,
                    after_login: None,
                };
                barrier.wait();
                flow::authenticate(&mut Silent, &login, &mut env).0
            })
        })
        .collect();
    let decisions: Vec<Decision> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let granted = decisions
        .iter()
        .filter(|d| matches!(d, Decision::Allow(Reason::Grace { .. })))
        .count();
    assert_eq!(granted, 1, "{decisions:?}");
    assert!(
        decisions
            .iter()
            .all(|d| matches!(d, Decision::Allow(_) | Decision::Deny(Reason::NoGraceLeft))),
        "{decisions:?}"
    );
}
