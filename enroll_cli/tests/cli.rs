//! The real `twofactor` binary, run as root against a private config and state
//! directory: enrollment driven through stdin with oathtool codes, the JSON of each data
//! command, QR images decoded back, admin commands, a google-authenticator import, and a
//! reset followed by enrollment at login through the PAM module.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use twofactor_testkit::screen::{Screen, check_setup_screen};
use twofactor_testkit::{Accounts, PamFixture, Session, key_shown, oathtool, pamtester, tag};

const BIN: &str = env!("CARGO_BIN_EXE_twofactor");

fn cmd(f: &PamFixture, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).env("TWOFACTOR_CONFIG", f.config());
    c
}

fn run(f: &PamFixture, args: &[&str]) -> Output {
    cmd(f, args).stdin(Stdio::null()).output().unwrap()
}

fn ok(f: &PamFixture, args: &[&str]) -> String {
    let out = run(f, args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?} failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn fails(f: &PamFixture, args: &[&str]) -> String {
    let out = run(f, args);
    assert!(
        !out.status.success(),
        "{args:?} should fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(f: &PamFixture, args: &[&str]) -> Value {
    serde_json::from_str(&ok(f, args)).unwrap_or_else(|e| panic!("{args:?}: not JSON: {e}"))
}

/// Runs `twofactor enroll ARGS` answering the code prompt with oathtool from the key it
/// shows. Returns the key and everything printed.
fn enroll(f: &PamFixture, args: &[&str]) -> (String, String) {
    let child = cmd(f, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut s = Session::start(child);
    s.wait_for("Code from the app: ");
    let shown = s.wait_for_line("Key:");
    let key = key_shown(&shown);
    s.send(&oathtool(&key));
    let (code, text) = s.finish();
    assert_eq!(code, Some(0), "{text}");
    (key, text)
}

fn backup_codes(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("    ") && l.contains('-'))
        .flat_map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect()
}

#[test]
fn enroll_through_stdin_then_status_and_backup_codes() {
    let mut accounts = Accounts::default();
    accounts.user("tfcli1", "users", &[]);
    let f = PamFixture::new("[enforce]\nusers = [\"tfcli1\"]\n");
    let (_, text) = enroll(&f, &["enroll", "--user", "tfcli1"]);
    assert!(text.contains('▀') || text.contains('▄'), "QR code shown");
    assert!(text.contains("otpauth://totp/"), "{text}");
    let codes = backup_codes(&text);
    assert_eq!(codes.len(), 10, "{text}");
    let state = f.path().join("state/tfcli1.json");
    let meta = fs::metadata(&state).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o600));
    assert!(
        !fs::read_to_string(&state).unwrap().contains(&codes[0]),
        "backup codes are stored hashed"
    );

    let s = json(&f, &["status", "tfcli1", "--json"]);
    assert_eq!(s["user"], "tfcli1");
    assert_eq!(s["required"], true);
    assert_eq!(s["required_by"], "user list (enforce.users)");
    assert_eq!(s["enrolled"], true);
    assert_eq!(s["enabled"], true);
    assert_eq!(s["backup_codes_left"], 10);
    assert_eq!(s["locked"], false);
    assert_eq!(s["trusted_devices"], 0);

    // Enrolling again without --replace is refused with what to do instead.
    assert!(fails(&f, &["enroll", "--user", "tfcli1"]).contains("--replace"));

    let b = json(&f, &["backup-codes", "--user", "tfcli1", "--json"]);
    assert_eq!(b["backup_codes"].as_array().unwrap().len(), 10);
    assert_ne!(
        b["backup_codes"][0],
        codes[0].as_str(),
        "new codes replace the old ones"
    );

    let all = json(&f, &["status", "--all", "--json"]);
    assert_eq!(all.as_array().unwrap().len(), 1);
    let table = ok(&f, &["status", "--all"]);
    assert!(
        table.contains("USER") && table.contains("tfcli1"),
        "{table}"
    );

    let e = json(&f, &["explain", "tfcli1", "--json"]);
    assert_eq!(e["reason"], "user list (enforce.users)");
    assert!(e["server_time"].as_str().unwrap().ends_with("UTC"));
    let scoped = json(&f, &["explain", "tfcli1", "--service", "sshd", "--json"]);
    assert_eq!(scoped["service_in_scope"], true);
    let t = json(&f, &["trust", "list", "--user", "tfcli1", "--json"]);
    assert_eq!(t["trusted_devices"], Value::Array(vec![]));
}

