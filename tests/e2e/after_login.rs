//! `[after_login]` end to end: a real sshd and a real sudo in a private mount namespace
//! (/etc an overlay holding this test's PAM stacks and sudoers entry, /run and /var/log
//! fresh tmpfs), the ssh client outside it. A login with a code, then sudo in that
//! shell: the password only. The machine's own files are never touched.
//!
//! Needs root, a kernel that lets pam_loginuid set the login uid (so each login gets an
//! audit session of its own), and the packages in tests/setup.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::fs;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use twofactor_core::random::OsRandom;
use twofactor_core::totp::SecretKey;
use twofactor_testkit::{
    Accounts, KillOnDrop, PamFixture, Session, free_port, oathtool, pam_module_so, tag,
};

const PASSWORD: &str = "After-Login-Pass-7";

/// Enters the namespace, then runs the rest of its arguments.
const ENTER: &str = r#"set -e
d=$1; shift
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$d/upper,workdir=$d/work" /etc
mount -t tmpfs -o mode=0755 twofactor-test-run /run
mkdir -p /run/sshd
mount -t tmpfs -o mode=0755 twofactor-test-log /var/log
if [ -d /var/lib/sudo ]; then mount -t tmpfs -o mode=0700 twofactor-test-sudo /var/lib/sudo; fi
exec "$@"
"#;

/// sshd and sudo with the module, in their own namespace.
struct Machine {
    fixture: PamFixture,
    port: u16,
    _sshd: KillOnDrop,
}

impl Machine {
    /// `loginuid`: whether sshd's session stack runs pam_loginuid, which starts the
    /// login's audit session.
    fn start(config: &str, user: &str, loginuid: bool) -> Self {
        let before = if loginuid {
            "session required pam_loginuid.so\n"
        } else {
            ""
        };
        Self::start_with(config, user, before, true)
    }

