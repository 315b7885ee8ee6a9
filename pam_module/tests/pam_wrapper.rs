//! The built `libpam_twofactor.so` loaded by real libpam (through pam_wrapper, with its
//! own service directory) and driven by pamtester; codes come from oathtool.
//!
//! pamtester's final line tells the PAM result apart: "successfully authenticated"
//! (PAM_SUCCESS), "Authentication failure" (PAM_AUTH_ERR), "Permission denied" (every
//! module ignored: our PAM_IGNORE), "Error in service module" (PAM_SERVICE_ERR) and
//! "cannot retrieve authentication info" (PAM_AUTHINFO_UNAVAIL).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use twofactor_core::random::OsRandom;
use twofactor_core::store::Store;
use twofactor_testkit::{
    Accounts, PamFixture, Session, Syslog, Wrap, enroll, fresh_code, key_shown, oathtool,
    pam_module_so, pamtester, pamtester_with,
};

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Success,
    AuthErr,
    Ignored,
    ServiceErr,
    AuthInfoUnavail,
}

fn verdict(transcript: &str) -> Verdict {
    let table = [
        ("successfully authenticated", Verdict::Success),
        ("Authentication failure", Verdict::AuthErr),
        ("Permission denied", Verdict::Ignored),
        ("Error in service module", Verdict::ServiceErr),
        (
            "cannot retrieve authentication info",
            Verdict::AuthInfoUnavail,
        ),
    ];
    for (text, v) in table {
        if transcript.contains(text) {
            return v;
        }
    }
    panic!("no PAM result in transcript:\n{transcript}");
}

/// A throwaway PAM service "tf" with its own config and state directory.
struct Pam(PamFixture);

impl Pam {
    fn new(config: &str) -> Self {
        Self::with_args(config, "")
    }

    fn with_args(config: &str, extra_args: &str) -> Self {
        Self::with_stack(config, &format!("auth required {{module}} {extra_args}\n"))
    }

    fn with_stack(config: &str, stack: &str) -> Self {
        let f = PamFixture::new(config);
        f.service("tf", stack);
        Self(f)
    }

    /// The README's one-prompt layout: the split line, the password, the checking line.
    fn one_prompt(config: &str) -> Self {
        Self::with_stack(config, ONE_PROMPT_STACK)
    }

    fn store(&self) -> Store {
        self.0.store()
    }

    fn spawn(&self, user: &str, rhost: Option<&str>) -> Session {
        pamtester(&self.0.services(), "tf", user, rhost)
    }

    /// Runs one authentication with `answers` typed in advance, one per prompt.
    fn run(&self, user: &str, rhost: Option<&str>, answers: &[&str]) -> (Verdict, String) {
        self.run_with(&Wrap::default(), user, rhost, answers)
    }

    /// [`Pam::run`], with pamtester run as `wrap` says.
    fn run_with(
        &self,
        wrap: &Wrap,
        user: &str,
        rhost: Option<&str>,
        answers: &[&str],
    ) -> (Verdict, String) {
        let mut s = pamtester_with(&self.0.services(), "tf", user, rhost, wrap);
        for a in answers {
            s.send(a);
        }
        let (_, text) = s.finish();
        (verdict(&text), text)
    }

    /// Enrolls `user` straight into the store; returns the base32 key and backup codes.
    fn enroll(&self, user: &str) -> (String, Vec<String>) {
        let (key, codes) = enroll(&self.store(), user, &mut OsRandom);
        (key.to_base32().to_string(), codes)
    }
}

/// The README's one-prompt stack (`nodelay` only spares the tests pam_unix's pause).
const ONE_PROMPT_STACK: &str = "auth requisite {module} split\n\
     auth requisite pam_unix.so use_first_pass nodelay\n\
     auth required {module}\n";

/// The password of the one-prompt tests' accounts.
const PASSWORD: &str = "Tr0ub4dor&3";

#[test]
fn totp_success_wrong_and_replay() {
    let mut accounts = Accounts::default();
    accounts.user("tfalice", "users", &[]);
    let pam = Pam::new("[enforce]\nusers = [\"tfalice\"]\n");
    let (key, _) = pam.enroll("tfalice");
    let code = oathtool(&key);
    let (v, t) = pam.run("tfalice", None, &[&code]);
    assert_eq!(v, Verdict::Success, "{t}");
    assert!(t.contains("Authentication code: "), "{t}");

    let (v, t) = pam.run("tfalice", None, &["000000", "111111", "222222"]);
    assert_eq!(v, Verdict::AuthErr, "{t}");
    assert_eq!(t.matches("Wrong code.").count(), 3, "three tries: {t}");

    let (v, t) = pam.run("tfalice", None, &[&code]);
    assert_eq!(v, Verdict::AuthErr, "{t}");
    assert!(t.contains("That code was already used"), "{t}");
}

