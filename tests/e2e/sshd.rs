//! End to end: a real sshd on a 127.0.0.1 port with its own sshd_config and its own PAM
//! service (through pam_wrapper, so the system's /etc/pam.d is never read or changed),
//! the built module after `requisite pam_unix`, and the OpenSSH client answering prompts
//! via expect.
//!
//! Needs root (sshd, a real account with a password) and the packages in tests/setup.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use std::os::unix::fs::PermissionsExt;

use twofactor_core::clock::{Clock, SystemClock};
use twofactor_core::random::OsRandom;
use twofactor_core::store::Store;
use twofactor_core::totp::{SecretKey, TotpParams};
use twofactor_testkit::postgres::{Cluster, HOSTS};
use twofactor_testkit::screen::{Screen, check_setup_screen};
use twofactor_testkit::{
    Accounts, KillOnDrop, PamFixture, Syslog, free_port, fresh_code, key_shown, oathtool,
    pam_wrapper_turn, remove_pam_wrapper_dirs, run, tag,
};

const PASSWORD: &str = "Correct-Horse-42";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A private sshd with twofactor in its PAM stack, stopped when dropped.
struct Sshd {
    fixture: PamFixture,
    port: u16,
    _server: KillOnDrop,
}

impl Sshd {
    /// Waits until sshd has no connection processes left. Each connection re-executes
    /// sshd, and pam_wrapper gives each process a "/tmp/pam.X" directory that it removes
    /// when it exits; a new connection must not pick that name while the old one is still
    /// removing it.
    fn wait_for_idle(&self) {
        let pid = self._server.0.id();
        let children = format!("/proc/{pid}/task/{pid}/children");
        let deadline = Instant::now() + Duration::from_secs(15);
        while fs::read_to_string(&children).is_ok_and(|c| !c.trim().is_empty())
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Stop sshd first, then remove the service copies pam_wrapper made for it.
        let _ = self._server.0.kill();
        let _ = self._server.0.wait();
        remove_pam_wrapper_dirs(self.fixture.path());
    }
}

/// How sshd authenticates: keyboard-interactive only, as the README says.
const KBD_INTERACTIVE: &str = "KbdInteractiveAuthentication yes\nPasswordAuthentication no\n\
    AuthenticationMethods keyboard-interactive\n";

impl Sshd {
    fn start(config: &str) -> Self {
        Self::start_with(config, KBD_INTERACTIVE, None)
    }