    /// `before`: sshd's session lines ahead of the module's. `su_session`: whether su
    /// runs the module in its session stack too, or in its auth stack only.
    fn start_with(config: &str, user: &str, before: &str, su_session: bool) -> Self {
        let fixture = PamFixture::new(config);
        let d = fixture.path();
        for sub in ["upper/pam.d", "upper/sudoers.d", "work"] {
            fs::create_dir_all(d.join(sub)).unwrap();
        }
        let module = format!(
            "{} config={}",
            pam_module_so().display(),
            fixture.config().display()
        );
        fs::write(
            d.join("upper/pam.d/sshd"),
            format!(
                "auth requisite pam_unix.so\nauth required {module}\n\
                 account required pam_unix.so\n\
                 {before}session optional {module}\n\
                 session required pam_permit.so\npassword required pam_deny.so\n"
            ),
        )
        .unwrap();
        // sudo and sudo -i run the module in their session stacks too, as a common-session
        // line would: their close_session must leave the login's record.
        for service in ["sudo", "sudo-i", "su"] {
            let session = if service != "su" || su_session {
                format!("session optional {module}\n")
            } else {
                String::new()
            };
            fs::write(
                d.join("upper/pam.d").join(service),
                format!(
                    "auth requisite pam_unix.so\nauth required {module}\n\
                     account required pam_unix.so\n{session}\
                     session required pam_permit.so\n"
                ),
            )
            .unwrap();
        }
        let sudoers = d.join("upper/sudoers.d/twofactor-test");
        fs::write(
            &sudoers,
            format!("{user} ALL=(ALL:ALL) ALL\nDefaults:{user} lecture=never, passwd_tries=1\n"),
        )
        .unwrap();
        fs::set_permissions(&sudoers, fs::Permissions::from_mode(0o440)).unwrap();
        fs::write(d.join("enter.sh"), ENTER).unwrap();
        let key = d.join("host_ed25519");
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f", key.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success());
        let port = free_port();
        let sshd_config = d.join("sshd_config");
        fs::write(
            &sshd_config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile none\nUsePAM yes\n\
                 KbdInteractiveAuthentication yes\nPasswordAuthentication no\n\
                 AuthenticationMethods keyboard-interactive\nPubkeyAuthentication no\n\
                 PermitRootLogin no\nStrictModes no\n",
                key.display()
            ),
        )
        .unwrap();
        let log = fs::File::create(d.join("sshd.log")).unwrap();
        let sshd = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh"])
            .arg(d.join("enter.sh"))
            .arg(d)
            .args(["/usr/sbin/sshd", "-D", "-e", "-f"])
            .arg(&sshd_config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let sshd = KillOnDrop(sshd);
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
            _sshd: sshd,
        }
    }

    /// An ssh login with `code`, then sudo; `sudo_code` answers sudo's code prompt.
    fn ssh_then_sudo(&self, user: &str, code: &str, sudo_code: &str) -> String {
        self.ssh_then_sudo_trusting(user, code, sudo_code, "n", "", 0)
    }

    /// As [`Self::ssh_then_sudo`], answering `trust` to the offer to trust this host.
    fn ssh_then_sudo_trusting(
        &self,
        user: &str,
        code: &str,
        sudo_code: &str,
        trust: &str,
        other: &str,
        wait: u32,
    ) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/ssh_then_sudo.exp");
        let out = Command::new("expect")
            .arg(script)
            .args([
                &self.port.to_string(),
                user,
                PASSWORD,
                code,
                sudo_code,
                trust,
                other,
                &wait.to_string(),
            ])
            .env("LC_ALL", "C.UTF-8")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
        assert!(
            !text.contains("EXPECT-TIMEOUT"),
            "stalled:\n{text}\n{}",
            self.sshd_log()
        );
        text
    }

    /// A login answering `code` (and `trust`), then `commands` in its shell; a code
    /// prompt of a command gets `later_code`. The conversation, with `CMD-N-ASKED-FOR-A-CODE`
    /// where command N asked for a code.
    fn shell(
        &self,
        user: &str,
        code: &str,
        trust: &str,
        later_code: &str,
        commands: &[&str],
    ) -> String {
        let out = self
            .shell_command(user, code, trust, later_code, commands)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
        assert!(
            !text.contains("EXPECT-TIMEOUT"),
            "stalled:\n{text}\n{}",
            self.sshd_log()
        );
        text
    }

    fn shell_command(
        &self,
        user: &str,
        code: &str,
        trust: &str,
        later_code: &str,
        commands: &[&str],
    ) -> Command {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/ssh_shell.exp");
        let mut cmd = Command::new("expect");
        cmd.arg(script)
            .args([
                &self.port.to_string(),
                user,
                PASSWORD,
                code,
                trust,
                later_code,
            ])
            .args(commands)
            .env("LC_ALL", "C.UTF-8");
        cmd
    }

    fn sshd_log(&self) -> String {
        fs::read_to_string(self.fixture.path().join("sshd.log")).unwrap_or_default()
    }
}

/// Whether this kernel gives a process that sets its login uid a new audit session.
fn loginuid_settable() -> bool {
    Command::new("sh")
        .args([
            "-c",
            "echo 0 > /proc/self/loginuid && cat /proc/self/sessionid",
        ])
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).trim() != "4294967295"
        })
}

