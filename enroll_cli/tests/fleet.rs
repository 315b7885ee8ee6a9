//! The real `twofactor` binary against a throwaway PostgreSQL: `fleet init` run twice
//! changes nothing, a host's config cannot run admin commands and says where they run,
//! the admin config can, and `fleet rotate-key` re-encrypts secrets without breaking a
//! login. Needs root.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use twofactor_core::auth::{CodeResult, Purpose};
use twofactor_core::backend::{AuthenticatorId, Authority, Backend};
use twofactor_core::config::Config;
use twofactor_core::random::OsRandom;
use twofactor_core::store::{Store, StoreError};
use twofactor_core::totp::{SecretKey, TotpParams};
use twofactor_core::trusted::RemoteHost;
use twofactor_testkit::conformance::now;
use twofactor_testkit::postgres::{ADMIN, Cluster, DBNAME, HOSTS};
use twofactor_testkit::{Accounts, enroll_key, tag};

const BIN: &str = env!("CARGO_BIN_EXE_twofactor");

/// A config file for `client` (a host or the administrator), root-owned 0644.
fn config_for(c: &Cluster, dir: &Path, client: &str) -> PathBuf {
    let path = dir.join(format!("{client}.toml"));
    fs::write(
        &path,
        c.config_text(client, "[enforce]\nall_users = true\n"),
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    path
}

fn run(config: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null());
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    cmd.output().unwrap()
}