    /// sshd with `auth` as its authentication settings, and with the module's syslog
    /// lines caught by `syslog` when given.
    fn start_with(config: &str, auth: &str, syslog: Option<&Syslog>) -> Self {
        let fixture = PamFixture::new(config);
        fixture.service(
            "sshd",
            "auth requisite pam_unix.so\n\
             auth required {module}\n\
             account required pam_unix.so\n\
             session required pam_permit.so\n\
             password required pam_deny.so\n",
        );
        let d = fixture.path();
        let key = d.join("host_ed25519");
        run(
            "ssh-keygen",
            &["-q", "-t", "ed25519", "-N", "", "-f", key.to_str().unwrap()],
        );
        let port = free_port();
        let sshd_config = d.join("sshd_config");
        fs::write(
            &sshd_config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\n\
                 UsePAM yes\n{auth}PubkeyAuthentication no\n\
                 PermitRootLogin no\nStrictModes no\nMaxAuthTries 3\n",
                key.display(),
                d.join("sshd.pid").display()
            ),
        )
        .unwrap();
        // sshd refuses to start without its privilege-separation directory.
        fs::create_dir_all("/run/sshd").unwrap();
        let log = fs::File::create(d.join("sshd.log")).unwrap();
        let prefix = syslog.map(Syslog::prefix).unwrap_or_default();
        let mut command = match prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg("/usr/sbin/sshd");
                c
            }
            None => Command::new("/usr/sbin/sshd"),
        };
        let server = command
            .args(["-D", "-e", "-f"])
            .arg(&sshd_config)
            .env("LD_PRELOAD", "libpam_wrapper.so")
            .env("PAM_WRAPPER", "1")
            .env("PAM_WRAPPER_SERVICE_DIR", fixture.services())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("openssh-server must be installed (tests/setup)");
        let server = KillOnDrop(server);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not start:\n{}",
                fs::read_to_string(d.join("sshd.log")).unwrap()
            );
            thread::sleep(Duration::from_millis(50));
        }
        Self {
            fixture,
            port,
            _server: server,
        }
    }

    /// One ssh login; answers for "Authentication code:" prompts in order.
    fn login(&self, user: &str, codes: &[&str]) -> (bool, String) {
        self.login_as(user, PASSWORD, codes)
    }

    /// One ssh login with `password`.
    fn login_as(&self, user: &str, password: &str, codes: &[&str]) -> (bool, String) {
        self.login_mode(user, password, codes, "quiet")
    }

    /// One ssh login in `mode` (see ssh_login.exp).
    fn login_mode(&self, user: &str, password: &str, codes: &[&str], mode: &str) -> (bool, String) {
        // sshd's PAM runs under pam_wrapper, whose private directories other tests share.
        let _turn = pam_wrapper_turn();
        self.wait_for_idle();
        let codes = if codes.is_empty() {
            "-".to_string()
        } else {
            codes.join(",")
        };
        let out = Command::new("expect")
            .arg(workspace().join("tests/e2e/ssh_login.exp"))
            .args([&self.port.to_string(), user, password, &codes, mode])
            .env("LC_ALL", "C.UTF-8")
            .output()
            .expect("expect must be installed (tests/setup)");
        let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
        assert!(!text.contains("EXPECT-TIMEOUT"), "ssh stalled:\n{text}");
        let logged_in = text.contains(&format!("LOGGED-IN-AS-{user}"));
        assert_eq!(
            logged_in,
            out.status.success(),
            "exit status and output disagree:\n{text}"
        );
        (logged_in, text)
    }

    fn store(&self) -> Store {
        self.fixture.store()
    }

    /// Replaces the twofactor config (after `version = 1`, with the fixture's storage).
    fn write_config(&self, text: &str) {
        let state = self.fixture.path().join("state");
        fs::write(
            self.fixture.config(),
            format!(
                "version = 1\n{text}\n[storage]\nstate_dir = \"{}\"\n",
                state.display()
            ),
        )
        .unwrap();
    }
}

