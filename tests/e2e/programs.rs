//! The real programs people log in with: `login` on a terminal, `su -` run by an
//! ordinary user, and `sudo`, with the module in their real PAM stacks through
//! common-auth, as `pam-auth-update --enable twofactor` puts it there.
//!
//! Each runs in a private mount namespace: /etc is an overlay holding this test's
//! common-auth and sudoers entry, so the machine's own PAM files are never touched, and
//! /run, /var/log and /var/lib/sudo are fresh tmpfs, so utmp, wtmp, btmp, lastlog and
//! sudo's timestamps stay out of the machine. The terminal is a real one: a tmux pane
//! of 80x24.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use twofactor_core::random::OsRandom;
use twofactor_core::store::Store;
use twofactor_core::totp::SecretKey;
use twofactor_testkit::screen::{Screen, check_setup_screen};
use twofactor_testkit::{Accounts, PamFixture, oathtool, pam_module_so, tag};

const PASSWORD: &str = "Programs-Pass-31";

/// Enters the namespace, then runs the rest of its arguments.
const ENTER: &str = r#"set -e
d=$1; shift
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$d/upper,workdir=$d/work" /etc
mount -t tmpfs -o mode=0755 twofactor-test-run /run
mount -t tmpfs -o mode=0755 twofactor-test-log /var/log
if [ -d /var/lib/sudo ]; then mount -t tmpfs -o mode=0700 twofactor-test-sudo /var/lib/sudo; fi
exec "$@"
"#;

/// A machine as pam-auth-update leaves it: Debian's common-auth with the module line.
struct Machine {
    fixture: PamFixture,
}

impl Machine {
    fn new(config: &str, sudoer: &str) -> Self {
        let fixture = PamFixture::new(config);
        let d = fixture.path();
        fs::create_dir_all(d.join("upper/pam.d")).unwrap();
        fs::create_dir_all(d.join("upper/sudoers.d")).unwrap();
        fs::create_dir(d.join("work")).unwrap();
        fs::write(
            d.join("upper/pam.d/common-auth"),
            format!(
                "auth\t[success=1 default=ignore]\tpam_unix.so nullok\n\
                 auth\trequisite\t\t\tpam_deny.so\n\
                 auth\trequired\t\t\tpam_permit.so\n\
                 auth\trequired\t\t\t{} config={}\n",
                pam_module_so().display(),
                fixture.config().display()
            ),
        )
        .unwrap();
        let sudoers = d.join("upper/sudoers.d/twofactor-test");
        fs::write(
            &sudoers,
            format!(
                "{sudoer} ALL=(ALL:ALL) ALL\nDefaults:{sudoer} lecture=never, passwd_tries=1\n"
            ),
        )
        .unwrap();
        fs::set_permissions(&sudoers, fs::Permissions::from_mode(0o440)).unwrap();
        fs::write(d.join("enter.sh"), ENTER).unwrap();
        Self { fixture }
    }

    fn store(&self) -> Store {
        self.fixture.store()
    }

    /// `program` in the namespace, run by root, or by `user` with a clean environment.
    fn command(&self, user: Option<&str>, program: &str) -> String {
        let d = self.fixture.path().display();
        let as_user = match user {
            Some(u) => format!(
                "setpriv --reuid={u} --regid={} --init-groups -- \
                 env -i TERM=xterm-256color LC_ALL=C.UTF-8 PATH=/usr/bin:/bin HOME=/ ",
                group_of(u)
            ),
            None => String::new(),
        };
        format!("unshare --mount --propagation private -- sh {d}/enter.sh {d} {as_user}{program}")
    }
}

