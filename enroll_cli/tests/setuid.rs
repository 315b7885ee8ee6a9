//! The binary installed setuid root and run by an ordinary user, as the packages install
//! it. Each run happens in a private mount namespace whose /etc is an overlay holding
//! this test's /etc/twofactor/config.toml and /etc/pam.d/twofactor, so the real /etc is
//! never changed.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use twofactor_core::auth::Purpose;
use twofactor_core::backend::Backend;
use twofactor_core::random::OsRandom;
use twofactor_testkit::postgres::{ADMIN, Cluster, HOSTS};
use twofactor_testkit::{Accounts, Session, key_shown, oathtool, tag};

const PASSWORD: &str = "Setuid-Pass-77";

struct Setup {
    dir: tempfile::TempDir,
    bin: PathBuf,
    uid: u32,
    gid: u32,
}

impl Setup {
    fn new(user: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        let bin = d.join("twofactor");
        fs::copy(env!("CARGO_BIN_EXE_twofactor"), &bin).unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o4755)).unwrap();
        let state = d.join("state");
        fs::create_dir(&state).unwrap();
        fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();
        let etc = d.join("upper");
        fs::create_dir_all(etc.join("twofactor")).unwrap();
        fs::create_dir_all(etc.join("pam.d")).unwrap();
        fs::create_dir(d.join("work")).unwrap();
        fs::write(
            etc.join("twofactor/config.toml"),
            format!(
                "version = 1\n[enforce]\nusers = [\"{user}\"]\n[storage]\nstate_dir = \"{}\"\n",
                state.display()
            ),
        )
        .unwrap();
        fs::copy(
            concat!(env!("CARGO_MANIFEST_DIR"), "/../config/pam.d/twofactor"),
            etc.join("pam.d/twofactor"),
        )
        .unwrap();
        let out = Command::new("id").args(["-u", user]).output().unwrap();
        let uid = String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let out = Command::new("id").args(["-g", user]).output().unwrap();
        let gid = String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        Self { dir, bin, uid, gid }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The command that runs the setuid binary as the test user inside the overlay.
    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        self.command_through(args, env, &[])
    }

    /// As [`Setup::command`], with the binary exec'd through `prefix` (as the user).
    fn command_through(&self, args: &[&str], env: &[(&str, &str)], prefix: &[&str]) -> Command {
        let d = self.path();
        let script = format!(
            "mount -t overlay overlay -o lowerdir=/etc,upperdir={},workdir={} /etc && exec \"$@\"",
            d.join("upper").display(),
            d.join("work").display()
        );
        let mut c = Command::new("unshare");
        c.args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .args([
            "setpriv",
            &format!("--reuid={}", self.uid),
            &format!("--regid={}", self.gid),
            "--init-groups",
            "--",
        ])
        .args(prefix)
        .arg("env")
        .arg("-i");
        for (k, v) in env {
            c.arg(format!("{k}={v}"));
        }
        c.arg(&self.bin).args(args);
        c
    }

    fn run(&self, args: &[&str], stdin: &str) -> Output {
        self.run_env(args, stdin, &[])
    }

    fn run_env(&self, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
        self.run_through(args, stdin, env, &[])
    }

    fn run_through(
        &self,
        args: &[&str],
        stdin: &str,
        env: &[(&str, &str)],
        prefix: &[&str],
    ) -> Output {
        let mut child = self
            .command_through(args, env, prefix)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        child.wait_with_output().unwrap()
    }

    fn state(&self, user: &str) -> PathBuf {
        self.path().join("state").join(format!("{user}.json"))
    }
}