fn backup_codes_in(text: &str) -> Vec<String> {
    let start = text
        .find("they are not shown again.")
        .expect("backup codes shown");
    text[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .flat_map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect()
}

#[test]
fn enroll_then_log_in_refuse_wrong_and_replayed_codes_and_spend_a_backup_code_once() {
    assert!(nix_is_root(), "the sshd end-to-end test runs as root");
    let user = format!("tfssh{}", tag());
    let sshd = Sshd::start(&format!(
        "[enforce]\nusers = [\"{user}\"]\n[lockout]\nmax_failures = 20\n"
    ));
    let mut accounts = Accounts::default();
    accounts.login_user(&user, &sshd.fixture.path().join("home"), PASSWORD);

    // 1. First login: the user is required and not enrolled, so enrolls right there.
    let (ok, text) = sshd.login(&user, &[]);
    assert!(ok, "enrolment login failed:\n{text}");
    assert!(
        text.contains("Two-factor authentication is required.\nSet it up now"),
        "{text}"
    );
    assert!(
        text.contains('▀') || text.contains('▄'),
        "QR code arrives intact under a UTF-8 locale:\n{text}"
    );
    let key = key_shown(&text);
    let backups = backup_codes_in(&text);
    assert_eq!(backups.len(), 10, "{text}");
    assert!(sshd.store().load(&user).unwrap().is_enrolled());
    println!("--- what an enrolling user sees ---\n{text}\n--- end ---");

    // 2. A fresh code logs in (the enrollment code's step is spent, so wait for the next).
    let enroll_code = oathtool(&key);
    let code = fresh_code(&key, &enroll_code);
    let (ok, text) = sshd.login(&user, &[&code]);
    if !ok {
        let state = sshd.store().load(&user).unwrap();
        let auth = state.authenticator.as_ref().unwrap();
        let shown = SecretKey::from_base32(&key).unwrap();
        let params = TotpParams::default();
        let now_step = SystemClock.now() / 30;
        let code_step = (now_step.saturating_sub(200)..now_step + 200)
            .find(|s| *shown.code_at_step(&params, *s) == *code);
        panic!(
            "login with code {code} failed at {} (step {now_step}, the code's step {code_step:?}): \
             saved key is the one shown: {}, saved parameters {:?}, last step {:?}, failures {}:\n{text}",
            SystemClock.now(),
            auth.secret == shown,
            auth.params,
            auth.last_step,
            state.lockout.failures,
        );
    }

    // 3. A wrong code is refused, with advice.
    let (ok, text) = sshd.login(&user, &["000000", "000000", "000000"]);
    assert!(!ok, "{text}");
    assert!(text.contains("Wrong code"), "{text}");

    // 4. The code that already logged in is refused as a replay.
    let (ok, text) = sshd.login(&user, &[&code, &code, &code]);
    assert!(!ok, "{text}");
    assert!(text.contains("That code was already used"), "{text}");

    // 5. A backup code logs in exactly once.
    let (ok, text) = sshd.login(&user, &[&backups[0]]);
    assert!(ok, "backup code login failed:\n{text}");
    assert!(
        text.contains("Backup code accepted.\n9 backup codes left."),
        "{text}"
    );
    let (ok, text) = sshd.login(&user, &[&backups[0], &backups[0], &backups[0]]);
    assert!(!ok, "a spent backup code worked again:\n{text}");
    assert_eq!(sshd.store().load(&user).unwrap().backup_codes_left(), 9);
}

/// With the password line requisite, a wrong password ends the stack: the module never
/// runs, so whoever typed the user name sees no QR code and no state is written.
#[test]
fn a_wrong_password_never_reaches_the_module() {
    assert!(nix_is_root(), "the sshd end-to-end test runs as root");
    let user = format!("tfwpw{}", tag());
    let sshd = Sshd::start(&format!("[enforce]\nusers = [\"{user}\"]\n"));
    let mut accounts = Accounts::default();
    accounts.login_user(&user, &sshd.fixture.path().join("home"), PASSWORD);
    let (ok, text) = sshd.login_as(&user, "not-the-password", &[]);
    assert!(!ok, "{text}");
    for shown in ["Set it up now", "Key:", "otpauth://", "Authentication code"] {
        assert!(
            !text.contains(shown),
            "{shown:?} shown after a wrong password:\n{text}"
        );
    }
    let left: Vec<_> = fs::read_dir(sshd.fixture.path().join("state"))
        .unwrap()
        .collect();
    assert!(
        left.is_empty(),
        "state written for a wrong password: {left:?}"
    );
    // The right password does reach it: the stack is not simply broken.
    let (ok, text) = sshd.login(&user, &[]);
    assert!(ok && text.contains("Set it up now"), "{text}");
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false)
}