/// Before anyone enrolls, `status --all` shows every member of a required group (primary
/// or supplementary), with the grace logins each has left.
#[test]
fn status_all_lists_required_group_members_who_never_logged_in() {
    let mut accounts = Accounts::default();
    let group = accounts.group(&format!("tfsg{}", tag()));
    let primary = accounts.user(&format!("tfsgp{}", tag()), &group, &[]);
    let member = accounts.user(&format!("tfsgm{}", tag()), "users", &[&group]);
    let outsider = accounts.user(&format!("tfsgo{}", tag()), "users", &[]);
    let f = PamFixture::new(&format!(
        "[enforce]\ngroups = [\"{group}\"]\n[enroll]\ngrace_logins = 2\n"
    ));
    let rows = json(&f, &["status", "--all", "--json"]);
    let row = |u: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["user"] == u)
            .cloned()
    };
    for u in [&primary, &member] {
        let r = row(u).unwrap_or_else(|| panic!("{u} missing: {rows:#}"));
        assert_eq!(r["required"], true, "{r}");
        assert_eq!(r["enrolled"], false, "{r}");
        assert_eq!(r["grace_logins_left"], 2, "{r}");
    }
    assert!(row(&outsider).is_none(), "not required, no state: {rows:#}");

    let table = ok(&f, &["status", "--all"]);
    let line = table.lines().find(|l| l.starts_with(&member)).unwrap();
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>()[..8],
        [member.as_str(), "yes", "no", "no", "0", "no", "0", "2"],
        "{table}"
    );
    assert!(
        table.contains("2 users; 2 required but not enrolled"),
        "{table}"
    );
    let one = ok(&f, &["status", &primary]);
    assert!(one.contains("Grace logins:   2 of 2 left"), "{one}");
}

/// `explain` prints the step the module takes, so it follows `enroll.at_login_networks`
/// and the address given with `--from`.
#[test]
fn explain_shows_the_modules_next_step_for_a_login_from_an_address() {
    let mut accounts = Accounts::default();
    let user = accounts.user(&format!("tfexp{}", tag()), "users", &[]);
    let f = PamFixture::new(&format!(
        "[enforce]\nusers = [\"{user}\"]\n[enroll]\nat_login_networks = [\"10.0.0.0/8\"]\n"
    ));
    let step = |args: &[&str]| {
        let mut all = vec!["explain", user.as_str(), "--json"];
        all.extend(args);
        json(&f, &all)["next_login"].as_str().unwrap().to_string()
    };
    assert!(step(&["--from", "10.1.2.3"]).starts_with("sets up an authenticator"));
    let outside = step(&["--from", "192.0.2.1"]);
    assert!(
        outside.starts_with("refused") && outside.contains("enroll.at_login_networks"),
        "{outside}"
    );
    assert!(
        step(&[]).starts_with("refused"),
        "a local login has no address"
    );
    let text = ok(
        &f,
        &["explain", &user, "--from", "10.1.2.3", "--service", "sshd"],
    );
    assert!(
        text.contains("Next login:    sets up an authenticator during the login")
            && text.contains("(through service sshd from 10.1.2.3;"),
        "{text}"
    );
}

#[test]
fn services_scope_shows_in_explain_and_check_config() {
    let mut accounts = Accounts::default();
    accounts.user("tfcli7", "users", &[]);
    let f = PamFixture::new("[enforce]\nusers = [\"tfcli7\"]\nservices = [\"sshd\"]\n");
    let e = json(&f, &["explain", "tfcli7", "--service", "sudo", "--json"]);
    assert_eq!(
        (e["service_in_scope"].clone(), e["required"].clone()),
        (Value::from(false), Value::from(false))
    );
    assert_eq!(
        e["reason"],
        "service sudo is not in enforce.services, so the module ignores it"
    );
    assert_eq!(e["required_elsewhere"], true);
    assert_eq!(e["reason_elsewhere"], "user list (enforce.users)");
    let text = ok(&f, &["explain", "tfcli7", "--service", "sudo"]);
    assert!(
        text.contains("Decision:      2FA is not asked: service sudo is not in enforce.services")
            && text.contains(
                "Elsewhere:     required in the services in scope (user list (enforce.users))"
            ),
        "{text}"
    );
    let e = json(&f, &["explain", "tfcli7", "--service", "sshd", "--json"]);
    assert_eq!(e["required"], true);
    assert!(ok(&f, &["check-config"]).contains("Only for the PAM services sshd."));
}