/// The backup codes a `--json` command printed.
fn codes_in(out: &Output) -> Vec<String> {
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    j["backup_codes"]
        .as_array()
        .unwrap_or_else(|| panic!("no backup codes in {j}"))
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn refused(o: &Output, why: &str) {
    assert!(
        !o.status.success(),
        "should be refused ({why}): {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(
        stderr(o).contains(why),
        "expected {why:?} in: {}",
        stderr(o)
    );
}

#[test]
fn unprivileged_caller_gets_only_what_is_safe() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test installs a setuid binary: run as root"
    );
    let mut accounts = Accounts::default();
    let base = tempfile::tempdir().unwrap();
    fs::set_permissions(base.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let me = accounts.login_user(&format!("tfsu{}", tag()), &base.path().join("me"), PASSWORD);
    let other = accounts.login_user(
        &format!("tfso{}", tag()),
        &base.path().join("other"),
        PASSWORD,
    );
    let s = Setup::new(&me);

    // Identity comes from the real uid, never the environment.
    let out = s.run_env(
        &["status", "--json"],
        "",
        &[("USER", "root"), ("LOGNAME", &other)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["user"], me.as_str());
    assert_eq!(j["required"], true);

    // Root-only options and other users' accounts are refused.
    refused(
        &s.run(&["--config", "/tmp/evil.toml", "status"], ""),
        "root only",
    );
    refused(
        &s.run_env(&["status"], "", &[("TWOFACTOR_CONFIG", "/tmp/evil.toml")]),
        "root only",
    );
    refused(&s.run(&["status", &other], ""), "your own account");
    refused(
        &s.run(&["backup-codes", "--user", &other], ""),
        "your own account",
    );
    refused(&s.run(&["status", "--all"], ""), "root only");
    refused(&s.run(&["reset", &other], ""), "root only");
    refused(&s.run(&["unlock", &me], ""), "root only");
    refused(&s.run(&["enroll", "--no-verify"], ""), "root only");
    // The editor is the caller's: a user's EDITOR must never run as root.
    refused(
        &s.run_env(&["edit-config"], "", &[("EDITOR", "touch /tmp/tf-pwned")]),
        "root only",
    );
    assert!(!Path::new("/tmp/tf-pwned").exists());
    refused(
        &s.run(&["import-google-authenticator", &me], ""),
        "root only",
    );

    // A wrong password changes nothing.
    refused(
        &s.run(&["enroll"], "not-the-password\n123456\n"),
        "could not confirm your password",
    );
    assert!(!s.state(&me).exists());

    // Enrollment with the password (through PAM service "twofactor") and a code.
    let (mut sess, key) = start_enroll(&s);
    sess.send(&oathtool(&key));
    let (code, text) = sess.finish();
    assert_eq!(code, Some(0), "{text}");
    let backups: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("    ") && l.contains('-'))
        .flat_map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();
    assert_eq!(backups.len(), 10);
    let meta = fs::metadata(s.state(&me)).unwrap();
    assert_eq!(
        (meta.uid(), meta.mode() & 0o777),
        (0, 0o600),
        "state stays root-owned"
    );

    // Changing the authenticator needs the password and a current code.
    refused(
        &s.run(&["backup-codes"], &format!("{PASSWORD}\n000000\n")),
        "wrong code",
    );
    // The paper copy is written as the caller, in a directory only the caller can write.
    let sheet = base.path().join("me/codes.pdf");
    let out = s.run(
        &["backup-codes", "--json", "--pdf", sheet.to_str().unwrap()],
        &format!("{PASSWORD}\n{}\n", backups[0]),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let meta = fs::metadata(&sheet).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (s.uid, 0o600));
    // The old codes are gone; the rest of the test spends the new ones.
    let backups = codes_in(&out);

    // A required user cannot turn 2FA off; an admin can.
    refused(
        &s.run(&["disable"], &format!("{PASSWORD}\n{}\n", backups[1])),
        "only an administrator",
    );
    refused(
        &s.run(&["disable", "--remove"], ""),
        "only an administrator",
    );

    // Output files are written as the caller, never through a symlink, never where the
    // caller could not write.
    let home = base.path().join("me");
    let png = home.join("qr.png");
    let out = s.run(
        &["enroll", "--replace", "--qr-png", png.to_str().unwrap()],
        &format!("{PASSWORD}\n{}\n", backups[2]),
    );
    refused(&out, "nothing was saved");
    let meta = fs::metadata(&png).unwrap();
    assert_eq!(
        (meta.uid(), meta.mode() & 0o777),
        (s.uid, 0o600),
        "QR written as the caller"
    );
    let target = s.path().join("root-owned");
    fs::write(&target, b"keep").unwrap();
    let link = home.join("link.png");
    symlink(&target, &link).unwrap();
    refused(
        &s.run(
            &["enroll", "--replace", "--qr-png", link.to_str().unwrap()],
            &format!("{PASSWORD}\n{}\n", backups[3]),
        ),
        "cannot write",
    );
    assert_eq!(fs::read(&target).unwrap(), b"keep");
    let private = s.path().join("private");
    fs::create_dir(&private).unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
    let denied = private.join("qr.png");
    refused(
        &s.run(
            &["enroll", "--replace", "--qr-png", denied.to_str().unwrap()],
            &format!("{PASSWORD}\n{}\n", backups[4]),
        ),
        "Permission denied",
    );
    assert!(!denied.exists());

    // check-config reads files with the caller's rights: no peeking at root's files.
    refused(
        &s.run(&["check-config", "/etc/shadow"], ""),
        "Permission denied",
    );

    // The admin path: root may disable a required user without any code.
    let root_out = Command::new(&s.bin)
        .args(["disable", "--user", &me])
        .env(
            "TWOFACTOR_CONFIG",
            s.path().join("upper/twofactor/config.toml"),
        )
        .output()
        .unwrap();
    assert!(root_out.status.success(), "{}", stderr(&root_out));
}