/// Debian's stock sshd_config: `KbdInteractiveAuthentication no`, so sshd's password
/// method runs PAM and answers the code prompt with the password. That is no code guess:
/// it must never count toward the lockout, and the log must say what to fix.
#[test]
fn the_password_fed_to_the_code_prompt_is_not_counted_as_wrong_codes() {
    assert!(nix_is_root(), "the sshd end-to-end test runs as root");
    let user = format!("tfpwa{}", tag());
    let log = Syslog::new();
    let sshd = Sshd::start_with(
        &format!("[enforce]\nusers = [\"{user}\"]\n[lockout]\nmax_failures = 2\n"),
        "KbdInteractiveAuthentication no\nPasswordAuthentication yes\n",
        Some(&log),
    );
    let mut accounts = Accounts::default();
    accounts.login_user(&user, &sshd.fixture.path().join("home"), PASSWORD);
    let store = sshd.store();
    twofactor_testkit::enroll(&store, &user, &mut OsRandom);
    for _ in 0..3 {
        let (ok, text) = sshd.login_mode(&user, PASSWORD, &[], "password");
        assert!(!ok, "{text}");
    }
    let state = store.load(&user).unwrap();
    assert_eq!(state.lockout.failures, 0, "no wrong code was counted");
    assert_eq!(state.lockout.locked_until, None);
    let fed = log.wait_for("the code prompt was answered with the password", 3);
    let mine = log.grep(&format!("user={user} "));
    assert_eq!(fed.len(), 3, "one line per login: {mine:#?}");
    assert!(
        fed.iter().all(
            |l| l.contains("outcome=failure") && l.contains("KbdInteractiveAuthentication yes")
        ),
        "{fed:#?}"
    );
    assert!(
        !mine.iter().any(|l| l.contains("reason=\"wrong code")),
        "{mine:#?}"
    );
}

/// Each refusal the user must act on reaches an OpenSSH client run as a person runs it
/// (default LogLevel): sshd passes PAM's messages on when authentication fails.
#[test]
fn every_refusal_the_user_must_act_on_reaches_the_ssh_client() {
    assert!(nix_is_root(), "the sshd end-to-end test runs as root");
    let t = tag();
    let [locked, nograce, network, broken, unavailable] =
        ["lk", "ng", "nw", "br", "un"].map(|s| format!("tfr{s}{t}"));
    let users = [&locked, &nograce, &network, &broken, &unavailable]
        .map(|u| format!("\"{u}\""))
        .join(", ");
    let rules = format!("[enforce]\nusers = [{users}]\n");
    let sshd = Sshd::start(&rules);
    let mut accounts = Accounts::default();
    for u in [&locked, &nograce, &network, &broken, &unavailable] {
        accounts.login_user(u, &sshd.fixture.path().join(format!("home-{u}")), PASSWORD);
    }
    let store = sshd.store();
    let refused = |user: &str, shown: &str| {
        let (ok, text) = sshd.login_mode(user, PASSWORD, &[], "default");
        assert!(!ok, "{text}");
        assert!(
            text.contains(shown),
            "{shown:?} not shown to the client:\n{text}"
        );
    };

    // A broken config before any good one: nothing to fall back on.
    sshd.write_config(&format!("{rules}[lockout]\nmax_failures = \"5\"\n"));
    refused(
        &broken,
        "the two-factor configuration on this server is broken",
    );

    sshd.write_config(&format!("{rules}[enroll]\nat_login = false\n"));
    refused(&nograce, "no authenticator is set up");

    sshd.write_config(&format!(
        "{rules}[enroll]\nat_login_networks = [\"10.0.0.0/8\"]\n"
    ));
    refused(&network, "Set it up from an allowed network");

    twofactor_testkit::enroll(&store, &locked, &mut OsRandom);
    store
        .update(
            &locked,
            |s| -> Result<(), twofactor_core::store::StoreError> {
                s.lockout.locked_until = Some(SystemClock.now() + 600);
                Ok(())
            },
        )
        .unwrap();
    refused(&locked, "Two-factor login is locked for 10 minutes");

    let file = sshd
        .fixture
        .path()
        .join(format!("state/{unavailable}.json"));
    fs::write(&file, b"{ not json").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    refused(
        &unavailable,
        "two-factor login is unavailable on this server",
    );
}