#[test]
fn backup_codes_work_exactly_once() {
    let mut accounts = Accounts::default();
    accounts.user("tfbob", "users", &[]);
    let pam = Pam::new("[enforce]\nusers = [\"tfbob\"]\n");
    let (_, codes) = pam.enroll("tfbob");
    let (v, t) = pam.run("tfbob", None, &[&codes[0]]);
    assert_eq!(v, Verdict::Success, "{t}");
    assert!(
        t.contains("Backup code accepted.\n2 backup codes left."),
        "{t}"
    );
    let (v, t) = pam.run("tfbob", None, &[&codes[0], "", ""]);
    assert_eq!(v, Verdict::AuthErr, "{t}");
    assert_eq!(pam.store().load("tfbob").unwrap().backup_codes_left(), 2);
}

#[test]
fn lockout_refuses_without_a_prompt() {
    let mut accounts = Accounts::default();
    accounts.user("tfcarol", "users", &[]);
    let pam = Pam::new(
        "[enforce]\nusers = [\"tfcarol\"]\n[lockout]\nmax_failures = 2\nlock_seconds = 600\n",
    );
    let (key, _) = pam.enroll("tfcarol");
    let (v, t) = pam.run("tfcarol", None, &["000000", "000001"]);
    assert_eq!(v, Verdict::AuthErr);
    assert!(t.contains("locked for 10 minutes"), "{t}");
    let (v, t) = pam.run("tfcarol", None, &[&oathtool(&key)]);
    assert_eq!(v, Verdict::AuthErr, "{t}");
    assert!(
        !t.contains("Authentication code:"),
        "no prompt while locked: {t}"
    );
    assert!(t.contains("twofactor unlock tfcarol"), "{t}");
}

#[test]
fn enrollment_at_login_reads_the_key_from_the_prompt_text() {
    let mut accounts = Accounts::default();
    accounts.user("tfdave", "users", &[]);
    let pam = Pam::new("[enforce]\nusers = [\"tfdave\"]\n[backup_codes]\ncount = 4\n");
    let mut s = pam.spawn("tfdave", Some("127.0.0.1"));
    // Info text (stdout) and prompts (stderr) travel on different pipes: wait for both.
    s.wait_for("Code from the app to finish setup: ");
    let shown = s.wait_for_line("Key:");
    let key = key_shown(&shown);
    assert!(
        shown.contains(&format!("secret={key}&")),
        "URI carries the same key"
    );
    assert!(shown.contains('▀') || shown.contains('▄'), "QR code drawn");
    let code = oathtool(&key);
    s.send(&code);
    s.wait_for("Press Enter once you have saved the backup codes");
    s.send("");
    let (_, text) = s.finish();
    assert_eq!(verdict(&text), Verdict::Success, "{text}");
    let state = pam.store().load("tfdave").unwrap();
    assert!(state.is_enrolled());
    assert_eq!(state.backup_codes_left(), 4);
    // The enrollment code was spent; a later code logs in.
    let (v, t) = pam.run("tfdave", None, &[&code, &fresh_code(&key, &code)]);
    assert_eq!(v, Verdict::Success, "{t}");
    assert!(t.contains("already used"), "{t}");
}

#[test]
fn grace_logins_then_refusal() {
    let mut accounts = Accounts::default();
    accounts.user("tferin", "users", &[]);
    let pam =
        Pam::new("[enforce]\nall_users = true\n[enroll]\nat_login = false\ngrace_logins = 1\n");
    let (v, t) = pam.run("tferin", None, &[]);
    assert_eq!(v, Verdict::Success, "{t}");
    assert!(t.contains("0 more logins will be allowed"), "{t}");
    let (v, t) = pam.run("tferin", None, &[]);
    assert_eq!(v, Verdict::AuthErr, "{t}");
    assert!(t.contains("no authenticator is set up"), "{t}");
}

#[test]
fn trusted_host_skips_the_code() {
    let mut accounts = Accounts::default();
    accounts.user("tffay", "users", &[]);
    let pam =
        Pam::new("[enforce]\nusers = [\"tffay\"]\n[trusted_devices]\nenabled = true\ndays = 3\n");
    let (key, _) = pam.enroll("tffay");
    let (v, t) = pam.run("tffay", Some("10.0.0.5"), &[&oathtool(&key), "y"]);
    assert_eq!(v, Verdict::Success, "{t}");
    assert!(t.contains("for 3 days? [y/N]"), "{t}");
    let (v, t) = pam.run("tffay", Some("10.0.0.5"), &[]);
    assert_eq!(v, Verdict::Success, "{t}");
    assert!(!t.contains("Authentication code:"), "{t}");
    let (v, _) = pam.run("tffay", Some("10.0.0.6"), &[]);
    assert_eq!(v, Verdict::AuthErr, "another host is asked");
}