#[test]
fn sudo_in_a_session_that_just_typed_a_code_asks_only_the_password() {
    assert!(
        loginuid_settable(),
        "this test needs a kernel and capabilities that let pam_loginuid set the login uid"
    );
    let home = tempfile::tempdir().unwrap();
    fs::set_permissions(home.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let t = tag() % 10_000;
    let (user, other) = (format!("tfaft{t}"), format!("tfafo{t}"));
    let mut accounts = Accounts::default();
    for u in [&user, &other] {
        accounts.login_user(u, &home.path().join(u), PASSWORD);
    }
    let config = format!(
        "[enforce]\nusers = [\"{user}\", \"{other}\"]\n[after_login]\nservices = [\"sudo\", \"sudo-i\", \"su\"]\nminutes = 15\n\
         [trusted_devices]\nenabled = true\n"
    );

    // A login with a code: sudo, sudo -i, then sudo again ask for the password only.
    let machine = Machine::start(&config, &user, true);
    let key = SecretKey::generate(&mut OsRandom).unwrap();
    twofactor_testkit::enroll_key(&machine.fixture.store(), &user, key.clone(), &mut OsRandom);
    let key = key.to_base32().to_string();
    let other_key = SecretKey::generate(&mut OsRandom).unwrap();
    twofactor_testkit::enroll_key(&machine.fixture.store(), &other, other_key, &mut OsRandom);
    let text = machine.ssh_then_sudo_trusting(&user, &oathtool(&key), "-", "y", &other, 0);
    println!("--- ssh with a code, then sudo, sudo -i, sudo ---\n{text}\n--- end ---");
    for n in 1..=3 {
        assert!(
            text.contains(&format!("\nRAN-{n}")),
            "command {n} did not run:\n{text}\n{}",
            machine.sshd_log()
        );
    }
    assert!(!text.contains("ASKED-FOR-A-CODE"), "{text}");
    // su to another account in that session: its code is asked for (su is listed too,
    // but the session's login uid is not the other account's).
    let su = text.rfind(&format!("su {other}")).unwrap();
    assert!(text[su..].contains("Authentication code"), "{text}");
    assert!(!text.contains("\nRAN-4"), "{text}");
    // su to the same account is covered (su is listed); its session closes inside the
    // login's, and the record survives: sudo after it asks for the password only.
    let back = text.rfind(&format!("su {user}")).unwrap();
    assert!(!text[back..].contains("Authentication code"), "{text}");
    for n in [5, 6] {
        assert!(
            text.contains(&format!("\nRAN-{n}")),
            "command {n} did not run:\n{text}"
        );
    }
    // A second login from the now trusted host types no code: its session has no
    // record, and its sudo asks, while the first session's record still lives.
    let text = machine.ssh_then_sudo(&user, "-", "-");
    println!(
        "--- a second login without a code (trusted host), then sudo ---\n{text}\n--- end ---"
    );
    assert!(
        !text.contains("@127.0.0.1) Authentication code"),
        "the trusted login was asked:\n{text}"
    );
    assert!(text.contains("SUDO-1-ASKED-FOR-A-CODE"), "{text}");
    assert!(!text.contains("\nRAN-1"), "{text}");
    drop(machine);

    // Without pam_loginuid the login starts no audit session of its own, as in a
    // container that cannot set the login uid: nothing is recorded, and sudo asks.
    let machine = Machine::start(&config, &user, false);
    twofactor_testkit::enroll_key(
        &machine.fixture.store(),
        &user,
        SecretKey::from_base32(&key).unwrap(),
        &mut OsRandom,
    );
    let text = machine.ssh_then_sudo(&user, &oathtool(&key), "-");
    println!("--- no pam_loginuid: ssh with a code, then sudo ---\n{text}\n--- end ---");
    assert!(text.contains("SUDO-1-ASKED-FOR-A-CODE"), "{text}");
    assert!(!text.contains("\nRAN-1"), "{text}");
    drop(machine);

    // After the configured minutes (1 here), sudo asks for the code again.
    let machine = Machine::start(&config.replace("minutes = 15", "minutes = 1"), &user, true);
    twofactor_testkit::enroll_key(
        &machine.fixture.store(),
        &user,
        SecretKey::from_base32(&key).unwrap(),
        &mut OsRandom,
    );
    let text = machine.ssh_then_sudo_trusting(&user, &oathtool(&key), "-", "n", "", 61);
    println!("--- ssh with a code, 61 s, then sudo (minutes = 1) ---\n{text}\n--- end ---");
    assert!(text.contains("ASKED-FOR-A-CODE"), "{text}");
    assert!(!text.contains("\nRAN-1"), "{text}");
}

/// One account, with a home the test can write into, enrolled on `machine`'s store.
fn enrolled(machine: &Machine, user: &str) -> (String, Vec<String>) {
    let (key, codes) =
        twofactor_testkit::enroll_with_codes(&machine.fixture.store(), user, 5, &mut OsRandom);
    (key.to_base32().to_string(), codes)
}

/// A test account, with a home sshd can read; removed, home and all, when dropped
/// (after the machine the test started later).
struct TestUser {
    name: String,
    home: std::path::PathBuf,
    _accounts: Accounts,
    _homes: tempfile::TempDir,
}

fn test_user(prefix: &str) -> TestUser {
    assert!(
        loginuid_settable(),
        "needs a kernel that lets pam_loginuid set the login uid"
    );
    let homes = homes();
    let name = format!("{prefix}{}", tag() % 10_000);
    let home = homes.path().join(&name);
    let mut accounts = Accounts::default();
    accounts.login_user(&name, &home, PASSWORD);
    TestUser {
        name,
        home,
        _accounts: accounts,
        _homes: homes,
    }
}

/// A home for test accounts that sshd can read.
fn homes() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    fs::set_permissions(home.path(), fs::Permissions::from_mode(0o755)).unwrap();
    home
}