fn ok(config: Option<&Path>, args: &[&str]) -> String {
    let out = run(config, args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?} failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn fails(config: Option<&Path>, args: &[&str]) -> String {
    let out = run(config, args);
    assert!(
        !out.status.success(),
        "{args:?} should fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(config: Option<&Path>, args: &[&str]) -> Value {
    serde_json::from_str(&ok(config, args)).unwrap_or_else(|e| panic!("{args:?}: not JSON: {e}"))
}

/// A login on host `h` with the current TOTP code of `key`.
fn totp_login(h: &dyn Backend, user: &str, key: &SecretKey) -> CodeResult {
    let p = TotpParams::default();
    let code = key.code_at_step(&p, p.step_at(now())).to_string();
    h.verify(user, &code, Purpose::Login, &Config::default())
        .unwrap()
        .result
}

/// The strings of a JSON array.
fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

fn url_for(c: &Cluster, db: &str) -> String {
    c.admin_url()
        .replace(&format!("dbname={DBNAME}"), &format!("dbname={db}"))
}

#[test]
fn fleet_init_creates_the_schema_and_a_second_run_changes_nothing() {
    let c = &Cluster::start();
    let key = c.path().join("fleet.key");
    let key = key.to_str().unwrap();
    c.psql("postgres", "CREATE DATABASE fresh");
    let url = url_for(c, "fresh");

    let first = ok(
        None,
        &["fleet", "init", "--admin-url", &url, "--key-file", key],
    );
    assert!(
        first.contains(&format!(
            "Created the twofactor schema (version {}) in database fresh",
            twofactor_core::backend::postgresql::SCHEMA_VERSION
        )),
        "{first}"
    );
    assert!(
        first.contains(
            "hostssl fresh +twofactor_hosts,twofactor_admin 0.0.0.0/0 cert map=twofactor"
        ),
        "{first}"
    );
    // pg_dump marks each dump with a random \restrict token; the rest must not change.
    let dump = || -> Vec<String> {
        c.dump_of("fresh")
            .lines()
            .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
            .map(str::to_string)
            .collect()
    };
    let before = dump();
    let again = json(
        None,
        &[
            "--json",
            "fleet",
            "init",
            "--admin-url",
            &url,
            "--key-file",
            key,
        ],
    );
    assert_eq!(again["changed"], false, "{again}");
    assert_eq!(
        again["schema_version"],
        twofactor_core::backend::postgresql::SCHEMA_VERSION
    );
    assert_eq!(again["key_file"], key);
    let after = dump();
    let changed: Vec<_> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b != a)
        .take(5)
        .collect();
    assert!(
        changed.is_empty() && before.len() == after.len(),
        "a second init changed the database: {changed:?}"
    );

    // A key file the server cannot read fails the command, and nothing is left half made.
    c.psql("postgres", "CREATE DATABASE nokey");
    let err = fails(
        None,
        &[
            "fleet",
            "init",
            "--admin-url",
            &url_for(c, "nokey"),
            "--key-file",
            "/nonexistent/twofactor.key",
        ],
    );
    assert!(
        err.contains("/nonexistent/twofactor.key") && err.contains("openssl rand -hex 32"),
        "{err}"
    );
    assert_eq!(
        c.psql("nokey", "SELECT to_regclass('twofactor.meta') IS NULL")
            .trim(),
        "t"
    );
}

#[test]
fn admin_commands_need_the_admin_config_and_work_with_it() {
    let c = &Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let host = config_for(c, dir.path(), HOSTS[0]);
    let admin = config_for(c, dir.path(), ADMIN);
    let mut accounts = Accounts::default();
    let user = accounts.user(&format!("tffleet{}", tag()), "users", &[]);

    // Provisioning without a code is an administrator's: refused with the host's config.
    let err = fails(Some(&host), &["enroll", "--user", &user, "--no-verify"]);
    assert!(err.contains("twofactor_admin"), "{err}");
    let made = json(
        Some(&admin),
        &["--json", "enroll", "--user", &user, "--no-verify"],
    );
    let key = SecretKey::from_base32(made["secret"].as_str().unwrap()).unwrap();

    // The host sees the user (status reads facts through the host role)...
    let status = json(Some(&host), &["--json", "status", &user]);
    assert_eq!(status["enrolled"], true, "{status}");
    // ...and so does the administrator, whose config has no [enforce] of the hosts':
    // whether the user is required is what hosts reported, never a bare "no".
    let status = json(Some(&admin), &["--json", "status", &user]);
    assert_eq!(status["enrolled"], true, "{status}");
    assert_eq!(status["required"], Value::Null, "{status}");
    let text = ok(Some(&admin), &["status", &user]);
    assert!(
        text.contains("no host has reported requiring this user"),
        "{text}"
    );

    // A host that requires a user who never enrolled reports it at login, labelled with
    // itself; the admin view lists that user and the host.
    let waiting = accounts.user(&format!("tfwait{}", tag()), "users", &[]);
    let h0 = c.backend(HOSTS[0]);
    assert!(!h0.login_facts(&waiting, true).unwrap().is_enrolled());
    let all = ok(Some(&admin), &["status", "--all"]);
    let line = all
        .lines()
        .find(|l| {
            l.trim_start()
                .starts_with(&format!("{waiting}: required by"))
        })
        .unwrap_or_else(|| panic!("{waiting} not listed as required and not enrolled:\n{all}"));
    assert!(line.contains(HOSTS[0]), "{line}");
    let status = json(Some(&admin), &["--json", "status", &waiting]);
    assert_eq!(status["required"], true, "{status}");
    assert_eq!(status["required_by_hosts"][0]["host"], HOSTS[0], "{status}");
    let text = ok(Some(&admin), &["status", &waiting]);
    assert!(text.contains("required by 1 host"), "{text}");
    // The report is refreshed hourly; "last reported" is the host's latest login of the
    // user all the same, not the hour's first report.
    c.psql(
        DBNAME,
        &format!(
            "UPDATE twofactor.required_by SET reported_at = now() - interval '50 minutes' \
              WHERE name = '{waiting}'"
        ),
    );
    assert_eq!(h0.count_grace_login(&waiting, 3).unwrap(), Some(2));
    let status = json(Some(&admin), &["--json", "status", &waiting]);
    let reported = status["required_by_hosts"][0]["reported_at"]
        .as_i64()
        .unwrap();
    let latest = i64::try_from(now()).unwrap();
    assert!(latest - reported < 60, "{status}");
    // A host whose config stops requiring the user withdraws its report.
    h0.login_facts(&waiting, false).unwrap();
    let status = json(Some(&admin), &["--json", "status", &waiting]);
    assert_eq!(status["required"], Value::Null, "{status}");
    // ...but listing, unlocking and resetting are the administrator's.
    for args in [
        vec!["status", "--all"],
        vec!["unlock", user.as_str()],
        vec!["reset", user.as_str()],
    ] {
        let err = fails(Some(&host), &args);
        assert!(
            err.contains("pg_ident.conf maps to twofactor_admin"),
            "{args:?}: {err}"
        );
    }

    // Lock the user from a host, then the administrator unlocks and resets.
    let config = Config::default();
    let h = c.backend(HOSTS[1]);
    for _ in 0..config.lockout.max_failures {
        h.verify(&user, "000000", Purpose::Login, &config).unwrap();
    }
    assert!(h.facts(&user).unwrap().lockout.locked_for(now()).is_some());
    let all = json(Some(&admin), &["--json", "status", "--all"]);
    assert!(all.to_string().contains(&user), "{all}");
    let unlocked = ok(Some(&admin), &["unlock", &user]);
    assert!(unlocked.contains(&format!("Unlocked {user}")), "{unlocked}");
    assert_eq!(totp_login(&h, &user, &key), CodeResult::Totp);
    h.login_facts(&user, true).unwrap();
    let reset = ok(Some(&admin), &["reset", &user]);
    assert!(!h.facts(&user).unwrap().is_enrolled());
    assert!(
        reset.contains("required by 1 host") && reset.contains(HOSTS[1]),
        "{reset}"
    );
    assert!(!reset.contains("not required"), "{reset}");

    // The audit, as the administrator reads it: every host's rows about the user.
    let log = ok(Some(&admin), &["log", "--user", &user]);
    assert!(
        log.lines()
            .any(|l| l.contains(HOSTS[1]) && l.contains("wrong code")),
        "{log}"
    );
    assert!(log.lines().any(|l| l.contains("reset")), "{log}");
    let rows = json(
        Some(&admin),
        &[
            "--json",
            "log",
            "--user",
            &user,
            "--outcome",
            "totp",
            "--since",
            "1h",
        ],
    );
    let rows = rows.as_array().unwrap();
    assert!(!rows.is_empty());
    assert!(
        rows.iter()
            .all(|r| r["outcome"] == "totp" && r["user"] == user.as_str()),
        "{rows:?}"
    );
    let none = json(
        Some(&admin),
        &["--json", "log", "--user", &user, "--since", "2099-01-01"],
    );
    assert_eq!(none.as_array().map(Vec::len), Some(0), "{none}");
    let err = fails(Some(&admin), &["log", "--since", "yesterday"]);
    assert!(err.contains("--since"), "{err}");
    let err = fails(Some(&host), &["log", "--user", &user]);
    assert!(err.contains("admin config"), "{err}");
}

#[test]
fn enrollments_take_the_fleets_issuer_not_the_admin_machines_name() {
    let c = &Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let admin = config_for(c, dir.path(), ADMIN);
    let mut accounts = Accounts::default();
    let user = accounts.user(&format!("tfissuer{}", tag()), "users", &[]);
    let url = c.admin_url();
    let key = c.path().join("fleet.key");
    let init = json(
        None,
        &[
            "--json",
            "fleet",
            "init",
            "--admin-url",
            &url,
            "--key-file",
            key.to_str().unwrap(),
            "--issuer",
            "Example Fleet",
        ],
    );
    assert_eq!(init["issuer"], "Example Fleet", "{init}");
    let made = json(
        Some(&admin),
        &["--json", "enroll", "--user", &user, "--no-verify"],
    );
    let uri = made["otpauth_uri"].as_str().unwrap_or_default().to_string();
    assert!(
        uri.contains("issuer=Example%20Fleet") && uri.contains("/Example%20Fleet:"),
        "{made}"
    );
    // An issuer the database refuses leaves the stored one.
    let err = fails(
        None,
        &[
            "fleet",
            "init",
            "--admin-url",
            &url,
            "--key-file",
            key.to_str().unwrap(),
            "--issuer",
            "a:b",
        ],
    );
    assert!(err.contains("--issuer"), "{err}");
}

#[test]
fn rotate_key_reencrypts_secrets_and_keeps_logins_and_backup_codes_working() {
    let c = &Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let admin = config_for(c, dir.path(), ADMIN);
    let mut accounts = Accounts::default();
    let user = accounts.user(&format!("tfrotate{}", tag()), "users", &[]);
    let made = json(
        Some(&admin),
        &["--json", "enroll", "--user", &user, "--no-verify"],
    );
    let key = SecretKey::from_base32(made["secret"].as_str().unwrap()).unwrap();
    let backups = strings(&made["backup_codes"]);
    let old_key = c.path().join("fleet.key");
    let new_key = c.new_key("fleet-2.key");
    let url = c.admin_url();

    let out = ok(
        None,
        &[
            "fleet",
            "rotate-key",
            "--admin-url",
            &url,
            "--key-file",
            new_key.to_str().unwrap(),
        ],
    );
    assert!(out.contains("1 secret re-encrypted"), "{out}");
    assert!(
        out.contains(&format!(
            "{} unspent backup codes still hashed with {}",
            backups.len(),
            old_key.display()
        )),
        "{out}"
    );
    // Who must make new codes before the old key file can go, and the whole command
    // that voids them instead.
    assert!(out.contains(&format!("Their users: {user}")), "{out}");
    assert!(
        out.contains(&format!(
            "twofactor fleet rotate-key --admin-url '{url}' --key-file {} --retire {}",
            new_key.display(),
            old_key.display()
        )),
        "{out}"
    );
    let current = c.psql(
        DBNAME,
        "SELECT f.path, count(u.name) FROM twofactor.keys k \
         JOIN twofactor_keys.files f ON f.id = k.id \
         LEFT JOIN twofactor.users u ON u.key_id = k.id WHERE k.current GROUP BY f.path",
    );
    assert_eq!(current.trim(), format!("{}|1", new_key.display()));

    // The secret decrypts under the new key, and old codes still verify under the old one.
    let config = Config::default();
    let h = c.backend(HOSTS[0]);
    assert_eq!(totp_login(&h, &user, &key), CodeResult::Totp);
    assert!(
        h.verify(&user, &backups[0], Purpose::Login, &config)
            .unwrap()
            .result
            .is_success()
    );
    // Rotating to the same key again has nothing left to do.
    let again = json(
        None,
        &[
            "--json",
            "fleet",
            "rotate-key",
            "--admin-url",
            &url,
            "--key-file",
            new_key.to_str().unwrap(),
        ],
    );
    assert_eq!(again["secrets_reencrypted"], 0, "{again}");
    assert_eq!(
        again["backup_codes_on_old_keys"][0]["users"][0],
        user.as_str(),
        "{again}"
    );

    // Retiring the old key voids those codes and forgets the file; the user is marked
    // to be told at their next login, until they make new codes.
    let retired = ok(
        None,
        &[
            "fleet",
            "rotate-key",
            "--admin-url",
            &url,
            "--key-file",
            new_key.to_str().unwrap(),
            "--retire",
            old_key.to_str().unwrap(),
        ],
    );
    assert!(
        retired.contains(&format!("Retired {}", old_key.display())) && retired.contains(&user),
        "{retired}"
    );
    // Said in order, and nothing said twice over.
    let voided = retired.find("Retired").unwrap();
    let none_left = retired
        .find("No unspent backup code uses any other older key now")
        .expect(&retired);
    assert!(voided < none_left, "{retired}");
    let facts = h.facts(&user).unwrap();
    assert!(
        facts.backup_codes_voided && facts.backup_codes_left == 0,
        "{facts:?}"
    );
    // A voided code, typed more times than the lockout allows, is said for what it is
    // and never counted: the user typing backup codes has likely lost the phone.
    for code in backups
        .iter()
        .cycle()
        .take(config.lockout.max_failures as usize + 2)
    {
        assert_eq!(
            h.verify(&user, code, Purpose::Login, &config)
                .unwrap()
                .result,
            CodeResult::VoidedBackupCode
        );
    }
    let facts = h.facts(&user).unwrap();
    assert_eq!(facts.lockout.failures, 0, "{facts:?}");
    // Anything else is still a wrong code, counted.
    assert!(matches!(
        h.verify(&user, "12345678", Purpose::Login, &config)
            .unwrap()
            .result,
        CodeResult::Wrong { .. }
    ));
    assert_eq!(h.facts(&user).unwrap().lockout.failures, 1);
    let files = c.psql(DBNAME, "SELECT count(*) FROM twofactor_keys.files");
    assert_eq!(files.trim(), "1");
    let status = ok(Some(&config_for(c, dir.path(), ADMIN)), &["status", &user]);
    assert!(status.contains("voided"), "{status}");
    // The current key cannot be retired.
    let err = fails(
        None,
        &[
            "fleet",
            "rotate-key",
            "--admin-url",
            &url,
            "--key-file",
            new_key.to_str().unwrap(),
            "--retire",
            new_key.to_str().unwrap(),
        ],
    );
    assert!(err.contains("current key"), "{err}");
    // The new key is always named: no default that could only be the old one.
    let err = fails(None, &["fleet", "rotate-key", "--admin-url", &url]);
    assert!(err.contains("--key-file"), "{err}");
}

#[test]
fn fleet_commands_are_for_root_only() {
    let out = Command::new("runuser")
        .args([
            "-u",
            "nobody",
            "--",
            BIN,
            "fleet",
            "init",
            "--admin-url",
            "host=/nowhere",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("root"), "{err}");
}

#[test]
fn a_google_authenticator_file_moves_its_key_to_the_fleet_but_not_its_scratch_codes() {
    let c = &Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let admin = config_for(c, dir.path(), ADMIN);
    let mut accounts = Accounts::default();
    let user = accounts.login_user(
        &format!("tfgaf{}", tag()),
        &dir.path().join("home"),
        "x-Pass-123",
    );
    let file = dir.path().join("home/.google_authenticator");
    let key = "JBSWY3DPEHPK3PXPJBSWY3DPEH";
    fs::write(&file, format!("{key}\n\" TOTP_AUTH\n12345678\n87654321\n")).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o400)).unwrap();
    twofactor_testkit::run("chown", &[&user, file.to_str().unwrap()]);

    let out = ok(
        Some(&admin),
        &["import-google-authenticator", &user, "--keep"],
    );
    assert!(
        out.contains(&format!(
            "its 2 scratch codes did not move to the fleet database; make backup codes with 'twofactor backup-codes --user {user}'"
        )),
        "{out}"
    );
    let h = c.backend(HOSTS[0]);
    assert_eq!(h.facts(&user).unwrap().backup_codes_left, 0);
    let secret = SecretKey::from_base32(key).unwrap();
    assert_eq!(totp_login(&h, &user, &secret), CodeResult::Totp);
}