#[test]
fn exempt_and_not_required_users_are_ignored() {
    let mut accounts = Accounts::default();
    accounts.user("tfgus", "users", &[]);
    // tfrescue has no account at all: exemptions are decided by the name as typed.
    let pam = Pam::new("[enforce]\nall_users = true\nexempt_users = [\"tfrescue\"]\n");
    let (v, t) = pam.run("tfrescue", None, &[]);
    assert_eq!(v, Verdict::Ignored, "{t}");
    assert!(!t.contains("code"), "{t}");
    let pam = Pam::new("[enforce]\nusers = [\"someone-else\"]\n");
    let (v, t) = pam.run("tfgus", None, &[]);
    assert_eq!(v, Verdict::Ignored, "{t}");
}

#[test]
fn corrupt_state_fails_closed_and_is_never_re_enrolled() {
    let mut accounts = Accounts::default();
    accounts.user("tfhal", "users", &[]);
    let cases: [(&str, &[u8]); 5] = [
        (
            "truncated",
            b"{\"version\":1,\"user\":\"tfhal\",\"state\":{\"authenticator\":",
        ),
        ("empty", b""),
        ("garbage", b"\x00\xff\xfegarbage\n"),
        ("future", b"{\"version\":3,\"user\":\"tfhal\",\"state\":{}}"),
        (
            "other user",
            b"{\"version\":1,\"user\":\"root\",\"state\":{}}",
        ),
    ];
    for (what, body) in cases {
        let pam = Pam::new("[enforce]\nusers = [\"tfhal\"]\n");
        let path = pam.0.path().join("state/tfhal.json");
        fs::write(&path, body).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let (v, t) = pam.run("tfhal", None, &["123456"]);
        assert_eq!(v, Verdict::AuthInfoUnavail, "{what}: {t}");
        assert!(
            !t.contains("Set it up now"),
            "{what}: a broken file must never lead to a new enrolment"
        );
        assert_eq!(fs::read(&path).unwrap(), body, "{what}: left untouched");
    }
}

#[test]
fn bad_config_and_unknown_arguments_fail_closed() {
    let pam = Pam::new("[enforce]\ngrups = [\"wheel\"]\n");
    let (v, t) = pam.run("tfivy", None, &["123456"]);
    assert_eq!(v, Verdict::ServiceErr, "{t}");
    let pam = Pam::with_args("[enforce]\nall_users = true\n", "nullok");
    let (v, t) = pam.run("tfivy", None, &["123456"]);
    assert_eq!(v, Verdict::ServiceErr, "{t}");
    let pam = Pam::new("[enforce]\nall_users = true\n");
    let cfg = pam.0.config();
    fs::set_permissions(&cfg, fs::Permissions::from_mode(0o666)).unwrap();
    let (v, _) = pam.run("tfivy", None, &["123456"]);
    assert_eq!(v, Verdict::ServiceErr, "a world-writable config is refused");
    // Unreadable: missing, a directory, or a symlink.
    fs::remove_file(&cfg).unwrap();
    let (v, _) = pam.run("tfivy", None, &["123456"]);
    assert_eq!(v, Verdict::ServiceErr, "a missing config fails closed");
    fs::create_dir(&cfg).unwrap();
    let (v, _) = pam.run("tfivy", None, &["123456"]);
    assert_eq!(
        v,
        Verdict::ServiceErr,
        "a directory in place of the config fails closed"
    );
    fs::remove_dir(&cfg).unwrap();
    let real = pam.0.path().join("real.toml");
    fs::write(&real, "version = 1\n").unwrap();
    std::os::unix::fs::symlink(&real, &cfg).unwrap();
    let (v, _) = pam.run("tfivy", None, &["123456"]);
    assert_eq!(v, Verdict::ServiceErr, "a symlinked config fails closed");
}