/// A wrong code and then a disconnect: sshd ends the PAM conversation without letting
/// the module finish, yet the failure counted toward the lockout is in the log.
#[test]
fn a_wrong_code_is_logged_when_counted_even_if_the_client_hangs_up() {
    assert!(nix_is_root(), "the sshd end-to-end test runs as root");
    let user = format!("tfhup{}", tag());
    let log = Syslog::new();
    let sshd = Sshd::start_with(
        &format!("[enforce]\nusers = [\"{user}\"]\n"),
        KBD_INTERACTIVE,
        Some(&log),
    );
    let mut accounts = Accounts::default();
    accounts.login_user(&user, &sshd.fixture.path().join("home"), PASSWORD);
    twofactor_testkit::enroll(&sshd.store(), &user, &mut OsRandom);
    let (ok, text) = sshd.login_mode(&user, PASSWORD, &["000000"], "hangup");
    assert!(!ok && text.contains("HUNG-UP"), "{text}");
    assert_eq!(sshd.store().load(&user).unwrap().lockout.failures, 1);
    let lines = log.wait_for(&format!("user={user} "), 1);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("outcome=failure reason=\"wrong code\"")),
        "{lines:#?}"
    );
}

/// The fleet: two sshd "hosts", each with its own client certificate, share one
/// PostgreSQL. A user enrolls at login on A and logs in on B with the next code; that code
/// is refused on A. With the database stopped, B refuses the user with the message and
/// logs why, while an exempt account still logs in; after a restart nothing is lost.
#[test]
fn fleet_enroll_on_one_host_log_in_on_another_and_fail_closed_in_an_outage() {
    assert!(nix_is_root(), "the sshd end-to-end test runs as root");
    let cluster = Cluster::start();
    let user = format!("tffleet{}", tag());
    let exempt = format!("tfbreak{}", tag());
    let enforce = format!("[enforce]\nall_users = true\nexempt_users = [\"{exempt}\"]\n");
    let log = Syslog::new();
    let a = Sshd::start("");
    let b = Sshd::start("");
    // B again with its syslog caught (its private /dev allows no PTY, so no shell there).
    let b_logged = Sshd::start_with("", KBD_INTERACTIVE, Some(&log));
    for (sshd, host) in [(&a, HOSTS[0]), (&b, HOSTS[1]), (&b_logged, HOSTS[1])] {
        fs::write(sshd.fixture.config(), cluster.config_text(host, &enforce)).unwrap();
    }
    let mut accounts = Accounts::default();
    accounts.login_user(&user, &a.fixture.path().join("home"), PASSWORD);
    accounts.login_user(&exempt, &b.fixture.path().join("home"), PASSWORD);

    let (ok, text) = a.login(&user, &[]);
    assert!(ok, "enrolment on host A failed:\n{text}");
    println!("--- host A: enrolment at the first login ---\n{text}\n--- end ---");
    let key = key_shown(&text);
    let code = fresh_code(&key, &oathtool(&key));
    let (ok, text) = b.login(&user, &[&code]);
    assert!(
        ok,
        "login on host B with the next code ({code}) failed:\n{text}"
    );
    println!("--- host B: the next code ---\n{text}\n--- end ---");
    let (ok, text) = a.login(&user, &[&code, &code, &code]);
    assert!(!ok, "the code B accepted worked again on A:\n{text}");
    assert!(text.contains("That code was already used"), "{text}");

    cluster.pg_ctl("stop");
    // At the client's default LogLevel, as a person runs it: sshd passes the message on.
    let (ok, text) = b_logged.login_mode(&user, PASSWORD, &[], "default");
    assert!(!ok, "a login passed with the database down:\n{text}");
    println!("--- host B, database down: a required user ---\n{text}\n--- end ---");
    assert!(
        text.contains("the two-factor server cannot be reached"),
        "{text}"
    );
    assert!(
        !text.contains("Authentication code"),
        "no code is asked for that cannot be checked:\n{text}"
    );
    let lines = log.wait_for(&format!("user={user} "), 1);
    assert!(
        lines.iter().any(|l| l.contains("cannot be reached")),
        "{lines:#?}"
    );
    let (ok, text) = b.login(&exempt, &[]);
    assert!(ok, "the exempt account was shut out by the outage:\n{text}");
    println!("--- host B, database down: the exempt account ---\n{text}\n--- end ---");

    cluster.pg_ctl("start");
    let next = fresh_code(&key, &code);
    let (ok, text) = a.login(&user, &[&next]);
    assert!(ok, "after the restart the next code failed:\n{text}");
}