/// A file store under `dir`, root-owned 0700, as a host has it.
fn file_store(dir: &Path, name: &str) -> (PathBuf, Store) {
    let path = dir.join(name);
    fs::create_dir(&path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
    let store = Store::open(&path).unwrap();
    (path, store)
}

#[test]
fn fleet_import_moves_keys_from_several_hosts_into_one_record_each() {
    let c = &Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let admin = config_for(c, dir.path(), ADMIN);
    let host = config_for(c, dir.path(), HOSTS[0]);
    let mut accounts = Accounts::default();
    let t = tag();
    let [alice, bob, carol] =
        ["a", "b", "c"].map(|s| accounts.user(&format!("tfimp{s}{t}"), "users", &[]));
    let alias = accounts.alias(&format!("tfimpx{t}"), &alice);
    let (alice_key, bob_key, other_key) = (
        SecretKey::generate(&mut OsRandom).unwrap(),
        SecretKey::generate(&mut OsRandom).unwrap(),
        SecretKey::generate(&mut OsRandom).unwrap(),
    );

    // Host 1: alice (under another name of her account, with a replay step), bob turned
    // off, and carol with nothing set up.
    let (dir1, one) = file_store(dir.path(), "host1");
    enroll_key(&one, &alias, alice_key.clone(), &mut OsRandom);
    one.update(&alias, |s| -> Result<(), StoreError> {
        s.authenticator.as_mut().unwrap().last_step = Some(1_000);
        Ok(())
    })
    .unwrap();
    let client = RemoteHost::parse("192.0.2.7").unwrap();
    one.update(&alias, |s| -> Result<(), StoreError> {
        s.trusted_devices
            .add("sshd", &client, now(), 30, &mut OsRandom)
            .unwrap();
        Ok(())
    })
    .unwrap();
    enroll_key(&one, &bob, bob_key.clone(), &mut OsRandom);
    one.set_enabled(&bob, Authority::Admin, false).unwrap();
    one.count_grace_login(&carol, 3).unwrap();
    // Host 2: alice with the same key and a later step; bob with another phone's key.
    let (dir2, two) = file_store(dir.path(), "host2");
    enroll_key(&two, &alice, alice_key.clone(), &mut OsRandom);
    two.update(&alice, |s| -> Result<(), StoreError> {
        s.authenticator.as_mut().unwrap().last_step = Some(2_000);
        Ok(())
    })
    .unwrap();
    enroll_key(&two, &bob, other_key, &mut OsRandom);
    let before1 = fs::read_dir(&dir1).unwrap().count();

    // A dry run changes nothing.
    let plan = json(
        Some(&admin),
        &[
            "--json",
            "fleet",
            "import",
            "--dry-run",
            "--state-dir",
            dir1.to_str().unwrap(),
        ],
    );
    let action = |j: &Value, user: &str| {
        j["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["user"] == user)
            .map(|u| u["action"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert_eq!(action(&plan, &alice), "imported", "{plan}");
    assert_eq!(action(&plan, &carol), "skipped", "{plan}");
    let h = c.backend(HOSTS[0]);
    assert!(!h.facts(&alice).unwrap().is_enrolled());

    // Host 1 for real: alice under her canonical name, bob still turned off.
    let out = ok(
        Some(&admin),
        &["fleet", "import", "--state-dir", dir1.to_str().unwrap()],
    );
    assert!(
        out.contains(&format!("{alias}.json -> {alice}: imported")),
        "{out}"
    );
    assert!(out.contains("(turned off, and stays off)"), "{out}");
    assert!(out.contains("3 backup codes stay behind"), "{out}");
    assert!(
        out.contains(&format!("{carol}: skipped: no authenticator")),
        "{out}"
    );
    assert!(out.contains("Trusted hosts never move"), "{out}");
    let facts = h.facts(&alice).unwrap();
    assert_eq!(facts.authenticator.as_ref().unwrap().last_step, Some(1_000));
    // The administrator sees every host's trust; host 1's never arrived.
    let seen = c.backend(ADMIN).facts(&alice).unwrap();
    assert_eq!(seen.trusted_devices.active(now()).count(), 0);
    assert_eq!(
        one.load(&alias)
            .unwrap()
            .trusted_devices
            .active(now())
            .count(),
        1
    );
    assert!(!h.facts(&bob).unwrap().authenticator.unwrap().enabled);
    assert_eq!(
        fs::read_dir(&dir1).unwrap().count(),
        before1,
        "the file store is untouched"
    );

    // Host 2: alice merges (later step kept), bob's other key is a conflict.
    let out = run(
        Some(&admin),
        &[
            "--json",
            "fleet",
            "import",
            "--state-dir",
            dir2.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success(), "a conflict must fail the command");
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(action(&j, &alice), "merged", "{j}");
    assert_eq!(action(&j, &bob), "conflict", "{j}");
    assert_eq!(j["conflicts"], 1);
    assert!(j["need_backup_codes"].to_string().contains(&alice), "{j}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--replace"));
    let facts = h.facts(&alice).unwrap();
    assert_eq!(facts.authenticator.as_ref().unwrap().last_step, Some(2_000));
    assert_eq!(
        facts.authenticator_id(),
        Some(&AuthenticatorId::of(&alice_key))
    );
    assert_eq!(
        h.facts(&bob).unwrap().authenticator_id(),
        Some(&AuthenticatorId::of(&bob_key))
    );
    // --replace lets host 2's key win.
    let out = ok(
        Some(&admin),
        &[
            "fleet",
            "import",
            "--replace",
            "--state-dir",
            dir2.to_str().unwrap(),
        ],
    );
    assert!(
        out.contains(&format!("{bob}.json -> {bob}: replaced")),
        "{out}"
    );
    assert_ne!(
        h.facts(&bob).unwrap().authenticator_id(),
        Some(&AuthenticatorId::of(&bob_key))
    );
    let records = c.psql(
        DBNAME,
        &format!(
            "SELECT string_agg(name, ',') FROM twofactor.users WHERE name IN ('{alice}', '{alias}')"
        ),
    );
    assert_eq!(
        records.trim(),
        alice,
        "one record for alice, by her canonical name"
    );

    // A host's config cannot import.
    let err = fails(
        Some(&host),
        &["fleet", "import", "--state-dir", dir1.to_str().unwrap()],
    );
    assert!(err.contains("twofactor_admin"), "{err}");
}

#[test]
fn doctor_checks_the_fleet_database_from_a_host() {
    let c = &Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let host = config_for(c, dir.path(), HOSTS[0]);
    let pam = dir.path().join("pam.d");
    fs::create_dir(&pam).unwrap();
    fs::write(
        pam.join("sshd"),
        "auth requisite pam_unix.so\nauth [success=ok authinfo_unavail=ignore default=bad] pam_twofactor.so\n",
    )
    .unwrap();
    let doctor = || {
        let out = run(
            Some(&host),
            &[
                "--json",
                "doctor",
                "--pam-dir",
                pam.to_str().unwrap(),
                "--sshd-config",
                "/nonexistent",
            ],
        );
        let j: Value = serde_json::from_slice(&out.stdout).unwrap();
        let ids: Vec<String> = j["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["id"].as_str().unwrap().to_string())
            .collect();
        (ids, j)
    };

    // Reached over TLS with this host's certificate, the schema current, secrets closed.
    let (ids, j) = doctor();
    assert!(ids.contains(&"fleet-unavailable-passes".to_string()), "{j}");
    // The test kit's certificates live two days: the 30-day warning shows.
    assert!(ids.contains(&"fleet-cert-expiring".to_string()), "{j}");
    assert!(j.to_string().contains("expires in 1 day"), "{j}");
    for absent in [
        "fleet-unreachable",
        "fleet-tls",
        "fleet-schema",
        "fleet-secrets-readable",
        "fleet-secrets-probe",
        "state-dir",
    ] {
        assert!(!ids.iter().any(|i| i.starts_with(absent)), "{absent}: {j}");
    }
    // What is fine is said too; the PAM group has an error, so it has no OK line.
    let ok_lines = j["ok"].to_string();
    assert!(ok_lines.contains("valid"), "{j}");
    assert!(!ok_lines.contains("PAM stacks"), "{j}");
    // No issuer stored yet: a warning, gone once fleet init stores one.
    assert!(ids.contains(&"fleet-issuer".to_string()), "{j}");
    fs::write(
        pam.join("sshd"),
        "auth requisite pam_unix.so\nauth required pam_twofactor.so\n",
    )
    .unwrap();
    let key = c.path().join("fleet.key");
    ok(
        None,
        &[
            "fleet",
            "init",
            "--admin-url",
            &c.admin_url(),
            "--key-file",
            key.to_str().unwrap(),
            "--issuer",
            "Example Fleet",
        ],
    );
    let (ids, j) = doctor();
    assert!(!ids.contains(&"fleet-issuer".to_string()), "{j}");
    assert!(j["ok"].to_string().contains("PAM stacks in"), "{j}");

    // The server's certificate for another name fails the TLS check.
    c.serve_certificate("wrong-name");
    let (ids, j) = doctor();
    assert!(ids.contains(&"fleet-tls".to_string()), "{j}");

    c.pg_ctl("stop");
    let (ids, j) = doctor();
    assert!(ids.contains(&"fleet-unreachable".to_string()), "{j}");
}

/// `fleet add-host`, `hosts` and `remove-host` from the command line: the exact pg_ident
/// line, reserved names refused, the listing, and removal that says what to change.
#[test]
fn fleet_hosts_are_added_listed_and_removed_from_the_command_line() {
    let c = &Cluster::start();
    let url = c.admin_url();
    let added = ok(
        None,
        &["fleet", "add-host", "web7.example.com", "--admin-url", &url],
    );
    let role = twofactor_core::backend::postgresql::host_role("web7.example.com");
    assert!(
        added.contains(&format!("twofactor  web7.example.com  {role}")),
        "{added}"
    );
    assert!(added.contains("never a regular expression"), "{added}");
    let again = json(
        None,
        &[
            "--json",
            "fleet",
            "add-host",
            "web7.example.com",
            "--admin-url",
            &url,
        ],
    );
    assert_eq!(again["created"], false, "{again}");
    assert_eq!(again["role"], role.as_str());
    for reserved in ["twofactor_admin", "pg_monitor", "bad name"] {
        let e = fails(None, &["fleet", "add-host", reserved, "--admin-url", &url]);
        assert!(e.contains(reserved) || e.contains("letters, digits"), "{e}");
    }
    // The administrator's certificate name is mapped already: it cannot be a host too.
    let e = fails(None, &["fleet", "add-host", ADMIN, "--admin-url", &url]);
    assert!(e.contains("maps the certificate name"), "{e}");
    // A host's login tells the database when its certificate runs out.
    let h0 = c.backend(HOSTS[0]);
    h0.login_facts("nobody-in-particular", false).unwrap();
    let expires =
        twofactor_core::backend::postgresql::certificate_expiry(&c.settings(HOSTS[0]).cert)
            .unwrap();
    let listed = json(None, &["--json", "fleet", "hosts", "--admin-url", &url]);
    assert_eq!(listed["hosts"][0]["cert_not_after"], expires, "{listed}");
    assert_eq!(
        listed["hosts"][2]["cert_not_after"],
        Value::Null,
        "{listed}"
    );
    assert!(
        listed["server_certificate"]["not_after"].as_u64().unwrap() > now(),
        "{listed}"
    );
    let names: Vec<&str> = listed["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["host"].as_str().unwrap())
        .collect();
    assert_eq!(names, [HOSTS[0], HOSTS[1], "web7.example.com"], "{listed}");
    let text = ok(None, &["fleet", "hosts", "--admin-url", &url]);
    let line = text
        .lines()
        .find(|l| l.starts_with("web7.example.com"))
        .unwrap();
    assert!(line.contains("never"), "{text}");
    assert!(text.contains("Server certificate"), "{text}");
    // A report the host made goes with it.
    c.psql(
        DBNAME,
        "INSERT INTO twofactor.required_by (name, host) VALUES ('someone', 'web7.example.com')",
    );
    let removed = ok(
        None,
        &[
            "fleet",
            "remove-host",
            "web7.example.com",
            "--admin-url",
            &url,
        ],
    );
    let left = c.psql(
        DBNAME,
        "SELECT count(*) FROM twofactor.required_by WHERE host = 'web7.example.com'",
    );
    assert_eq!(left.trim(), "0");
    assert!(
        removed.contains(&format!("Dropped role {role}")),
        "{removed}"
    );
    assert!(removed.contains("pg_ident.conf"), "{removed}");
    let e = fails(
        None,
        &[
            "fleet",
            "remove-host",
            "web7.example.com",
            "--admin-url",
            &url,
        ],
    );
    assert!(e.contains("no host named web7.example.com"), "{e}");
}

/// `check-config` reads the fleet's credential files as logins will: a private key given
/// as `ca`, a certificate given as `key`, or another host's key is named, with its key.
#[test]
fn check_config_refuses_credential_files_that_are_not_what_their_key_says() {
    let c = &Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let good = config_for(c, dir.path(), HOSTS[0]);
    let out = ok(None, &["check-config", good.to_str().unwrap()]);
    assert!(out.contains(": OK"), "{out}");
    let text = fs::read_to_string(&good).unwrap();
    let s = c.settings(HOSTS[0]);
    let other = c.settings(HOSTS[1]);
    for (from, to, says) in [
        (&s.ca, &s.key, "storage.postgresql.ca: "),
        (&s.key, &s.ca, "is not a PEM private key"),
        (&s.key, &other.key, "is not the key of the certificate"),
    ] {
        let bad = dir.path().join("bad.toml");
        let replaced = text.replace(
            &format!("\"{}\"", from.display()),
            &format!("\"{}\"", to.display()),
        );
        assert_ne!(replaced, text);
        fs::write(&bad, replaced).unwrap();
        let err = fails(None, &["check-config", bad.to_str().unwrap()]);
        assert!(err.contains(says), "{says}: {err}");
        assert!(err.contains(&to.display().to_string()), "{err}");
        if says.contains(".ca") {
            assert!(
                err.contains("holds a private key, not a certificate"),
                "{err}"
            );
        }
    }
}