/// The admin's typo: the last good config stands in, made stricter by the broken file's
/// readable `[enforce]` table, and every login logs why.
#[test]
fn a_broken_config_enforces_the_last_good_one_and_says_so_on_every_login() {
    let mut accounts = Accounts::default();
    let group = accounts.group("tfbrkgrp");
    accounts.user("tfbrkreq", "users", &[&group]);
    accounts.user("tfbrkmal", "users", &[&group]);
    accounts.user("tfbrkfree", "users", &[]);
    let good = format!(
        "[enforce]\ngroups = [\"{group}\"]\nexempt_users = [\"tfbrkroot\", \"tfbrkmal\"]\n"
    );
    // The same edit drops the compromised tfbrkmal and breaks [lockout].
    let broken = format!(
        "[enforce]\ngroups = [\"{group}\"]\nexempt_users = [\"tfbrkroot\"]\n[lockout]\nmax_failures = \"5\n"
    );
    let pam = Pam::new(&good);
    let state = pam.0.path().join("state");
    let write = |text: &str| {
        let body = format!(
            "version = 1\n{text}\n[storage]\nstate_dir = \"{}\"\n",
            state.display()
        );
        fs::write(pam.0.config(), body).unwrap();
    };
    let (key, _) = pam.enroll("tfbrkreq");
    let log = Syslog::new();
    let wrap = log.wrap();

    // No good config seen yet: everyone is refused, and told so.
    write(&broken);
    let (v, t) = pam.run_with(&wrap, "tfbrkroot", None, &[]);
    assert_eq!(v, Verdict::ServiceErr, "{t}");
    assert!(
        t.contains("two-factor configuration on this server is broken"),
        "{t}"
    );
    assert_eq!(
        log.wait_for("no last good copy to enforce", 1).len(),
        1,
        "{:?}",
        log.lines()
    );

    // A login with the valid file keeps a root-only copy of it.
    write(&good);
    let (v, t) = pam.run_with(&wrap, "tfbrkroot", None, &[]);
    assert_eq!(v, Verdict::Ignored, "{t}");
    let copy = state.join("last-good-config.toml");
    let meta = fs::metadata(&copy).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);
    let kept = fs::read_to_string(&copy).unwrap();
    assert!(kept.contains(&good), "{kept}");

    write(&broken);
    let (v, t) = pam.run_with(&wrap, "tfbrkroot", None, &[]);
    assert_eq!(
        v,
        Verdict::Ignored,
        "the break-glass account still gets in: {t}"
    );
    let (v, t) = pam.run_with(&wrap, "tfbrkfree", None, &[]);
    assert_eq!(
        v,
        Verdict::Ignored,
        "users no rule requires are not asked: {t}"
    );
    let (v, t) = pam.run_with(&wrap, "tfbrkreq", None, &[]);
    assert_eq!(v, Verdict::AuthErr, "no code, no login: {t}");
    let (v, t) = pam.run_with(&wrap, "tfbrkreq", None, &[&oathtool(&key)]);
    assert_eq!(v, Verdict::Success, "{t}");
    // Removed from exempt_users in the broken edit: no longer exempt.
    let (v, t) = pam.run_with(&wrap, "tfbrkmal", Some("127.0.0.1"), &[]);
    assert_eq!(v, Verdict::AuthErr, "{t}");
    assert!(t.contains("Set it up now"), "{t}");

    let errors = log.wait_for("enforcing the last good copy", 5);
    assert_eq!(errors.len(), 5, "one error line per login: {errors:#?}");
    assert!(
        errors.iter().all(|l| l.starts_with("<83>")
            && l.contains(" pam_twofactor[")
            && l.contains("config.toml:6:18: lockout.max_failures")
            && l.contains("twofactor edit-config")),
        "{errors:#?}"
    );
    assert_eq!(fs::read_to_string(&copy).unwrap(), kept, "the copy is kept");
}

/// What pam-u2f's dlsym_check does: load the module as libpam would and look up its
/// entry points.
#[test]
fn module_exports_the_pam_entry_points() {
    let so = pam_module_so();
    let script = "import ctypes,sys\nlib=ctypes.CDLL(sys.argv[1])\nfor n in ['pam_sm_authenticate','pam_sm_setcred','pam_sm_acct_mgmt','pam_sm_open_session','pam_sm_close_session','pam_sm_chauthtok']:\n    getattr(lib,n)\nprint('ok')";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&so)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nm = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&so)
        .output()
        .unwrap();
    let syms = String::from_utf8(nm.stdout).unwrap();
    let exported: Vec<&str> = syms
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter(|s| s.starts_with("pam_"))
        .collect();
    assert!(
        exported.contains(&"pam_sm_authenticate") && exported.contains(&"pam_sm_setcred"),
        "{exported:?}"
    );
    let ldd = Command::new("ldd").arg(&so).output().unwrap();
    assert!(
        String::from_utf8_lossy(&ldd.stdout).contains("libpam.so"),
        "links libpam"
    );
}