#[test]
fn no_verify_json_and_qr_images_decode_to_the_uri() {
    let mut accounts = Accounts::default();
    accounts.user("tfcli2", "users", &[]);
    accounts.user("tfcli3", "users", &[]);
    let f = PamFixture::new("");
    let png = f.path().join("qr.png");
    let svg = f.path().join("qr.svg");
    let j = json(
        &f,
        &[
            "enroll",
            "--user",
            "tfcli2",
            "--no-verify",
            "--json",
            "--qr-png",
            png.to_str().unwrap(),
        ],
    );
    for field in ["user", "secret", "otpauth_uri", "backup_codes"] {
        assert!(!j[field].is_null(), "missing {field}: {j}");
    }
    let uri = j["otpauth_uri"].as_str().unwrap();
    assert!(uri.contains(&format!("secret={}", j["secret"].as_str().unwrap())));
    let out = Command::new("zbarimg")
        .args(["--quiet", "--raw"])
        .arg(&png)
        .output()
        .expect("zbarimg (zbar-tools)");
    assert!(out.status.success(), "zbarimg could not read the PNG");
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), uri);
    assert_eq!(
        fs::metadata(&png).unwrap().mode() & 0o777,
        0o600,
        "the QR holds the secret"
    );

    let j2 = json(
        &f,
        &[
            "enroll",
            "--user",
            "tfcli3",
            "--no-verify",
            "--json",
            "--qr-svg",
            svg.to_str().unwrap(),
        ],
    );
    let body = fs::read_to_string(&svg).unwrap();
    assert!(body.contains("<svg") && body.contains("</svg>"));
    assert_ne!(j2["secret"], j["secret"]);
}