/// A lone code that reads as an octal number (a 0, then digits 0 to 7) reaches the
/// module as typed: the expect driver once passed it through Tcl's expr, which turned
/// 044162 into 18546, and about one fresh-code login in thirty failed.
#[test]
fn a_code_with_a_leading_zero_reaches_the_module_intact() {
    assert!(nix_is_root(), "the sshd end-to-end test runs as root");
    let user = format!("tfzero{}", tag());
    let sshd = Sshd::start(&format!("[enforce]\nusers = [\"{user}\"]\n"));
    let mut accounts = Accounts::default();
    accounts.login_user(&user, &sshd.fixture.path().join("home"), PASSWORD);
    let p = TotpParams::default();
    let (key, code) = loop {
        let key = SecretKey::generate(&mut OsRandom).unwrap();
        let code = key
            .code_at_step(&p, p.step_at(SystemClock.now()))
            .to_string();
        if code.starts_with('0') && code.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            break (key, code);
        }
    };
    twofactor_testkit::enroll_key(&sshd.store(), &user, key, &mut OsRandom);
    let (ok, text) = sshd.login(&user, &[&code]);
    assert!(ok, "code {code} refused:\n{text}");
}

/// A client that sends one password: sshd's password method with keyboard-interactive
/// off, and the one-prompt stack. The OpenSSH client types the password with the code
/// appended; sshd answers the module's one prompt with it.
#[test]
fn one_prompt_over_sshd_password_authentication() {
    assert!(nix_is_root(), "the sshd end-to-end test runs as root");
    let user = format!("tfone{}", tag());
    let sshd = Sshd::start_with(
        &format!("[enforce]\nusers = [\"{user}\"]\n"),
        "KbdInteractiveAuthentication no\nPasswordAuthentication yes\n",
        None,
    );
    sshd.fixture.service(
        "sshd",
        "auth requisite {module} split\n\
         auth requisite pam_unix.so use_first_pass\n\
         auth required {module}\n\
         account required pam_unix.so\n\
         session required pam_permit.so\n\
         password required pam_deny.so\n",
    );
    let mut accounts = Accounts::default();
    accounts.login_user(&user, &sshd.fixture.path().join("home"), PASSWORD);
    let key = SecretKey::generate(&mut OsRandom).unwrap();
    twofactor_testkit::enroll_key(&sshd.store(), &user, key.clone(), &mut OsRandom);
    let key = key.to_base32().to_string();

    let (ok, text) = sshd.login_mode(&user, &format!("{PASSWORD}000000"), &[], "password");
    assert!(!ok, "a wrong code got in:\n{text}");
    assert_eq!(sshd.store().load(&user).unwrap().lockout.failures, 1);
    println!("--- ssh, password method, wrong code ---\n{text}\n--- end ---");

    let code = oathtool(&key);
    let (ok, text) = sshd.login_mode(&user, &format!("{PASSWORD}{code}"), &[], "password");
    assert!(ok, "password{code} refused:\n{text}");
    assert!(!text.contains("Authentication code"), "{text}");
    println!("--- ssh, password method, password{code} ---\n{text}\n--- end ---");
}