/// The one-prompt layout through real libpam and pam_unix, with real passwords: the
/// password is checked before the code, and a wrong password costs the code nothing.
#[test]
fn one_prompt_checks_the_password_before_the_code() {
    let home = tempfile::tempdir().unwrap();
    let mut accounts = Accounts::default();
    let user = accounts.login_user("tfsplit", &home.path().join("a"), PASSWORD);
    let pam = Pam::one_prompt(&format!("[enforce]\nusers = [\"{user}\"]\n"));
    let (key, backup) = pam.enroll(&user);
    let state = pam.0.path().join(format!("state/{user}.json"));
    let code = oathtool(&key);

    // A wrong password with the right code: refused by pam_unix, before the code is
    // looked at; the state is not touched, not even its failure count.
    let before = fs::read(&state).unwrap();
    let (v, t) = pam.run(&user, None, &[&format!("wrong-password{code}")]);
    assert_eq!(v, Verdict::AuthErr, "{t}");
    assert!(!t.contains("Wrong code"), "{t}");
    assert_eq!(fs::read(&state).unwrap(), before, "state changed:\n{t}");
    println!("--- wrong password, right code ---\n{t}--- end ---");

    // The same code, unspent, with the right password: one prompt, no code prompt.
    let (v, t) = pam.run(&user, None, &[&format!("{PASSWORD}{code}")]);
    assert_eq!(v, Verdict::Success, "{t}");
    assert!(t.contains("Password and code: "), "{t}");
    assert!(!t.contains("Authentication code"), "{t}");
    println!("--- right password, right code ---\n{t}--- end ---");

    // The right password with a wrong code: refused and counted.
    let (v, t) = pam.run(&user, None, &[&format!("{PASSWORD} 000000")]);
    assert_eq!(v, Verdict::AuthErr, "{t}");
    assert!(t.contains("Wrong code"), "{t}");
    assert_eq!(pam.store().load(&user).unwrap().lockout.failures, 1);
    println!("--- right password, wrong code ---\n{t}--- end ---");

    // A backup code after a space, and one in its dashed form appended directly.
    let (v, t) = pam.run(&user, None, &[&format!("wrong-password {}", backup[0])]);
    assert_eq!(v, Verdict::AuthErr, "{t}");
    assert_eq!(
        pam.store().load(&user).unwrap().backup_codes_left(),
        backup.len()
    );
    let (v, t) = pam.run(&user, None, &[&format!("{PASSWORD} {}", backup[0])]);
    assert_eq!(v, Verdict::Success, "{t}");
    assert!(t.contains("Backup code accepted"), "{t}");
    println!("--- right password, backup code ---\n{t}--- end ---");
    // Backup codes are shown dashed (xxxxx-xxxxx), the form that may be appended.
    assert_eq!(backup[1].find('-'), Some(5), "{backup:?}");
    let (v, t) = pam.run(&user, None, &[&format!("{PASSWORD}{}", backup[1])]);
    assert_eq!(v, Verdict::Success, "{t}");
    let left = pam.store().load(&user).unwrap().backup_codes_left();
    assert_eq!(left, backup.len() - 2);
}

/// Whoever needs no code types the password alone, even one that ends in digits; a
/// required user without an authenticator is told how to get one, and no QR code is
/// shown, since no second prompt could take its first code.
#[test]
fn one_prompt_splits_only_for_an_enabled_authenticator() {
    let home = tempfile::tempdir().unwrap();
    let mut accounts = Accounts::default();
    let free = accounts.login_user("tfsplitfree", &home.path().join("f"), "summer2024123456");
    let new = accounts.login_user("tfsplitnew", &home.path().join("n"), PASSWORD);
    let pam = Pam::one_prompt(&format!("[enforce]\nusers = [\"{new}\"]\n"));

    let (v, t) = pam.run(&free, None, &["summer2024123456"]);
    assert_eq!(v, Verdict::Success, "{t}");
    assert!(
        t.contains("Password and code: "),
        "the same prompt for everyone:\n{t}"
    );
    println!("--- not required, a password ending in digits ---\n{t}--- end ---");

    let (v, t) = pam.run(&new, None, &[PASSWORD]);
    assert_eq!(v, Verdict::AuthErr, "{t}");
    assert!(t.contains("twofactor enroll"), "{t}");
    assert!(!t.contains("Key:"), "{t}");
    assert!(pam.store().load(&new).unwrap().authenticator.is_none());
    println!("--- required, not enrolled ---\n{t}--- end ---");
}