/// Starts `twofactor enroll` as the user, gives the password, and waits at the code
/// prompt; returns the session and the key it shows.
fn start_enroll(s: &Setup) -> (Session, String) {
    let mut sess = Session::start(
        s.command(&["enroll"], &[])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    sess.wait_for("Password: ");
    sess.send(PASSWORD);
    sess.wait_for("Code from the app: ");
    let shown = sess.wait_for_line("Key:");
    (sess, key_shown(&shown))
}

/// Runs the binary as root against the test's config.
fn as_root(s: &Setup, args: &[&str]) -> Output {
    Command::new(&s.bin)
        .args(args)
        .env(
            "TWOFACTOR_CONFIG",
            s.path().join("upper/twofactor/config.toml"),
        )
        .output()
        .unwrap()
}

fn status(s: &Setup, user: &str) -> Value {
    let out = as_root(s, &["status", user, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The review's attacks on the setuid binary, as an ordinary user.
#[test]
fn setuid_resists_the_review_attacks() {
    let mut accounts = Accounts::default();
    let base = tempfile::tempdir().unwrap();
    fs::set_permissions(base.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let me = accounts.login_user(&format!("tfsr{}", tag()), &base.path().join("me"), PASSWORD);
    let s = Setup::new(&me);
    let out = as_root(&s, &["enroll", "--user", &me, "--no-verify", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = j["secret"].as_str().unwrap().to_string();

    // 1. A file-size limit and an ignored SIGXFSZ, inherited through the setuid exec, do
    // not make wrong codes free: the binary lifts the limit and resets the signal, every
    // guess counts, and the fifth locks. A right code is then refused. A hard limit that
    // cannot be lifted (no CAP_SYS_RESOURCE, as in some containers) makes it refuse to
    // run at all.
    let size = fs::metadata(s.state(&me)).unwrap().len();
    let before = fs::read(s.state(&me)).unwrap();
    let store = twofactor_core::store::Store::open(&s.path().join("state")).unwrap();
    let failures = || store.load(&me).unwrap().lockout.failures;
    let through = |limit: String| -> Vec<String> {
        ["sh", "-c", "trap '' XFSZ; exec \"$@\"", "sh", "prlimit"]
            .iter()
            .map(|a| a.to_string())
            .chain([limit, "--".to_string()])
            .collect()
    };
    let hard = through(format!("--fsize={size}"));
    let hard: Vec<&str> = hard.iter().map(String::as_str).collect();
    let out = s.run_through(
        &["backup-codes"],
        &format!("{PASSWORD}\n999999\n"),
        &[],
        &hard,
    );
    let counted = if stderr(&out).contains("cannot be lifted") {
        refused(&out, "run twofactor without one");
        assert_eq!(
            fs::read(s.state(&me)).unwrap(),
            before,
            "nothing checked or written"
        );
        0
    } else {
        refused(&out, "wrong code");
        assert_eq!(failures(), 1, "the guess under the limit counted");
        1
    };
    let soft = through(format!("--fsize={size}:unlimited"));
    let limited: Vec<&str> = soft.iter().map(String::as_str).collect();
    for i in (counted + 1)..=5 {
        let out = s.run_through(
            &["backup-codes"],
            &format!("{PASSWORD}\n00000{i}\n"),
            &[],
            &limited,
        );
        refused(&out, "wrong code");
        assert_eq!(
            status(&s, &me)["locked"],
            i == 5,
            "after {i} wrong codes: {}",
            stderr(&out)
        );
    }
    let out = s.run_through(
        &["backup-codes"],
        &format!("{PASSWORD}\n{}\n", oathtool(&key)),
        &[],
        &limited,
    );
    refused(&out, "locked");

    // 7. Files the setuid binary writes are root:root, whatever the caller's group.
    for file in [
        s.state(&me),
        s.path().join("state").join(format!("{me}.lock")),
    ] {
        let meta = fs::metadata(&file).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o777),
            (0, 0, 0o600),
            "{}",
            file.display()
        );
    }
    assert!(as_root(&s, &["unlock", &me]).status.success());

    // 8. A temporarily disabled authenticator still needs a code for changes to it.
    assert!(as_root(&s, &["disable", "--user", &me]).status.success());
    refused(
        &s.run(&["backup-codes"], &format!("{PASSWORD}\n")),
        "no code entered",
    );
    refused(
        &s.run(&["enable"], &format!("{PASSWORD}\n")),
        "no code entered",
    );
    refused(
        &s.run(&["enroll", "--replace"], &format!("{PASSWORD}\n")),
        "no code entered",
    );
    refused(
        &s.run(&["enable"], &format!("{PASSWORD}\n000000\n")),
        "wrong code",
    );
    assert_eq!(status(&s, &me)["enabled"], false);
    let out = s.run(&["enable"], &format!("{PASSWORD}\n{}\n", oathtool(&key)));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(status(&s, &me)["enabled"], true);

    // 9. Stored text reaches the terminal escaped.
    let store = twofactor_core::store::Store::open(&s.path().join("state")).unwrap();
    store
        .update(&me, |st| -> Result<(), twofactor_core::store::StoreError> {
            st.trusted_devices
                .0
                .push(twofactor_core::trusted::TrustedDevice {
                    id: "0a0b0c0d0e0f".into(),
                    service: "sshd".into(),
                    host: "evil\u{1b}]0;owned\u{7}\u{1b}[2J".into(),
                    kind: twofactor_core::trusted::HostKind::Name,
                    created: 1,
                    expires: u64::MAX / 2,
                });
            Ok(())
        })
        .unwrap();
    let out = s.run(&["trust", "list"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!out.stdout.contains(&0x1b), "raw escape printed");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("evil\\u{1b}]0;owned"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // 4. An authenticator set up while `enroll` waits at its code prompt is never
    // overwritten.
    assert!(as_root(&s, &["reset", &me]).status.success());
    let (mut sess, offered) = start_enroll(&s);
    let out = as_root(&s, &["enroll", "--user", &me, "--no-verify", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    let admins = j["secret"].as_str().unwrap().to_string();
    sess.send(&oathtool(&offered));
    let (code, text) = sess.finish();
    assert_ne!(code, Some(0), "{text}");
    assert!(
        text.contains("was changed while this command ran"),
        "{text}"
    );
    let state = fs::read_to_string(s.state(&me)).unwrap();
    assert!(
        state.contains(&admins) && !state.contains(&offered),
        "the admin's authenticator stays"
    );
}

/// On a fleet, a user's own changes go through the host role: the password, then a code
/// the database verifies, whose one-time ticket lets this host make that one change.
#[test]
fn fleet_self_service_goes_through_the_host_role_with_a_code() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test installs a setuid binary: run as root"
    );
    let cluster = Cluster::start();
    let mut accounts = Accounts::default();
    let base = tempfile::tempdir().unwrap();
    fs::set_permissions(base.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let me = accounts.login_user(&format!("tfsf{}", tag()), &base.path().join("me"), PASSWORD);
    let s = Setup::new(&me);
    fs::write(
        s.path().join("upper/twofactor/config.toml"),
        cluster.config_text(HOSTS[0], ""),
    )
    .unwrap();
    let admin = cluster.backend(ADMIN);
    let (_, backups) = twofactor_testkit::enroll(&admin, &me, &mut OsRandom);
    let spent = |code: &str| {
        let config = twofactor_core::config::Config::default();
        let r = cluster
            .backend(HOSTS[1])
            .verify(&me, code, Purpose::Login, &config)
            .unwrap()
            .result;
        !r.is_success()
    };

    refused(
        &s.run(&["backup-codes"], &format!("{PASSWORD}\n000000\n")),
        "wrong code",
    );
    let out = s.run(
        &["backup-codes", "--json"],
        &format!("{PASSWORD}\n{}\n", backups[0]),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let fresh = codes_in(&out);
    assert_eq!(fresh.len(), 10);
    assert!(spent(&backups[1]), "an old backup code still works");

    let out = s.run(&["disable"], &format!("{PASSWORD}\n{}\n", fresh[0]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!admin.facts(&me).unwrap().authenticator.unwrap().enabled);
    let out = s.run(&["enable"], &format!("{PASSWORD}\n{}\n", fresh[1]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(admin.facts(&me).unwrap().authenticator.unwrap().enabled);
    // Listing everyone stays root's.
    refused(&s.run(&["status", "--all"], ""), "root only");
    let out = s.run(
        &["disable", "--remove"],
        &format!("{PASSWORD}\n{}\n", fresh[2]),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!admin.facts(&me).unwrap().is_enrolled());
}