fn group_of(user: &str) -> String {
    let out = Command::new("id").args(["-g", user]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Enrolls `user` straight into the store; returns the base32 key.
fn enroll(store: &Store, user: &str) -> String {
    let key = SecretKey::generate(&mut OsRandom).unwrap();
    twofactor_testkit::enroll_key(store, user, key.clone(), &mut OsRandom);
    key.to_base32().to_string()
}

/// Runs one program through its prompts: the password, then each code in turn.
/// Returns the screen once `done` shows.
fn run(command: &str, password: &str, codes: &[&str], done: &str) -> String {
    let screen = Screen::start(80, 24, command);
    screen.wait_for("assword");
    screen.type_line(password);
    // Each code waits for a prompt of its own: typed ahead of it, login discards it.
    for (i, code) in codes.iter().enumerate() {
        screen.wait_for_nth("Authentication code:", i + 1);
        screen.type_line(code);
    }
    let shown = screen.wait_for(done);
    shown.join("\n")
}

/// Logs in and proves it with the account name the shell reports.
fn log_in(command: &str, user: &str, code: &str) -> String {
    let screen = Screen::start(80, 24, command);
    screen.wait_for("assword");
    screen.type_line(PASSWORD);
    screen.wait_for("Authentication code:");
    screen.type_line(code);
    screen
        .type_until(
            "echo LOGGED-IN-AS-$(id -un)",
            &format!("LOGGED-IN-AS-{user}"),
        )
        .join("\n")
}

/// The three programs' cases: a wrong password never reaches the code prompt, a wrong
/// code is refused, the right code gets in.
#[test]
fn login_su_and_sudo_ask_for_the_code_after_the_password() {
    let home = tempfile::tempdir().unwrap();
    fs::set_permissions(home.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let t = tag() % 10_000;
    let (at_login, su_target, su_caller, sudoer) = (
        format!("tflog{t}"),
        format!("tfsut{t}"),
        format!("tfsuc{t}"),
        format!("tfsdo{t}"),
    );
    let mut accounts = Accounts::default();
    for u in [&at_login, &su_target, &su_caller, &sudoer] {
        accounts.login_user(u, &home.path().join(u), PASSWORD);
    }
    let machine = Machine::new(
        &format!(
            "[enforce]\nusers = [\"{at_login}\", \"{su_target}\", \"{sudoer}\"]\n\
             [lockout]\nmax_failures = 20\n"
        ),
        &sudoer,
    );
    let store = machine.store();
    let cases = [
        (
            "login",
            machine.command(None, &format!("login {at_login}")),
            &at_login,
            "Login incorrect",
        ),
        (
            "su",
            machine.command(Some(&su_caller), &format!("su - {su_target}")),
            &su_target,
            "Authentication failure",
        ),
        (
            "sudo",
            machine.command(Some(&sudoer), "sudo -k sh"),
            &sudoer,
            "incorrect password attempt",
        ),
    ];
    for (program, command, user, refused) in cases {
        let key = enroll(&store, user);
        let text = run(&command, "wrong-password", &[], refused);
        assert!(
            !text.contains("Authentication code"),
            "{program}: the code prompt after a wrong password:\n{text}"
        );
        assert_eq!(store.load(user).unwrap().lockout.failures, 0, "{program}");
        println!("--- {program}: wrong password ---\n{text}\n--- end ---");

        let wrong = ["000000", "000000", "000000"];
        let text = run(&command, PASSWORD, &wrong, refused);
        // sudo authenticates with PAM_SILENT, so the module says nothing there; the
        // prompt still comes back for each try.
        if program == "sudo" {
            assert_eq!(text.matches("Authentication code:").count(), 3, "{text}");
            assert!(!text.contains("Wrong code"), "{text}");
        } else {
            assert!(text.contains("Wrong code"), "{program}:\n{text}");
        }
        assert_eq!(store.load(user).unwrap().lockout.failures, 3, "{program}");
        println!("--- {program}: right password, wrong codes ---\n{text}\n--- end ---");

        let shell_user = if program == "sudo" { "root" } else { user };
        let text = log_in(&command, shell_user, &oathtool(&key));
        println!("--- {program}: right password, right code ---\n{text}\n--- end ---");
        assert_eq!(store.load(user).unwrap().lockout.failures, 0, "{program}");
    }
}

/// `login` as the console runs it, for a required user with no authenticator: the QR
/// code, the key and the prompt fit the 80x24 screen together, and the QR code read off
/// it decodes to the account's URI; the key on screen then finishes the enrollment.
#[test]
fn login_enrolls_on_an_80x24_console() {
    let home = tempfile::tempdir().unwrap();
    fs::set_permissions(home.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let user = format!("tfcon{}", tag() % 10_000);
    let mut accounts = Accounts::default();
    accounts.login_user(&user, &home.path().join(&user), PASSWORD);
    let machine = Machine::new(
        &format!("[enforce]\nusers = [\"{user}\"]\n[enroll]\nissuer = \"twofactor demo\"\n"),
        "nobody",
    );
    let screen = Screen::start(80, 24, &machine.command(None, &format!("login {user}")));
    screen.wait_for("assword");
    screen.type_line(PASSWORD);
    let shown = screen.wait_for("Code from the app to finish setup:");
    let text = shown.join("\n");
    println!("--- login, 80x24: the enrolment screen ---\n{text}\n--- end ---");
    let (key, qr_rows) = check_setup_screen(&shown, "Code from the app to finish setup:", &user);
    println!("QR rows on screen: {qr_rows}");
    screen.type_line(&oathtool(&key));
    screen.wait_for("Press Enter once you have saved the backup codes");
    screen.type_line("");
    screen.type_until(
        "echo LOGGED-IN-AS-$(id -un)",
        &format!("LOGGED-IN-AS-{user}"),
    );
    assert!(machine.store().load(&user).unwrap().is_enrolled());
    assert!(!Path::new("/etc/sudoers.d/twofactor-test").exists());
}

/// `SSH_AUTH_INFO_0=… sudo`: the variable is in sudo's process environment, which the
/// caller sets, and never in its PAM environment, which the module reads. Even with sudo
/// listed in `[ssh_factor] services` and a valid certificate from the listed CA in the
/// variable, sudo asks for the code.
#[test]
fn sudo_asks_for_the_code_whatever_ssh_auth_info_0_the_caller_sets() {
    let home = tempfile::tempdir().unwrap();
    fs::set_permissions(home.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let sudoer = format!("tfsdc{}", tag() % 10_000);
    let mut accounts = Accounts::default();
    accounts.login_user(&sudoer, &home.path().join(&sudoer), PASSWORD);
    let keys = tempfile::tempdir().unwrap();
    let path = |n: &str| keys.path().join(n).to_str().unwrap().to_string();
    let keygen = |args: &[&str]| {
        let out = Command::new("ssh-keygen").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    keygen(&["-q", "-t", "ed25519", "-N", "", "-f", &path("ca")]);
    keygen(&["-q", "-t", "ed25519", "-N", "", "-f", &path("user")]);
    keygen(&[
        "-q",
        "-s",
        &path("ca"),
        "-I",
        "sso",
        "-n",
        &sudoer,
        "-V",
        "-5m:+1h",
        &path("user.pub"),
    ]);
    let fingerprint = keygen(&["-l", "-E", "sha256", "-f", &path("ca.pub")])
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let cert = fs::read_to_string(path("user-cert.pub")).unwrap();
    let cert = cert
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let machine = Machine::new(
        &format!(
            "[enforce]\nusers = [\"{sudoer}\"]\n[ssh_factor]\nservices = [\"sshd\", \"sudo\"]\n\
             cert_cas = [\"{fingerprint}\"]\n"
        ),
        &sudoer,
    );
    let key = enroll(&machine.store(), &sudoer);
    let command = machine.command(
        Some(&sudoer),
        &format!("SSH_AUTH_INFO_0='publickey {cert}' sudo -k sh"),
    );
    let text = log_in(&command, "root", &oathtool(&key));
    assert!(text.contains("Authentication code:"), "{text}");
    println!("--- SSH_AUTH_INFO_0=... sudo ---\n{text}\n--- end ---");
}