/// An earlier module's PAM_AUTHTOK is the one prompt's answer (pam_wrapper's
/// pam_set_items sets it from the environment); and a second `pam_authenticate` on one
/// handle starts over: the code the first kept aside is never used again.
#[test]
fn one_prompt_takes_an_earlier_password_and_splits_once_per_authentication() {
    let home = tempfile::tempdir().unwrap();
    let mut accounts = Accounts::default();
    let user = accounts.login_user("tfsplittwice", &home.path().join("a"), PASSWORD);
    let config = format!("[enforce]\nusers = [\"{user}\"]\n");
    let set_items = "/usr/lib/x86_64-linux-gnu/pam_wrapper/pam_set_items.so";
    let pam = Pam::with_stack(
        &config,
        &format!("auth required {set_items}\n{ONE_PROMPT_STACK}"),
    );
    let (key, _) = pam.enroll(&user);
    let code = oathtool(&key);
    let given = Wrap {
        env: vec![("PAM_AUTHTOK".into(), format!("{PASSWORD}{code}"))],
        ..Wrap::default()
    };
    let (v, t) = pam.run_with(&given, &user, None, &[]);
    assert_eq!(v, Verdict::Success, "{t}");
    assert!(!t.contains("Password and code"), "asked again:\n{t}");

    // Without PAM_AUTHTOK in the environment, pam_set_items sets nothing: one prompt.
    let code = fresh_code(&key, &code);
    let twice = Wrap {
        authentications: 2,
        ..Wrap::default()
    };
    let (_, t) = pam.run_with(
        &twice,
        &user,
        None,
        &[&format!("{PASSWORD}{code}"), PASSWORD],
    );
    // pamtester reports each operation: the first succeeded, the second did not. Its
    // prompts and results travel on two pipes, so only counts are compared, not order.
    assert_eq!(t.matches("Password and code: ").count(), 2, "{t}");
    assert_eq!(t.matches("successfully authenticated").count(), 1, "{t}");
    assert!(t.contains("pamtester: Authentication failure"), "{t}");
    assert!(t.contains("No code after the password"), "{t}");
    assert!(
        !t.contains("already used"),
        "the first code was used again:\n{t}"
    );
}

/// Debian: the split line before common-auth as `pam-auth-update --enable twofactor`
/// writes it. Its pam_unix has no use_first_pass but takes the PAM_AUTHTOK the split line
/// set (doctor warns all the same), and its module line is the checking line.
#[test]
fn one_prompt_before_debians_common_auth() {
    let home = tempfile::tempdir().unwrap();
    let mut accounts = Accounts::default();
    let user = accounts.login_user("tfsplitdeb", &home.path().join("a"), PASSWORD);
    let pam = Pam::with_stack(
        &format!("[enforce]\nusers = [\"{user}\"]\n"),
        "auth requisite {module} split\n\
         auth [success=1 default=ignore] pam_unix.so nullok nodelay\n\
         auth requisite pam_deny.so\n\
         auth required pam_permit.so\n\
         auth required {module}\n",
    );
    let (key, _) = pam.enroll(&user);
    let code = oathtool(&key);
    let (v, t) = pam.run(&user, None, &[&format!("wrong{code}")]);
    assert_eq!(v, Verdict::AuthErr, "{t}");
    assert!(!t.contains("Wrong code"), "{t}");
    let (v, t) = pam.run(&user, None, &[&format!("{PASSWORD}{code}")]);
    assert_eq!(v, Verdict::Success, "{t}");
    assert_eq!(t.matches("Password").count(), 1, "asked twice:\n{t}");
}