#[test]
fn replace_keeps_the_old_authenticator_until_the_new_one_verifies() {
    let mut accounts = Accounts::default();
    accounts.user("tfcli4", "users", &[]);
    let f = PamFixture::new("");
    let j = json(&f, &["enroll", "--user", "tfcli4", "--no-verify", "--json"]);
    let old = j["secret"].as_str().unwrap().to_string();
    // An aborted replace (no code) changes nothing.
    let out = run(&f, &["enroll", "--user", "tfcli4", "--replace"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was saved"));
    let state = fs::read_to_string(f.path().join("state/tfcli4.json")).unwrap();
    assert!(state.contains(&old), "the old key is still in force");
    let (new, _) = enroll(&f, &["enroll", "--user", "tfcli4", "--replace"]);
    let state = fs::read_to_string(f.path().join("state/tfcli4.json")).unwrap();
    assert!(state.contains(&new) && !state.contains(&old));
}

#[test]
fn disable_enable_remove_unlock_and_trust_revoke() {
    let mut accounts = Accounts::default();
    accounts.user("tfcli5", "users", &[]);
    let f = PamFixture::new("");
    json(&f, &["enroll", "--user", "tfcli5", "--no-verify", "--json"]);
    ok(&f, &["disable", "--user", "tfcli5"]);
    assert_eq!(json(&f, &["status", "tfcli5", "--json"])["enabled"], false);
    ok(&f, &["enable", "--user", "tfcli5"]);
    assert_eq!(json(&f, &["status", "tfcli5", "--json"])["enabled"], true);
    assert!(ok(&f, &["unlock", "tfcli5"]).contains("was not locked"));
    assert!(
        fails(&f, &["trust", "revoke", "--user", "tfcli5", "nope"]).contains("no trusted host")
    );
    ok(&f, &["trust", "revoke", "--user", "tfcli5", "--all"]);
    ok(&f, &["disable", "--user", "tfcli5", "--remove"]);
    assert_eq!(json(&f, &["status", "tfcli5", "--json"])["enrolled"], false);
    assert!(fails(&f, &["disable", "--user", "tfcli5"]).contains("no authenticator"));
}

#[test]
fn check_config_reports_file_line_column() {
    let f = PamFixture::new("");
    assert!(ok(&f, &["check-config"]).contains(": OK"));
    let bad = f.path().join("bad.toml");
    fs::write(&bad, "version = 1\n[totp]\ndigits = 7\n").unwrap();
    let err = fails(&f, &["check-config", bad.to_str().unwrap()]);
    assert_eq!(
        err.trim(),
        format!("{}:3:10: totp.digits must be 6 or 8, got 7", bad.display())
    );
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/config.toml");
    let tmp = f.path().join("shipped.toml");
    fs::copy(shipped, &tmp).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
    assert!(ok(&f, &["check-config", tmp.to_str().unwrap()]).contains("required for nobody"));
}

/// `edit-config` in the spirit of visudo: a typo is shown and never installed; the fixed
/// copy is installed atomically and becomes the last good config at once.
#[test]
fn edit_config_installs_only_a_valid_file_and_keeps_the_last_good_copy() {
    let f = PamFixture::new("[enforce]\nall_users = true\nexempt_users = [\"root\"]\n");
    let config = f.config();
    let before = fs::read_to_string(&config).unwrap();
    // The first edit makes a typo; the second fixes it and changes a setting.
    let editor = f.path().join("editor.sh");
    fs::write(
        &editor,
        "#!/bin/sh\nn=$(cat \"$0.count\" 2>/dev/null || echo 0); echo $((n+1)) > \"$0.count\"\n\
         if [ \"$n\" = 0 ]; then sed -i 's/^all_users/al_users/' \"$1\"\n\
         else sed -i 's/^al_users/all_users/' \"$1\"; printf '[lockout]\\nmax_failures = 7\\n' >> \"$1\"; fi\n",
    )
    .unwrap();
    fs::set_permissions(&editor, fs::Permissions::from_mode(0o755)).unwrap();
    let edit = |editor: &str, answers: &str| {
        let mut child = cmd(&f, &["edit-config"])
            .env("EDITOR", editor)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(answers.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (ok_, out, err) = edit(editor.to_str().unwrap(), "e\n");
    assert!(ok_, "{out}{err}");
    assert!(
        err.contains(&format!(
            "{}:3:1: unknown key \"al_users\" in [enforce]",
            config.display()
        )) && err.contains("What now? (e)dit again, e(x)it without installing"),
        "{err}"
    );
    assert!(out.contains("OK, installed."), "{out}");
    let installed = fs::read_to_string(&config).unwrap();
    assert!(installed.contains("all_users = true") && installed.contains("max_failures = 7"));
    assert_eq!(fs::metadata(&config).unwrap().mode() & 0o7777, 0o644);
    let copy = fs::read_to_string(f.path().join("state/last-good-config.toml")).unwrap();
    assert!(
        copy.ends_with(&installed),
        "the copy is the installed file:\n{copy}"
    );
    let leftovers: Vec<_> = names_in(f.path())
        .into_iter()
        .filter(|n| n.contains(".edit-") || n.ends_with(".new"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A typo and "x": nothing installed, and the edit is kept for the admin.
    let (ok_, _, err) = edit("sed -i s/^all_users/al_users/", "x\n");
    assert!(!ok_ && err.contains("was not changed"), "{err}");
    assert_eq!(fs::read_to_string(&config).unwrap(), installed);
    let rejected = config.with_file_name("config.toml.rejected");
    assert!(fs::read_to_string(&rejected).unwrap().contains("al_users"));
    assert_eq!(fs::metadata(&rejected).unwrap().mode() & 0o777, 0o600);
    // End of input is not a yes.
    let (ok_, _, _) = edit("sed -i s/^all_users/al_users/", "");
    assert!(!ok_);
    assert_eq!(fs::read_to_string(&config).unwrap(), installed);
    let (ok_, out, _) = edit("true", "");
    assert!(
        ok_ && out.contains("no changes; nothing installed"),
        "{out}"
    );

    // The same typo made by hand: check-config says what logins do meanwhile.
    fs::write(&config, before.replace("all_users", "al_users")).unwrap();
    let err = fails(&f, &["check-config"]);
    assert!(
        err.contains("Until it is fixed, logins enforce the last good copy")
            && err.contains("Exempt while broken: users root; groups none.")
            && err.contains("twofactor edit-config"),
        "{err}"
    );
    let (passed, report) = doctor_json(&f);
    assert!(!passed);
    let finding = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == "config")
        .unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(finding["severity"], "error");
    assert!(
        finding["message"]
            .as_str()
            .unwrap()
            .contains("logins enforce the last good copy"),
        "{finding}"
    );
}

#[test]
fn reset_makes_a_required_user_enroll_again_at_login() {
    let mut accounts = Accounts::default();
    accounts.user("tfcli6", "users", &[]);
    let f = PamFixture::new("[enforce]\nusers = [\"tfcli6\"]\n");
    f.service("tf", "auth required {module}\n");
    let j = json(&f, &["enroll", "--user", "tfcli6", "--no-verify", "--json"]);
    let key = j["secret"].as_str().unwrap().to_string();
    let mut s = pamtester(&f.services(), "tf", "tfcli6", None);
    s.send(&oathtool(&key));
    let (_, text) = s.finish();
    assert!(text.contains("successfully authenticated"), "{text}");

    let out = ok(&f, &["reset", "tfcli6"]);
    assert!(out.contains("at their next login"), "{out}");
    assert_eq!(json(&f, &["status", "tfcli6", "--json"])["enrolled"], false);
    let s = pamtester(&f.services(), "tf", "tfcli6", None);
    s.wait_for("Code from the app to finish setup: ");
    let shown = s.wait_for("Set it up now");
    assert!(shown.contains("Key:"), "{shown}");
    s.finish();
}

#[test]
fn import_from_a_real_google_authenticator_file() {
    let f = PamFixture::new("[enforce]\nall_users = true\n");
    f.service("tf", "auth required {module}\n");
    let mut acct = Accounts::default();
    let user = acct.login_user(
        &format!("tfga{}", tag()),
        &f.path().join("home"),
        "x-Pass-123",
    );
    let file = f.path().join("home/.google_authenticator");
    let status = Command::new("google-authenticator")
        .args([
            "-t", "-d", "-f", "-r", "3", "-R", "30", "-w", "5", "-e", "4", "-q", "-Q", "NONE", "-s",
        ])
        .arg(&file)
        .status()
        .expect("google-authenticator (libpam-google-authenticator)");
    assert!(status.success());
    assert!(
        Command::new("chown")
            .arg(&user)
            .arg(&file)
            .status()
            .unwrap()
            .success()
    );
    let text = fs::read_to_string(&file).unwrap();
    let secret = text.lines().next().unwrap().to_string();
    let scratch: Vec<&str> = text
        .lines()
        .filter(|l| l.len() == 8 && l.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    assert_eq!(scratch.len(), 4);

    let out = ok(&f, &["import-google-authenticator", &user, "--keep"]);
    assert!(out.contains("4 scratch codes became backup codes"), "{out}");
    assert!(file.exists(), "--keep keeps the file");
    assert!(fails(&f, &["import-google-authenticator", &user]).contains("already has"));

    let login = |answer: &str| {
        let mut s = pamtester(&f.services(), "tf", &user, None);
        s.send(answer);
        s.finish().1
    };
    assert!(
        login(&oathtool(&secret)).contains("successfully authenticated"),
        "oathtool code on the imported secret"
    );
    assert!(
        login(scratch[0]).contains("successfully authenticated"),
        "a scratch code works"
    );
    let again = login(scratch[0]);
    assert!(
        again.contains("Authentication failure"),
        "a scratch code works once: {again}"
    );

    // --all finds the user through /etc/passwd (--keep: other accounts on this machine
    // must not lose their files to a test).
    ok(&f, &["reset", &user]);
    let all = ok(&f, &["import-google-authenticator", "--all", "--keep"]);
    assert!(
        all.contains(&format!("Imported {user} from {}", file.display())),
        "{all}"
    );
    assert_eq!(json(&f, &["status", &user, "--json"])["enrolled"], true);

    // Without --keep the file goes; HOTP files are refused with a clear message.
    ok(&f, &["reset", &user]);
    ok(&f, &["import-google-authenticator", &user]);
    assert!(!file.exists());
    ok(&f, &["reset", &user]);
    let hotp = f.path().join("hotp");
    Command::new("google-authenticator")
        .args([
            "-c", "-f", "-w", "3", "-e", "2", "-q", "-r", "3", "-R", "30", "-Q", "NONE", "-s",
        ])
        .arg(&hotp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    // The file must be the user's own.
    let uid = fs::metadata(f.path().join("home")).map(|m| m.uid()).ok();
    let uid = uid.unwrap_or_else(|| {
        let out = Command::new("id").args(["-u", &user]).output().unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    });
    std::os::unix::fs::chown(&hotp, Some(uid), None).unwrap();
    let err = fails(
        &f,
        &[
            "import-google-authenticator",
            &user,
            "--file",
            hotp.to_str().unwrap(),
        ],
    );
    assert!(err.contains("HOTP"), "{err}");
}

#[test]
fn docs_in_packaging_match_the_cli() {
    let f = PamFixture::new("");
    let dir = f.path().join("docs");
    fs::create_dir(&dir).unwrap();
    ok(&f, &["generate-docs", dir.to_str().unwrap()]);
    let committed = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging");
    let mut generated: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    generated.sort();
    assert!(
        generated.contains(&"twofactor-enroll.1".to_string()),
        "{generated:?}"
    );
    for name in &generated {
        let sub = if name.ends_with(".1") {
            "man"
        } else {
            "completions"
        };
        let fresh = fs::read(dir.join(name)).unwrap();
        let kept = fs::read(format!("{committed}/{sub}/{name}")).unwrap_or_default();
        assert!(
            fresh == kept,
            "packaging/{sub}/{name} is out of date: run `twofactor generate-docs DIR` and copy it there"
        );
    }
}

#[test]
fn names_in_rules_must_be_real_and_canonical() {
    let mut accounts = Accounts::default();
    let user = accounts.user(&format!("tfname{}", tag()), "users", &[]);
    let alias = accounts.alias(&format!("tfnamea{}", tag()), &user);
    let f = PamFixture::new(&format!(
        "[enforce]\ngroups = [\"sudoo\"]\nusers = [\"{user}\", \"{alias}\", \"tfnosuchuser\"]\n"
    ));
    let err = fails(&f, &["check-config"]);
    assert!(
        err.contains("enforce.groups: no group \"sudoo\" is known to the name service"),
        "{err}"
    );
    assert!(err.contains("no user \"tfnosuchuser\""), "{err}");
    assert!(
        err.contains(&format!(
            "{alias:?} is another name of the account {user:?}"
        )),
        "{err}"
    );
    assert!(
        !err.contains(&format!("\"{user}\" is")),
        "the canonical name is fine: {err}"
    );
    let (passed, j) = doctor_json(&f);
    let names = j["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["id"] == "rule-name" && f["severity"] == "error")
        .count();
    assert_eq!(names, 3, "{j}");
    assert!(!passed);
}

#[test]
fn tidy_merges_state_kept_under_another_name_and_removes_leftovers() {
    let mut accounts = Accounts::default();
    let user = accounts.user(&format!("tftidy{}", tag()), "users", &[]);
    let alias = accounts.alias(&format!("tftidya{}", tag()), &user);
    let f = PamFixture::new(&format!("[enforce]\nusers = [\"{user}\"]\n"));
    // Enrolled under the other name, as a module that keyed state by the typed name did.
    twofactor_testkit::enroll(&f.store(), &alias, &mut twofactor_core::random::OsRandom);
    let state = f.path().join("state");
    fs::write(state.join(format!(".{user}.0123456789abcdef.tmp")), b"{").unwrap();
    fs::write(state.join("tfgone.lock"), b"").unwrap();
    fs::set_permissions(state.join("tfgone.lock"), fs::Permissions::from_mode(0o600)).unwrap();

    let (passed, j) = doctor_json(&f);
    assert!(!passed, "state under another name is an error");
    let has = |id: &str| {
        j["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["id"] == id)
    };
    assert!(has("alias-state") && has("leftovers"), "{j}");
    assert_eq!(json(&f, &["status", &user, "--json"])["enrolled"], false);

    let before: Vec<String> = names_in(&state);
    let dry = ok(&f, &["tidy", "--dry-run"]);
    assert!(
        dry.contains(&format!("would merge {alias}.json into {user}.json")),
        "{dry}"
    );
    assert_eq!(names_in(&state), before, "--dry-run changes nothing");
    let done = ok(&f, &["tidy"]);
    assert!(
        done.contains(&format!("merged {alias}.json into {user}.json")),
        "{done}"
    );
    assert_eq!(
        names_in(&state),
        [format!("{user}.json"), format!("{user}.lock")],
        "{done}"
    );
    assert_eq!(json(&f, &["status", &user, "--json"])["enrolled"], true);
    assert!(ok(&f, &["tidy"]).contains("Nothing to tidy"));
}

/// `twofactor doctor --json` over Debian's stacks with the profile enabled: whether it
/// passed, and its report.
fn doctor_json(f: &PamFixture) -> (bool, Value) {
    let out = cmd(f, &["doctor", "--json", "--pam-dir"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/doctor/debian-enabled"
        ))
        .output()
        .unwrap();
    (
        out.status.success(),
        serde_json::from_slice(&out.stdout).unwrap(),
    )
}

fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn import_refuses_links_root_files_and_other_owners() {
    let f = PamFixture::new("[enforce]\nall_users = true\n");
    let mut acct = Accounts::default();
    let base = tempfile::tempdir().unwrap();
    fs::set_permissions(base.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let home = base.path().join("home");
    let user = acct.login_user(&format!("tfimp{}", tag()), &home, "Import-Pass-1");
    let uid = fs::metadata(&home).unwrap().uid();
    let body = "JBSWY3DPEHPK3PXPJBSWY3DPEH\n\" TOTP_AUTH\n";
    let put = |path: &std::path::Path, owner: u32| {
        fs::write(path, body).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o400)).unwrap();
        std::os::unix::fs::chown(path, Some(owner), None).unwrap();
    };
    let real = home.join("real");
    fs::create_dir(&real).unwrap();
    let file = real.join(".google_authenticator");
    // Root-owned: not the user's secret.
    put(&file, 0);
    // An import that must be refused, leaving the file where it is.
    let refused = |p: &std::path::Path| {
        fails(
            &f,
            &[
                "import-google-authenticator",
                &user,
                "--file",
                p.to_str().unwrap(),
                "--keep",
            ],
        )
    };
    let err = refused(&file);
    assert!(err.contains("not by the user"), "{err}");
    // Hard-linked from elsewhere.
    put(&file, uid);
    let other = home.join("other-link");
    fs::hard_link(&file, &other).unwrap();
    let err = refused(&file);
    assert!(err.contains("hard links"), "{err}");
    fs::remove_file(&other).unwrap();
    // A symbolic link in an intermediate directory.
    let link = home.join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let via = link.join(".google_authenticator");
    let err = refused(&via);
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(json(&f, &["status", &user, "--json"])["enrolled"], false);
    // The same file by its real path is taken over.
    let out = ok(
        &f,
        &[
            "import-google-authenticator",
            &user,
            "--file",
            file.to_str().unwrap(),
        ],
    );
    assert!(out.contains("removed the file"), "{out}");
    assert!(!file.exists());
    assert_eq!(json(&f, &["status", &user, "--json"])["enrolled"], true);
}

/// Backup codes on paper: a one-page PDF a PDF checker accepts, whose text holds every
/// code, the account and the advice; the same as text; both mode 0600. A path that
/// cannot be written stops the command before the old codes are voided.
#[test]
fn backup_codes_on_paper_as_pdf_and_text() {
    let f =
        PamFixture::new("[enforce]\nusers = [\"tfpaper\"]\n[enroll]\nissuer = \"Acme (prod)\"\n");
    let mut acct = Accounts::default();
    acct.user("tfpaper", "users", &[]);
    let made = json(
        &f,
        &["enroll", "--user", "tfpaper", "--no-verify", "--json"],
    );
    let old = made["backup_codes"][0].as_str().unwrap().to_string();
    let pdf = f.path().join("codes.pdf");
    let txt = f.path().join("codes.txt");

    let err = fails(
        &f,
        &[
            "backup-codes",
            "--user",
            "tfpaper",
            "--pdf",
            "/nonexistent/codes.pdf",
        ],
    );
    assert!(err.contains("nothing was changed"), "{err}");
    let still = json(&f, &["status", "tfpaper", "--json"]);
    assert_eq!(still["backup_codes_left"], 10);

    let out = json(
        &f,
        &[
            "backup-codes",
            "--user",
            "tfpaper",
            "--json",
            "--pdf",
            pdf.to_str().unwrap(),
            "--txt",
            txt.to_str().unwrap(),
        ],
    );
    let codes: Vec<&str> = out["backup_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(!codes.contains(&old.as_str()));
    for file in [&pdf, &txt] {
        let meta = fs::metadata(file).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600, "{}", file.display());
    }
    let check = Command::new("qpdf")
        .arg("--check")
        .arg(&pdf)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "qpdf --check: {}",
        String::from_utf8_lossy(&check.stdout)
    );
    let info = Command::new("pdfinfo").arg(&pdf).output().unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("Pages:           1"), "{info}");
    assert!(info.contains("595 x 792 pts"), "{info}");
    let shown = Command::new("pdftotext")
        .arg(&pdf)
        .arg("-")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    let text = fs::read_to_string(&txt).unwrap();
    for c in &codes {
        assert!(shown.contains(c), "{c} not in the PDF:\n{shown}");
        assert!(text.contains(&format!("[ ]  {c}")), "{text}");
    }
    for part in [
        "tfpaper",
        "Acme (prod)",
        "UTC",
        "Each code works once",
        "enroll --replace",
    ] {
        assert!(shown.contains(part), "{part:?} not in the PDF:\n{shown}");
        assert!(text.contains(part), "{part:?} not in the text:\n{text}");
    }

    // A code read back off the page logs in through libpam, once.
    let printed = shown
        .split_whitespace()
        .find(|w| w.len() == 11 && w.as_bytes()[5] == b'-')
        .unwrap_or_else(|| panic!("no code on the page:\n{shown}"))
        .to_string();
    f.service("tf", "auth required {module}\n");
    let login = |code: &str| {
        let mut s = pamtester(&f.services(), "tf", "tfpaper", None);
        s.send(code);
        s.finish().1
    };
    let t = login(&printed);
    assert!(t.contains("successfully authenticated"), "{printed}: {t}");
    assert!(t.contains("9 backup codes left"), "{t}");
    let t = login(&printed);
    assert!(!t.contains("successfully authenticated"), "used twice: {t}");
}

/// `twofactor enroll` in an 80x24 terminal: at the code prompt the whole QR code, the key
/// and the prompt are on screen, and the QR code read off the screen decodes to the URI.
#[test]
fn enroll_fits_80x24_and_its_qr_code_scans_off_the_screen() {
    let mut accounts = Accounts::default();
    accounts.user("tfcliqr", "users", &[]);
    let f = PamFixture::new(
        "[enforce]\nusers = [\"tfcliqr\"]\n[enroll]\nissuer = \"twofactor demo\"\n",
    );
    let screen = Screen::start(
        80,
        24,
        &format!(
            "env TWOFACTOR_CONFIG={} {BIN} enroll --user tfcliqr",
            f.config().display()
        ),
    );
    let shown = screen.wait_for("Code from the app:");
    let text = shown.join("\n");
    println!("--- twofactor enroll, 80x24 ---\n{text}\n--- end ---");
    let (key, qr_rows) = check_setup_screen(&shown, "Code from the app:", "tfcliqr");
    println!("QR rows on screen: {qr_rows}");
    screen.type_line(&oathtool(&key));
    screen.wait_for("Your authenticator is set up");
    assert_eq!(json(&f, &["status", "tfcliqr", "--json"])["enrolled"], true);
}