/// Writes `text` as a file of `user`'s, as the user would.
fn write_as(user: &str, path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    let uid = nix::unistd::User::from_name(user).unwrap().unwrap().uid;
    nix::unistd::chown(path, Some(uid), None).unwrap();
}

const AFTER_LOGIN: &str = "[after_login]\nservices = [\"sudo\", \"sudo-i\"]\nminutes = 15\n\
                           [trusted_devices]\nenabled = true\n";

/// Drives a window of `user`'s tmux server (socket `sock`) that runs sudo: types the
/// password at sudo's prompt, then prints the pane between markers.
const TMUX_SUDO: &str = r#"s=$1; pw=$2
tmux -L "$s" new-window -t work "sudo -k sh -c 'echo RAN-IN-''TMUX'; sleep 60"
i=0; while [ $i -lt 100 ]; do tmux -L "$s" capture-pane -p -t work | grep -q 'password for' && break; sleep 0.1; i=$((i+1)); done
tmux -L "$s" send-keys -t work "$pw" Enter
i=0; while [ $i -lt 100 ]; do out=$(tmux -L "$s" capture-pane -p -t work); case "$out" in *"Authentication code"*|*RAN-IN-TMUX*) break;; esac; sleep 0.1; i=$((i+1)); done
echo PANE-BEGIN; echo "$out" | grep -v '^$'; echo PANE-END
"#;