/// Where journald runs, each login is one journal entry with a field for each part, so
/// `journalctl TWOFACTOR_USER=alice` finds it; nothing goes to syslog as well. The test
/// machine runs no journald: the socket is the test's own, at the real path, in a
/// private mount namespace.
#[test]
fn logins_reach_journald_with_a_field_for_each_part() {
    let mut accounts = Accounts::default();
    accounts.user("tfjournal", "users", &[]);
    let pam = Pam::new("[enforce]\nusers = [\"tfjournal\"]\n");
    let (key, _) = pam.enroll("tfjournal");
    let journal = twofactor_testkit::Journal::new();
    let wrap = journal.wrap();
    let (v, t) = pam.run_with(&wrap, "tfjournal", Some("192.0.2.7"), &[&oathtool(&key)]);
    assert_eq!(v, Verdict::Success, "{t}");
    let (v, t) = pam.run_with(&wrap, "tfjournal", Some("192.0.2.7"), &["000000"]);
    assert_eq!(v, Verdict::AuthErr, "{t}");

    let entries = journal.entries();
    let ours: Vec<_> = entries
        .iter()
        .filter(|e| e.contains(&("SYSLOG_IDENTIFIER".into(), "pam_twofactor".into())))
        .collect();
    let field = |e: &twofactor_testkit::JournalEntry, k: &str| {
        e.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    // The success; the wrong code, logged as it is counted; the end of that login.
    assert_eq!(ours.len(), 3, "{entries:#?}");
    for e in &ours {
        assert_eq!(field(e, "TWOFACTOR_USER"), "tfjournal", "{e:?}");
        assert_eq!(field(e, "TWOFACTOR_SERVICE"), "tf", "{e:?}");
        assert_eq!(field(e, "TWOFACTOR_RHOST"), "192.0.2.7", "{e:?}");
        assert_eq!(field(e, "SYSLOG_FACILITY"), "10", "{e:?}");
        assert!(field(e, "MESSAGE").contains("user=tfjournal"), "{e:?}");
    }
    assert_eq!(field(ours[0], "TWOFACTOR_OUTCOME"), "success");
    assert_eq!(field(ours[0], "TWOFACTOR_REASON"), "totp");
    assert_eq!(
        field(ours[0], "MESSAGE_ID"),
        twofactor_core::audit::message_id::SUCCESS
    );
    assert_eq!(field(ours[1], "TWOFACTOR_OUTCOME"), "failure");
    assert_eq!(field(ours[1], "TWOFACTOR_REASON"), "wrong code");
    assert_eq!(field(ours[1], "PRIORITY"), "4");
    assert_eq!(
        field(ours[1], "MESSAGE_ID"),
        twofactor_core::audit::message_id::FAILURE
    );
    assert!(
        journal.syslog.grep("pam_twofactor").is_empty(),
        "{:?}",
        journal.syslog.lines()
    );
}

/// `[ssh_factor]` beyond what sshd lets through: a test module earlier in the stack
/// plants `SSH_AUTH_INFO_0` as sshd would, so the module sees an expired certificate
/// (sshd itself refuses those before PAM). A valid one planted the same way stands for
/// the code; the expired one gets the prompt. The same variable in the process
/// environment (as `SSH_AUTH_INFO_0=… sudo` would put it) is never read.
#[test]
fn only_a_valid_certificate_in_the_pam_environment_stands_for_the_code() {
    let mut accounts = Accounts::default();
    accounts.user("tfcertpam", "users", &[]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = |n: &str| d.join(n).to_str().unwrap().to_string();
    let keygen = |args: &[&str]| {
        let out = Command::new("ssh-keygen").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for k in ["ca", "valid", "expired"] {
        keygen(&["-q", "-t", "ed25519", "-N", "", "-f", &path(k)]);
    }
    let fingerprint = keygen(&["-l", "-E", "sha256", "-f", &path("ca.pub")])
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let info = |name: &str, validity: &str| {
        keygen(&[
            "-q",
            "-s",
            &path("ca"),
            "-I",
            "sso",
            "-n",
            "tfcertpam",
            "-V",
            validity,
            &path(&format!("{name}.pub")),
        ]);
        let cert = fs::read_to_string(path(&format!("{name}-cert.pub"))).unwrap();
        let text = format!("publickey {}\n", cert.trim());
        fs::write(path(&format!("{name}.info")), &text).unwrap();
        text
    };
    let valid = info("valid", "-5m:+1h");
    info("expired", "20200101:20200102");
    let plant = twofactor_testkit::plant_auth_info_module(d);
    let config = format!(
        "[enforce]\nusers = [\"tfcertpam\"]\n[ssh_factor]\nservices = [\"tf\"]\n\
         cert_cas = [\"{fingerprint}\"]\n"
    );
    let stack = |info: &str| {
        format!(
            "auth optional {} file={}\nauth required {{module}}\n",
            plant.display(),
            path(info)
        )
    };

    let pam = Pam::with_stack(&config, &stack("valid.info"));
    let _ = pam.enroll("tfcertpam");
    let (v, t) = pam.run("tfcertpam", None, &[]);
    assert_eq!(v, Verdict::Success, "{t}");
    assert!(!t.contains("Authentication code"), "{t}");

    let pam = Pam::with_stack(&config, &stack("expired.info"));
    let _ = pam.enroll("tfcertpam");
    let (v, t) = pam.run("tfcertpam", None, &[]);
    assert_eq!(
        v,
        Verdict::AuthErr,
        "an expired certificate stood for the code:\n{t}"
    );
    assert!(t.contains("Authentication code"), "{t}");

    // Only the process environment has it: not read, so the code is asked for.
    let pam = Pam::new(&config);
    let (key2, _) = pam.enroll("tfcertpam");
    let wrap = Wrap {
        env: vec![("SSH_AUTH_INFO_0".into(), valid)],
        ..Wrap::default()
    };
    let (v, t) = pam.run_with(&wrap, "tfcertpam", None, &[&oathtool(&key2)]);
    assert_eq!(v, Verdict::Success, "{t}");
    assert!(t.contains("Authentication code"), "{t}");
}

/// The module links no TLS (`readelf -d`), and loads the fleet client only for
/// `backend = "postgresql"`, from beside itself, and only a client nobody else may
/// write. Without a usable one a required user is refused (PAM_AUTHINFO_UNAVAIL) with
/// the reason in the log, and a break-glass account still logs in.
#[test]
fn the_fleet_client_is_loaded_only_when_needed_and_only_if_trusted() {
    let out = Command::new("readelf")
        .arg("-d")
        .arg(pam_module_so())
        .output()
        .unwrap();
    let needed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(needed.contains("libpam.so"), "{needed}");
    assert!(
        !needed.contains("libssl") && !needed.contains("libcrypto"),
        "{needed}"
    );

    let mut accounts = Accounts::default();
    accounts.user("tfplugin", "users", &[]);
    let pam = Pam::new("");
    // A copy of the module in a directory of its own, root's and 0755.
    let lib = pam.0.path().join("lib");
    fs::create_dir(&lib).unwrap();
    fs::set_permissions(&lib, fs::Permissions::from_mode(0o755)).unwrap();
    let module = lib.join("pam_twofactor.so");
    fs::copy(pam_module_so(), &module).unwrap();
    let config = pam.0.path().join("fleet.toml");
    let missing = pam.0.path().join("missing");
    fs::write(
        &config,
        format!(
            "version = 1\n[enforce]\nusers = [\"tfplugin\"]\nexempt_users = [\"root\"]\n\
             [storage]\nbackend = \"postgresql\"\n[storage.postgresql]\n\
             hosts = [\"127.0.0.1:1\"]\ndbname = \"twofactor\"\n\
             ca = \"{m}/ca.pem\"\ncert = \"{m}/host.pem\"\nkey = \"{m}/host.key\"\n",
            m = missing.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(
        pam.0.services().join("tf"),
        format!(
            "auth required {} config={}\n",
            module.display(),
            config.display()
        ),
    )
    .unwrap();
    let log = Syslog::new();
    let wrap = log.wrap();
    let plugin = lib.join("libtwofactor_fleet.so");

    // No client beside the module: refused, and the log says what is missing.
    let (v, t) = pam.run_with(&wrap, "tfplugin", None, &[]);
    assert_eq!(v, Verdict::AuthInfoUnavail, "{t}");
    assert_eq!(
        log.wait_for("the fleet client cannot be loaded: no ", 1)
            .len(),
        1,
        "{:?}",
        log.lines()
    );
    // The break-glass account is decided before any store is opened.
    let (v, t) = pam.run_with(&wrap, "root", None, &[]);
    assert_eq!(v, Verdict::Ignored, "{t}");

    // A client others could write is never loaded.
    let built = pam_module_so().with_file_name("libtwofactor_fleet.so");
    fs::copy(&built, &plugin).unwrap();
    fs::set_permissions(&plugin, fs::Permissions::from_mode(0o666)).unwrap();
    let (v, t) = pam.run_with(&wrap, "tfplugin", None, &[]);
    assert_eq!(v, Verdict::AuthInfoUnavail, "{t}");
    assert_eq!(
        log.wait_for("writable by nobody else", 1).len(),
        1,
        "{:?}",
        log.lines()
    );

    // A symlink to a sound client in a directory anyone may write is never followed.
    let open_dir = pam.0.path().join("open");
    fs::create_dir(&open_dir).unwrap();
    fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o777)).unwrap();
    let planted = open_dir.join("fleet.so");
    fs::copy(&built, &planted).unwrap();
    fs::set_permissions(&planted, fs::Permissions::from_mode(0o644)).unwrap();
    fs::remove_file(&plugin).unwrap();
    std::os::unix::fs::symlink(&planted, &plugin).unwrap();
    let (v, t) = pam.run_with(&wrap, "tfplugin", None, &[]);
    assert_eq!(v, Verdict::AuthInfoUnavail, "{t}");
    assert_eq!(
        log.wait_for("is not a regular file (a symlink is never followed)", 1)
            .len(),
        1,
        "{:?}",
        log.lines()
    );
    fs::remove_file(&plugin).unwrap();
    fs::copy(&built, &plugin).unwrap();

    // A sound one is loaded: the login gets as far as the fleet's credentials.
    fs::set_permissions(&plugin, fs::Permissions::from_mode(0o644)).unwrap();
    let (v, t) = pam.run_with(&wrap, "tfplugin", None, &[]);
    assert_eq!(v, Verdict::AuthInfoUnavail, "{t}");
    let reached = log.wait_for(&format!("{}/ca.pem", missing.display()), 1);
    assert_eq!(reached.len(), 1, "{:?}", log.lines());
    assert!(!reached[0].contains("cannot be loaded"), "{reached:?}");
}