/// The driver itself, against a stand-in `ssh` that splits its output right after
/// "Key: ", as a real ssh's reads sometimes fell. The driver's "[y/N]: " pattern was a
/// glob, whose "[y/N]" is a character class: it matched the "y: " of "Key: ", took the
/// key line and answered "n". About one large enrollment screen in fifteen failed so.
#[test]
fn the_driver_reads_a_key_line_that_arrives_in_two_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("ssh");
    fs::write(
        &fake,
        "#!/bin/sh\n\
         printf '(u@127.0.0.1) Password: '; read -r pw\n\
         printf 'Set it up now for this account:\\nKey: '; sleep 0.3\n\
         printf '    JBSW Y3DP EHPK 3PXP\\nCode from the app to finish setup: '; read -r code\n\
         [ \"$code\" = \"$(oathtool --totp -b JBSWY3DPEHPK3PXP)\" ] || { echo WRONG-CODE; exit 1; }\n\
         printf '$ '; read -r line; echo LOGGED-IN-AS-u\n",
    )
    .unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap()
    );
    let out = Command::new("expect")
        .arg(workspace().join("tests/e2e/ssh_login.exp"))
        .args(["1", "u", "pw", "-"])
        .env("PATH", path)
        .env("LC_ALL", "C.UTF-8")
        .output()
        .expect("expect must be installed (tests/setup)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("LOGGED-IN-AS-u"), "{text}");
}

/// The enrollment screen in a real 80-column terminal, as a new user meets it: ssh in a
/// tmux pane of 80x24 (unicode) or 80x44 (`enroll.qr = "ascii"`). When the setup prompt
/// shows, the whole QR code, from its top row, is on screen with the key and the prompt,
/// and the QR code read off the screen decodes to the account's URI.
#[test]
fn the_enrollment_screen_fits_80x24_and_its_qr_code_scans_off_it() {
    assert!(nix_is_root(), "the sshd end-to-end test runs as root");
    let sshd = Sshd::start("");
    let mut accounts = Accounts::default();
    for (style, rows) in [("unicode", 24), ("ascii", 44)] {
        let user = format!("tfqr{}{}", &style[..1], tag() % 1000);
        sshd.write_config(&format!(
            "[enforce]\nusers = [\"{user}\"]\n[enroll]\nissuer = \"twofactor demo\"\nqr = \"{style}\"\n"
        ));
        accounts.login_user(&user, &sshd.fixture.path().join(&user), PASSWORD);
        let _turn = pam_wrapper_turn();
        sshd.wait_for_idle();
        let screen = Screen::start(
            80,
            rows,
            &format!(
                "ssh -p {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
                 -o PubkeyAuthentication=no -o PreferredAuthentications=keyboard-interactive \
                 {user}@127.0.0.1",
                sshd.port
            ),
        );
        screen.wait_for("Password:");
        screen.type_line(PASSWORD);
        let shown = screen.wait_for("Code from the app to finish setup:");
        let text = shown.join("\n");
        println!("--- {style}, 80x{rows}: the screen at the setup prompt ---\n{text}\n--- end ---");
        let (key, qr_rows) =
            check_setup_screen(&shown, "Code from the app to finish setup:", &user);
        println!("QR rows on screen: {qr_rows} ({style})");

        // The enrollment goes through: the key on screen gives the code.
        screen.type_line(&oathtool(&key));
        screen.wait_for("Press Enter once you have saved the backup codes");
        screen.type_line("");
        // capture-pane drops trailing spaces, so the shell's "$ " is not waited for.
        screen.type_line("echo LOGGED-IN-AS-$(id -un)");
        screen.wait_for(&format!("LOGGED-IN-AS-{user}"));
        drop(screen);
        assert!(sshd.store().load(&user).unwrap().is_enrolled());
    }
}

