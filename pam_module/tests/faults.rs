//! Fault injection: a state write that cannot happen (full disk, read-only filesystem)
//! refuses the login, says why in the audit line, and leaves the old state intact.
//! Uses a small tmpfs mounted for the test (so it runs as root).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use pam_twofactor::conversation::{ConvError, Conversation};
use pam_twofactor::decision::{Decision, ErrorKind, pam_code};
use pam_twofactor::flow::{self, Env, Login};
use twofactor_core::clock::SystemClock;
use twofactor_core::config::Config;
use twofactor_core::policy::Nss;
use twofactor_core::random::OsRandom;
use twofactor_core::store::Store;
use twofactor_testkit::{Accounts, CHEAP_HASH, enroll, oathtool, pamtester, run};
use zeroize::Zeroizing;

/// A tmpfs of `size`, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn new(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
                dir.path().to_str().unwrap(),
            ],
        );
        Self { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn fill(&self) {
        // Write until the filesystem refuses; the error is the point.
        let _ = fs::write(self.path().join("filler"), vec![0u8; 64 * 1024 * 1024]);
    }
    fn read_only(&self) {
        run(
            "mount",
            &["-o", "remount,ro", self.path().to_str().unwrap()],
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Answers the code prompt with `code`, then nothing.
struct Answer(Option<String>);

impl Conversation for Answer {
    fn ask_hidden(&mut self, _: &str) -> Result<Option<Zeroizing<String>>, ConvError> {
        Ok(self.0.take().map(Zeroizing::new))
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

fn login(config: &Config, user: &str, code: &str) -> Decision {
    let mut rng = OsRandom;
    let mut audit = |_: &_, _: Option<&str>, _: Option<&str>| {};
    let mut env = Env {
        config,
        directory: &Nss,
        store: twofactor_core::backend::Opening {
            owner: 0,
            clock: std::sync::Arc::new(SystemClock),
            hash_cost: CHEAP_HASH,
        },
        rng: &mut rng,
        host: "h".into(),
        audit: &mut audit,
        served_by: None,
    };
    let login = Login {
        user,
        service: "sshd",
        rhost: None,
        silent: false,
        password: None,
        code_from: flow::CodeFrom::Prompt,
        ssh_auth_info: None,
        after_login: None,
    };
    flow::authenticate(&mut Answer(Some(code.to_string())), &login, &mut env).0
}

fn setup(fs_: &Tmpfs, user: &str) -> (Config, PathBuf, String) {
    let state = fs_.path().join("state");
    let store = Store::create(&state, 0).unwrap();
    let (key, _) = enroll(&store, user, &mut OsRandom);
    let mut config = Config::default();
    config.policy.users = vec![user.into()];
    config.storage.state_dir = state.clone();
    (
        config,
        state.join(format!("{user}.json")),
        key.to_base32().to_string(),
    )
}

#[test]
fn full_disk_refuses_the_login_with_a_reason_and_keeps_the_state() {
    let mut accounts = Accounts::default();
    let user = accounts.user("tffault1", "users", &[]);
    let t = Tmpfs::new("256k");
    let (config, file, key) = setup(&t, &user);
    let before = fs::read(&file).unwrap();
    t.fill();
    let d = login(&config, &user, &oathtool(&key));
    let line = d.event(&user, None, "sshd", None).to_string();
    assert!(
        matches!(d, Decision::Error(ErrorKind::Unavailable, _)),
        "{d:?}"
    );
    assert!(
        line.contains("outcome=error") && line.contains("No space left on device"),
        "{line}"
    );
    assert_ne!(pam_code(&d), pam::constants::PamResultCode::PAM_SUCCESS);
    assert_eq!(fs::read(&file).unwrap(), before, "old state intact");
    let stray: Vec<_> = fs::read_dir(file.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(stray.is_empty(), "no temp file left behind");
}

#[test]
fn read_only_state_refuses_the_login_and_keeps_the_state() {
    let mut accounts = Accounts::default();
    let user = accounts.user("tffault2", "users", &[]);
    let t = Tmpfs::new("1m");
    let (config, file, key) = setup(&t, &user);
    let before = fs::read(&file).unwrap();
    t.read_only();
    let d = login(&config, &user, &oathtool(&key));
    let line = d.event(&user, None, "sshd", None).to_string();
    assert!(
        matches!(d, Decision::Error(ErrorKind::Unavailable, _)),
        "{d:?}"
    );
    assert!(line.contains("Read-only file system"), "{line}");
    assert_eq!(fs::read(&file).unwrap(), before);
}

#[test]
fn full_disk_through_libpam_is_authinfo_unavail() {
    let mut accounts = Accounts::default();
    let user = accounts.user("tffault3", "users", &[]);
    let t = Tmpfs::new("256k");
    let (config, file, key) = setup(&t, &user);
    let before = fs::read(&file).unwrap();
    let cfg = t.path().join("config.toml");
    fs::write(
        &cfg,
        format!(
            "version = 1\n[enforce]\nusers = [\"{user}\"]\n[storage]\nstate_dir = \"{}\"\n",
            config.storage.state_dir.display()
        ),
    )
    .unwrap();
    let services = t.path().join("pam.d");
    fs::create_dir(&services).unwrap();
    fs::write(
        services.join("tf"),
        format!(
            "auth required {} config={}\n",
            twofactor_testkit::pam_module_so().display(),
            cfg.display()
        ),
    )
    .unwrap();
    t.fill();
    let mut s = pamtester(&services, "tf", &user, None);
    s.send(&oathtool(&key));
    let (_, text) = s.finish();
    assert!(
        text.contains("cannot retrieve authentication info"),
        "{text}"
    );
    assert_eq!(fs::read(&file).unwrap(), before);
}