#[test]
fn a_window_of_a_multiplexer_started_at_a_verified_login_asks_for_the_code() {
    let account = test_user("tfmux");
    let (user, user_home) = (&account.name, &account.home);
    let machine = Machine::start(
        &format!("[enforce]\nusers = [\"{user}\"]\n{AFTER_LOGIN}"),
        user,
        true,
    );
    let (key, _) = enrolled(&machine, user);
    write_as(user, &user_home.join("tmux_sudo.sh"), TMUX_SUDO);
    let sock = format!("tftest{}", tag());
    let release = user_home.join("release");

    // Login 1 types a code, trusts this host, starts a tmux server and stays.
    let hold = format!(
        "tmux -L {sock} new -d -s work && echo TMUX-''UP; while [ ! -e {} ]; do sleep 0.2; done",
        release.display()
    );
    let mut first = machine.shell_command(user, &oathtool(&key), "y", "-", &[&hold]);
    let first = Session::start(
        first
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    first.wait_for("TMUX-UP");

    // Login 2 comes from the trusted host and types no code: its own sudo asks, and so
    // must a window it opens in login 1's tmux server.
    let window = format!("sh tmux_sudo.sh {sock} {PASSWORD}");
    let text = machine.shell(
        user,
        "-",
        "n",
        "-",
        &["sudo -k sh -c 'echo RAN-''OWN'", &window],
    );
    let _ = Command::new("runuser")
        .args(["-u", user, "--", "tmux", "-L", &sock, "kill-server"])
        .output();
    fs::write(&release, "").unwrap();
    let (_, first_text) = first.finish();
    println!(
        "--- login 2 (no code), its sudo, then sudo in login 1's tmux ---\n{text}\n--- end ---"
    );
    assert!(
        !text.contains("LOGIN-ASKED-FOR-A-CODE"),
        "login 2 was asked:\n{text}\n{first_text}"
    );
    assert!(
        text.contains("CMD-1-ASKED-FOR-A-CODE") && !text.contains("\nRAN-OWN"),
        "{text}"
    );
    let pane = &text[text.find("PANE-BEGIN").expect("no pane")..];
    assert!(
        pane.contains("Authentication code"),
        "sudo in a tmux window ran without a code:\n{text}"
    );
    assert!(!pane.contains("RAN-IN-TMUX"), "{text}");
}

#[test]
fn a_ticket_copied_through_pam_environment_covers_no_other_login() {
    let account = test_user("tfenv");
    let (user, user_home) = (&account.name, &account.home);
    // Debian's stock sshd stack reads the user's own environment file in its session
    // phase; here it runs before the module's session line.
    let machine = Machine::start_with(
        &format!("[enforce]\nusers = [\"{user}\"]\n{AFTER_LOGIN}"),
        user,
        "session required pam_loginuid.so\nsession required pam_env.so user_readenv=1\n",
        true,
    );
    let (key, _) = enrolled(&machine, user);
    let env_file = user_home.join(".pam_environment");
    // Copy the ticket where the shell sees it, and blank it before the module looks.
    write_as(
        user,
        &env_file,
        "STOLEN DEFAULT=${TWOFACTOR_VERIFIED}\nTWOFACTOR_VERIFIED DEFAULT=\n",
    );
    let text = machine.shell(
        user,
        &oathtool(&key),
        "y",
        "-",
        &["echo \"STOLEN=[$STOLEN]\""],
    );
    println!("--- login 1 with a code copies its ticket ---\n{text}\n--- end ---");
    let start = text.rfind("STOLEN=[").expect("no STOLEN line") + "STOLEN=[".len();
    let ticket: String = text[start..].chars().take_while(|c| *c != ']').collect();
    assert_eq!(
        ticket.len(),
        32,
        "the ticket did not reach the shell:\n{text}"
    );

    // Login 2 from the trusted host types no code, and plants the ticket.
    write_as(
        user,
        &env_file,
        &format!("TWOFACTOR_VERIFIED DEFAULT={ticket}\n"),
    );
    let text = machine.shell(user, "-", "n", "-", &["sudo -k sh -c 'echo RAN-''PLANTED'"]);
    println!("--- login 2 (no code) with the ticket planted, then sudo ---\n{text}\n--- end ---");
    assert!(!text.contains("LOGIN-ASKED-FOR-A-CODE"), "{text}");
    assert!(
        text.contains("CMD-1-ASKED-FOR-A-CODE"),
        "sudo took a stolen ticket:\n{text}"
    );
    assert!(!text.contains("\nRAN-PLANTED"), "{text}");
}

#[test]
fn su_with_the_module_in_auth_only_hands_no_ticket_to_its_command() {
    let account = test_user("tfsut");
    let user = &account.name;
    // su checks codes, is not covered, and has no session line of the module.
    let machine = Machine::start_with(
        &format!("[enforce]\nusers = [\"{user}\"]\n{AFTER_LOGIN}"),
        user,
        "session required pam_loginuid.so\n",
        false,
    );
    let (key, codes) = enrolled(&machine, user);
    let text = machine.shell(
        user,
        &oathtool(&key),
        "n",
        &codes[0],
        &[&format!(
            "su {user} -c 'echo SU-''RAN; env' | grep -e SU-RAN -e TWOFACTOR || true"
        )],
    );
    println!("--- su with a backup code, then its command's environment ---\n{text}\n--- end ---");
    assert!(
        text.contains("CMD-1-ASKED-FOR-A-CODE") && text.contains("\nSU-RAN"),
        "{text}"
    );
    assert!(
        !text.contains("TWOFACTOR_VERIFIED="),
        "su handed a ticket on:\n{text}"
    );
}