/// `[ssh_factor]` through a real sshd whose `TrustedUserCAKeys` lists two CAs, while the
/// module's config lists one and asks for an extension; certificates are made by
/// `ssh-keygen -s`. Only a certificate from the listed CA carrying the extension stands
/// for the code; sshd accepts the others, and the module asks for the code after them.
#[test]
fn an_sso_certificate_stands_for_the_code_and_nothing_else_does() {
    assert!(nix_is_root(), "the sshd end-to-end test runs as root");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = |name: &str| d.join(name).to_str().unwrap().to_string();
    let key = |name: &str| {
        run(
            "ssh-keygen",
            &["-q", "-t", "ed25519", "-N", "", "-f", &path(name)],
        );
        path(name)
    };
    let (sso, other) = (key("sso_ca"), key("other_ca"));
    let user = format!("tfcert{}", tag());
    let sign = |ca: &str, name: &str, extra: &[&str]| {
        let k = key(name);
        let public = format!("{k}.pub");
        let mut args = vec![
            "-q",
            "-s",
            ca,
            "-I",
            "sso-issued",
            "-n",
            &user,
            "-V",
            "-5m:+1h",
        ];
        args.extend_from_slice(extra);
        args.push(&public);
        run("ssh-keygen", &args);
        k
    };
    let mfa = ["-O", "extension:mfa@sso.example.com"];
    let with_mfa = sign(&sso, "with_mfa", &mfa);
    let without_mfa = sign(&sso, "without_mfa", &[]);
    let from_other = sign(&other, "from_other", &mfa);
    let plain = key("plain");

    let cas = d.join("trusted_user_ca_keys");
    let ca_pub = |ca: &str| fs::read_to_string(format!("{ca}.pub")).unwrap();
    fs::write(&cas, ca_pub(&sso) + &ca_pub(&other)).unwrap();
    let fingerprint = {
        let out = Command::new("ssh-keygen")
            .args(["-l", "-E", "sha256", "-f", &format!("{sso}.pub")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    };
    let auth = format!(
        "KbdInteractiveAuthentication yes\nPasswordAuthentication no\nPubkeyAuthentication yes\n\
         TrustedUserCAKeys {}\nAuthenticationMethods publickey,keyboard-interactive\n",
        cas.display()
    );
    let sshd = Sshd::start_with(
        &format!(
            "[enforce]\nusers = [\"{user}\"]\n[ssh_factor]\ncert_cas = [\"{fingerprint}\"]\n\
             cert_extension = \"mfa@sso.example.com\"\n"
        ),
        &auth,
        None,
    );
    let home = sshd.fixture.path().join("home");
    let mut accounts = Accounts::default();
    accounts.login_user(&user, &home, PASSWORD);
    fs::create_dir_all(home.join(".ssh")).unwrap();
    fs::write(home.join(".ssh/authorized_keys"), ca_pub(&plain)).unwrap();
    run("chown", &["-R", &user, home.join(".ssh").to_str().unwrap()]);
    let (_, backups) = twofactor_testkit::enroll(&sshd.store(), &user, &mut OsRandom);

    let (ok, text) = sshd.login_mode(&user, PASSWORD, &[], &format!("key:{with_mfa}"));
    assert!(
        ok,
        "the SSO certificate with the extension did not log in:\n{text}"
    );
    assert!(
        !text.contains("Authentication code"),
        "asked for a code after the SSO's certificate:\n{text}"
    );
    println!("--- certificate from the listed CA, with the extension ---\n{text}\n--- end ---");

    for (what, identity, code) in [
        ("without the extension", &without_mfa, &backups[0]),
        (
            "from the CA the config does not list",
            &from_other,
            &backups[1],
        ),
        ("a plain key", &plain, &backups[2]),
    ] {
        let (ok, text) = sshd.login_mode(&user, PASSWORD, &[code], &format!("key:{identity}"));
        assert!(ok, "{what}: the login with a backup code failed:\n{text}");
        assert!(
            text.contains("Authentication code"),
            "{what}: no code was asked for:\n{text}"
        );
        println!("--- {what} ---\n{text}\n--- end ---");
    }
}
