//! Helpers shared by twofactor's tests: throwaway accounts, interactive processes,
//! oathtool codes and a private sshd on loopback.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used)] // helpers for tests: a failed unwrap is a failed test

pub mod behaviour;
pub mod conformance;
pub mod patroni;
pub mod postgres;
pub mod screen;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;

use std::time::{Duration, Instant};
use twofactor_core::backend::{Authority, Backend};
use twofactor_core::backup_codes::{HashCost, NewCodes};
use twofactor_core::config::Config;
use twofactor_core::enroll::{Enrollment, SaveSettings};
use twofactor_core::random::Random;
use twofactor_core::store::Store;
use twofactor_core::totp::{SecretKey, TotpParams};

/// Runs a command and fails the test with its stderr if it fails.
pub fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Users and groups created for one test, deleted on drop even if the test fails.
#[derive(Debug, Default)]
pub struct Accounts {
    users: Vec<String>,
    groups: Vec<String>,
}

impl Accounts {
    /// Creates a group.
    pub fn group(&mut self, name: &str) -> String {
        run("groupadd", &[name]);
        self.groups.push(name.to_string());
        name.to_string()
    }

    /// Creates a user with no home, the given primary and supplementary groups.
    pub fn user(&mut self, name: &str, primary: &str, supplementary: &[&str]) -> String {
        let mut args = vec![
            "--no-create-home",
            "--no-user-group",
            "--shell",
            "/usr/sbin/nologin",
            "--gid",
            primary,
        ];
        let joined = supplementary.join(",");
        if !supplementary.is_empty() {
            args.extend(["--groups", &joined]);
        }
        args.push(name);
        run("useradd", &args);
        self.users.push(name.to_string());
        name.to_string()
    }

    /// Creates `name` as a second name of the existing account `of` (the same uid, as
    /// `useradd -o` makes it). NSS files then answer `getpwnam(name)` with `name`, and
    /// `getpwuid` with `of`, which comes first in /etc/passwd.
    pub fn alias(&mut self, name: &str, of: &str) -> String {
        let out = Command::new("id").args(["-u", of]).output().unwrap();
        let uid = String::from_utf8(out.stdout).unwrap().trim().to_string();
        run(
            "useradd",
            &[
                "--non-unique",
                "--uid",
                &uid,
                "--no-create-home",
                "--no-user-group",
                "--gid",
                "users",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ],
        );
        self.users.push(name.to_string());
        name.to_string()
    }

    /// Creates a user who can log in: a home under `home`, /bin/sh and `password`.
    pub fn login_user(&mut self, name: &str, home: &Path, password: &str) -> String {
        let home = home.to_string_lossy().into_owned();
        run(
            "useradd",
            &[
                "--create-home",
                "--home-dir",
                &home,
                "--shell",
                "/bin/sh",
                name,
            ],
        );
        self.users.push(name.to_string());
        let mut chpasswd = Command::new("chpasswd")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        chpasswd
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{name}:{password}\n").as_bytes())
            .unwrap();
        assert!(chpasswd.wait().unwrap().success(), "chpasswd failed");
        name.to_string()
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        for u in &self.users {
            // A session the test started (a shell under sudo, an sshd child) may still be
            // ending, and userdel refuses a user with processes (exit 8): end them first.
            // 6: no such user any more; 12: removed, but not its home.
            for _ in 0..10 {
                let _ = Command::new("pkill").args(["-KILL", "-u", u]).output();
                let gone = Command::new("userdel")
                    .args(["--remove", u])
                    .output()
                    .is_ok_and(|o| matches!(o.status.code(), Some(0 | 6 | 12)));
                if gone {
                    break;
                }
                thread::sleep(Duration::from_millis(200));
            }
        }
        for g in &self.groups {
            let _ = Command::new("groupdel").arg(g).output();
        }
    }
}

/// A short tag unique to this test process, for account names.
pub fn tag() -> u32 {
    std::process::id() % 100_000
}

/// The current TOTP code for a base32 key, from oathtool (an independent implementation).
pub fn oathtool(key: &str) -> String {
    let out = Command::new("oathtool")
        .args(["--totp", "-b", key])
        .output()
        .expect("oathtool must be installed (tests/setup)");
    assert!(
        out.status.success(),
        "oathtool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A current code for `key` different from `used`, waiting for the next step if needed.
pub fn fresh_code(key: &str, used: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let c = oathtool(key);
        if c != used {
            return c;
        }
        assert!(Instant::now() < deadline, "the TOTP step never changed");
        thread::sleep(Duration::from_millis(500));
    }
}

/// The base32 key shown on the last "Key:" line of `text` (an enrollment screen), with
/// the spaces of its groups taken out. A prompt from another pipe may share its line.
pub fn key_shown(text: &str) -> String {
    let line = text
        .lines()
        .rfind(|l| l.contains("Key:"))
        .unwrap_or_else(|| panic!("no key shown:\n{text}"));
    line.split("Key:")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect()
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running child whose stdout and stderr are collected into one transcript.
#[derive(Debug)]
pub struct Session {
    child: Child,
    text: Arc<Mutex<String>>,
    readers: Vec<thread::JoinHandle<()>>,
    /// Held while a pam_wrapper process runs (see [`pamtester`]).
    _pam_wrapper: Option<MutexGuard<'static, ()>>,
    /// pam_wrapper copies mentioning this path are removed when the session ends.
    pam_wrapper_marker: Option<PathBuf>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(marker) = &self.pam_wrapper_marker {
            // pamtester often leaves its "/tmp/pam.X" copy behind; the test cleans up.
            remove_pam_wrapper_dirs(marker);
        }
    }
}

impl Session {
    /// Starts collecting; the child must have piped stdout and stderr (and stdin to send).
    pub fn start(mut child: Child) -> Self {
        let text = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
        for mut pipe in [out, err] {
            let text = Arc::clone(&text);
            readers.push(thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    text.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }));
        }
        Self {
            child,
            text,
            readers,
            _pam_wrapper: None,
            pam_wrapper_marker: None,
        }
    }

    /// Waits until the transcript contains `needle`, and returns the transcript.
    pub fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let t = self.text.lock().unwrap().clone();
            if t.contains(needle) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {needle:?}; got:\n{t}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the transcript holds a whole line (ended by a newline) with `needle`
    /// in it, and returns the transcript. Output and prompts may come on two pipes, so a
    /// prompt can land at the start of that line.
    pub fn wait_for_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let t = self.text.lock().unwrap().clone();
            if t.split_inclusive('\n')
                .any(|l| l.contains(needle) && l.ends_with('\n'))
            {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for a line with {needle:?}; got:\n{t}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Types a line. The child may already have exited, which is not an error here.
    pub fn send(&mut self, line: &str) {
        if let Some(stdin) = self.child.stdin.as_mut() {
            let _ = stdin.write_all(format!("{line}\n").as_bytes());
        }
    }

    /// Closes stdin, waits (up to 60 s, then kills) and returns the exit code and transcript.
    pub fn finish(mut self) -> (Option<i32>, String) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("child hung:\n{}", self.text.lock().unwrap());
            }
            thread::sleep(Duration::from_millis(20));
        };
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        let text = self.text.lock().unwrap().clone();
        (status.code(), text)
    }
}

/// A child process killed when dropped (servers started by a test).
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The built PAM module. `cargo test` leaves a fresh cdylib in `target/PROFILE/deps` and
/// `cargo build` copies it up to `target/PROFILE`; the newer of the two is the one to test.
pub fn pam_module_so() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let candidates = [
        deps.join("libpam_twofactor.so"),
        deps.parent().unwrap().join("libpam_twofactor.so"),
    ];
    let newest = candidates
        .iter()
        .filter_map(|p| Some((fs::metadata(p).ok()?.modified().ok()?, p)))
        .max_by_key(|(t, _)| *t)
        .map(|(_, p)| p.clone());
    newest.unwrap_or_else(|| {
        panic!("libpam_twofactor.so is not built: run `cargo build -p pam_twofactor`")
    })
}

/// The uid tests run as: the owner their stores and files must have.
pub fn me() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Cheap backup-code hashing for tests; the real cost is measured by the benchmark.
pub const CHEAP_HASH: HashCost = HashCost {
    m_kib: 64,
    t: 1,
    p: 1,
};

/// Enrolls `user` through the backend, without a code (as root's provisioning does), with
/// default TOTP parameters and three backup codes; returns the key and the plaintext codes.
pub fn enroll(backend: &dyn Backend, user: &str, rng: &mut dyn Random) -> (SecretKey, Vec<String>) {
    enroll_with_codes(backend, user, 3, rng)
}

/// As [`enroll`], with `count` backup codes.
pub fn enroll_with_codes(
    backend: &dyn Backend,
    user: &str,
    count: usize,
    rng: &mut dyn Random,
) -> (SecretKey, Vec<String>) {
    let key = SecretKey::generate(rng).unwrap();
    let codes = enroll_key_with_codes(backend, user, key.clone(), count, rng);
    (key, codes)
}

/// As [`enroll`], with a given key; returns the plaintext backup codes.
pub fn enroll_key(
    backend: &dyn Backend,
    user: &str,
    key: SecretKey,
    rng: &mut dyn Random,
) -> Vec<String> {
    enroll_key_with_codes(backend, user, key, 3, rng)
}

fn enroll_key_with_codes(
    backend: &dyn Backend,
    user: &str,
    key: SecretKey,
    count: usize,
    rng: &mut dyn Random,
) -> Vec<String> {
    let config = Config::default();
    let enrollment = Enrollment::with_secret(&config, key, TotpParams::default(), user, "test");
    let settings = SaveSettings {
        window: config.totp.window,
        backup_codes: count,
    };
    let NewCodes(plain) = backend
        .enroll(
            user,
            &enrollment,
            None,
            None,
            Some(Authority::Admin),
            settings,
            rng,
        )
        .unwrap()
        .saved()
        .unwrap();
    plain.iter().map(|c| c.to_string()).collect()
}

/// A private twofactor installation for one test: a root-owned 0700 state directory,
/// a config file naming it, and a PAM service directory for pam_wrapper.
#[derive(Debug)]
pub struct PamFixture {
    dir: tempfile::TempDir,
}

impl PamFixture {
    /// `config` is the TOML after `version = 1`; `[storage]` is added.
    pub fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // sshd's unprivileged child and the test user must be able to traverse it.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let state = dir.path().join("state");
        fs::DirBuilder::new().mode(0o700).create(&state).unwrap();
        let cfg = dir.path().join("config.toml");
        fs::write(
            &cfg,
            format!(
                "version = 1\n{config}\n[storage]\nstate_dir = \"{}\"\n",
                state.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&cfg, fs::Permissions::from_mode(0o644)).unwrap();
        fs::create_dir(dir.path().join("pam.d")).unwrap();
        Self { dir }
    }

    /// The fixture's directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The config file.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// The PAM service directory (PAM_WRAPPER_SERVICE_DIR).
    pub fn services(&self) -> PathBuf {
        self.dir.path().join("pam.d")
    }

    /// Writes PAM service `name`; `{module}` in `stack` becomes the module path and its
    /// `config=` argument.
    pub fn service(&self, name: &str, stack: &str) {
        let module = format!(
            "{} config={}",
            pam_module_so().display(),
            self.config().display()
        );
        fs::write(
            self.services().join(name),
            stack.replace("{module}", &module),
        )
        .unwrap();
    }

    /// The store in the state directory.
    pub fn store(&self) -> Store {
        Store::open(&self.dir.path().join("state")).unwrap()
    }
}

/// pam_wrapper swaps libpam's "/etc/pam.d" for a private directory with a name of the same
/// length, "/tmp/pam.X", so processes running at the same time can pick the same one and
/// one removes it under the other. Tests in one binary therefore take turns.
static PAM_WRAPPER: Mutex<()> = Mutex::new(());

/// This process's turn at pam_wrapper, held while a program that starts PAM under it
/// (pamtester, or an sshd handling a login) runs.
pub fn pam_wrapper_turn() -> MutexGuard<'static, ()> {
    PAM_WRAPPER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts pamtester for `service` and `user` under pam_wrapper with the fixture's PAM
/// service directory, unbuffered so prompts arrive in order. Only one runs at a time in a
/// test process (see the private lock `PAM_WRAPPER`).
pub fn pamtester(services: &Path, service: &str, user: &str, rhost: Option<&str>) -> Session {
    pamtester_with(services, service, user, rhost, &Wrap::default())
}

/// How [`pamtester_with`] runs pamtester beyond the usual.
#[derive(Debug, Default, Clone)]
pub struct Wrap {
    /// A command line pamtester is exec'd through, such as `prlimit --fsize=N --`.
    pub prefix: Vec<String>,
    /// Dispositions the prefix's shell sets to ignored before exec (`XFSZ`): ignored
    /// signals survive exec, as they do through su or a setuid program.
    pub ignore_signals: Vec<String>,
    /// Libraries preloaded after pam_wrapper (libnss_wrapper.so).
    pub preload: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// How many `authenticate` operations pamtester runs on its one PAM handle, as sshd
    /// and sudo retry on one (0 counts as 1). pamtester stops at the first that fails.
    pub authentications: usize,
}

/// [`pamtester`], run as `wrap` says.
pub fn pamtester_with(
    services: &Path,
    service: &str,
    user: &str,
    rhost: Option<&str>,
    wrap: &Wrap,
) -> Session {
    let guard = pam_wrapper_turn();
    let trap = if wrap.ignore_signals.is_empty() {
        "exec \"$@\"".to_string()
    } else {
        format!("trap '' {}; exec \"$@\"", wrap.ignore_signals.join(" "))
    };
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &trap, "sh"]);
    cmd.args(&wrap.prefix);
    cmd.args(["stdbuf", "-o0", "-e0", "pamtester"]);
    if let Some(h) = rhost {
        cmd.args(["-I", &format!("rhost={h}")]);
    }
    let mut preload = vec!["libpam_wrapper.so".to_string()];
    preload.extend(wrap.preload.iter().cloned());
    cmd.envs(wrap.env.iter().map(|(k, v)| (k, v)));
    cmd.args([service, user])
        .args(std::iter::repeat_n(
            "authenticate",
            wrap.authentications.max(1),
        ))
        .env("LD_PRELOAD", preload.join(" "))
        .env("PAM_WRAPPER", "1")
        .env("PAM_WRAPPER_SERVICE_DIR", services)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd
        .spawn()
        .expect("pamtester and libpam-wrapper must be installed (tests/setup)");
    let mut session = Session::start(child);
    session._pam_wrapper = Some(guard);
    // The service files name the fixture's config, which lives beside the service dir.
    session.pam_wrapper_marker = services.parent().map(Path::to_path_buf);
    session
}

/// Removes pam_wrapper's private copies of service files ("/tmp/pam.X") that mention
/// `marker`: a process killed with SIGKILL (a test's sshd) cannot remove its own.
pub fn remove_pam_wrapper_dirs(marker: &Path) {
    let marker = marker.to_string_lossy();
    let Ok(entries) = fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.len() == 5 && name.starts_with("pam.")) {
            continue;
        }
        let dir = entry.path();
        let ours = fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|f| fs::read_to_string(f.path()).is_ok_and(|t| t.contains(marker.as_ref())));
        if ours {
            let _ = fs::remove_dir_all(&dir);
        }
    }
}

/// `tests/pam/plant_auth_info.c` compiled into `dir`: a PAM module that puts a file's
/// content into the PAM environment as `SSH_AUTH_INFO_0` (`auth optional SO file=PATH`).
pub fn plant_auth_info_module(dir: &Path) -> PathBuf {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/pam/plant_auth_info.c");
    let so = dir.join("pam_plant_auth_info.so");
    run(
        "cc",
        &["-shared", "-fPIC", "-o", so.to_str().unwrap(), src, "-lpam"],
    );
    so
}

/// A real NSS source that answers for other names of one account, through nss_wrapper: a
/// passwd file with the canonical entry, and `tests/nss/alias.c` compiled here. `NAME`
/// and `name@corp.example` resolve to the account, with `pw_name` as typed, as SSSD or
/// LDAP can answer.
#[derive(Debug)]
pub struct NssAliases {
    dir: tempfile::TempDir,
    name: String,
    uid: String,
}

impl NssAliases {
    /// Aliases of the existing account `name`.
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/nss/alias.c");
        let so = dir.path().join("libnss_tfalias.so");
        run("cc", &["-shared", "-fPIC", "-o", so.to_str().unwrap(), src]);
        fs::copy("/etc/passwd", dir.path().join("passwd")).unwrap();
        fs::copy("/etc/group", dir.path().join("group")).unwrap();
        let out = Command::new("id").args(["-u", name]).output().unwrap();
        let uid = String::from_utf8(out.stdout).unwrap().trim().to_string();
        Self {
            dir,
            name: name.to_string(),
            uid,
        }
    }

    /// The environment nss_wrapper needs (with `libnss_wrapper.so` preloaded).
    pub fn env(&self) -> Vec<(String, String)> {
        let d = self.dir.path();
        let path = |f: &str| d.join(f).display().to_string();
        vec![
            ("NSS_WRAPPER_PASSWD".into(), path("passwd")),
            ("NSS_WRAPPER_GROUP".into(), path("group")),
            (
                "NSS_WRAPPER_MODULE_SO_PATH".into(),
                path("libnss_tfalias.so"),
            ),
            ("NSS_WRAPPER_MODULE_FN_PREFIX".into(), "tfalias".into()),
            ("TF_ALIAS_NAME".into(), self.name.clone()),
            ("TF_ALIAS_UID".into(), self.uid.clone()),
        ]
    }

    /// pamtester through these aliases.
    pub fn wrap(&self) -> Wrap {
        Wrap {
            preload: vec!["libnss_wrapper.so".into()],
            env: self.env(),
            ..Wrap::default()
        }
    }
}

/// Catches what the module sends to syslog. A command run through [`Syslog::prefix`] gets
/// its own mount namespace whose `/dev` is a copy of the real one, except that `/dev/log`
/// is a socket this test reads, and where journald's socket is hidden, so the module
/// falls back to syslog as on a machine without journald; the system's own log, `/dev`
/// and `/run` are left alone.
#[derive(Debug)]
pub struct Syslog {
    dir: tempfile::TempDir,
    socket: std::os::unix::net::UnixDatagram,
    seen: Mutex<Vec<String>>,
}

/// Builds one private directory in the namespace: `$D` becomes a tmpfs holding each entry
/// of the real `$D` bound back in, except the entry `$E`; then, when `$S` is not empty,
/// the socket `$S` appears at `$D/$P` (inside `$E`). The real entry is never copied,
/// whatever it is (a socket where rsyslog runs without systemd, a symlink into /run
/// where journald does, or nothing): a socket bound in would be a mount point that
/// cannot be removed or replaced. `$W` is a scratch directory.
const PRIVATE_ENTRY: &str = r#"
W=$1; D=$2; E=$3; S=$4; P=$5; shift 5
R=$(mktemp -d "$W/real-dir.XXXXXX")
mount --rbind "$D" "$R"
mount -t tmpfs -o mode=0755 twofactor-test-dir "$D"
for e in "$R"/* "$R"/.[!.]*; do
  [ -e "$e" ] || [ -L "$e" ] || continue
  n=$D/${e##*/}
  if [ "${e##*/}" = "$E" ]; then continue
  elif [ -L "$e" ]; then cp -P "$e" "$n"
  elif [ -d "$e" ]; then mkdir -p "$n"; mount --rbind "$e" "$n"
  else touch "$n"; mount --bind "$e" "$n"; fi
done
if [ -n "$S" ]; then
  mkdir -p "$(dirname "$D/$P")"; touch "$D/$P"; mount --bind "$S" "$D/$P"
fi
umount -l "$R"
rmdir "$R"
exec "$@"
"#;

/// The argv that runs the rest of a command line with `dir`'s entry `entry` replaced by
/// `socket` at `dir/path` (or hidden, when `socket` is `None`).
fn private_entry(
    work: &Path,
    dir: &Path,
    entry: &str,
    socket: Option<&Path>,
    path: &str,
) -> Vec<String> {
    [
        "sh",
        "-euc",
        PRIVATE_ENTRY,
        "sh",
        work.to_str().unwrap(),
        dir.to_str().unwrap(),
        entry,
        socket.map_or("", |s| s.to_str().unwrap()),
        path,
    ]
    .map(String::from)
    .to_vec()
}

/// `unshare` into a private mount namespace, then `steps` one after another.
fn in_namespace(steps: &[Vec<String>]) -> Vec<String> {
    let mut argv: Vec<String> = ["unshare", "--mount", "--propagation", "private"]
        .map(String::from)
        .to_vec();
    for step in steps {
        argv.extend(step.iter().cloned());
    }
    argv
}

impl Syslog {
    /// A socket ready to receive.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = std::os::unix::net::UnixDatagram::bind(dir.path().join("log")).unwrap();
        socket.set_nonblocking(true).unwrap();
        Self {
            dir,
            socket,
            seen: Mutex::new(Vec::new()),
        }
    }

    /// Runs the rest of a command line in the private namespace (needs root).
    pub fn prefix(&self) -> Vec<String> {
        in_namespace(&[
            private_entry(self.dir.path(), Path::new("/run"), "systemd", None, ""),
            self.dev_step(Path::new("/dev")),
        ])
    }

    /// As [`Self::prefix`], with `dev` in place of `/dev` (for testing the namespace).
    pub fn prefix_for(&self, dev: &Path) -> Vec<String> {
        in_namespace(&[self.dev_step(dev)])
    }

    fn dev_step(&self, dev: &Path) -> Vec<String> {
        let socket = self.dir.path().join("log");
        private_entry(self.dir.path(), dev, "log", Some(&socket), "log")
    }

    /// pamtester in the private namespace.
    pub fn wrap(&self) -> Wrap {
        Wrap {
            prefix: self.prefix(),
            ..Wrap::default()
        }
    }

    /// Every line received so far, each with its `<PRI>ident[pid]: ` header.
    pub fn lines(&self) -> Vec<String> {
        let mut seen = self.seen.lock().unwrap();
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = self.socket.recv(&mut buf) {
            let line = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push(line);
        }
        seen.clone()
    }

    /// Waits (up to 10 s) until `count` lines contain `needle`, and returns those lines:
    /// a line can arrive a moment after the client has seen the login end.
    pub fn wait_for(&self, needle: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self.grep(needle);
            if found.len() >= count || Instant::now() > deadline {
                return found;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The lines that contain `needle`.
    pub fn grep(&self, needle: &str) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| l.contains(needle))
            .collect()
    }
}

impl Default for Syslog {
    fn default() -> Self {
        Self::new()
    }
}

/// Catches what the module sends to journald: a command run through
/// [`Journal::prefix`] sees this test's socket at `/run/systemd/journal/socket` in a
/// private mount namespace (and a private `/dev/log` too, so a line that went to syslog
/// instead would be seen there). The real `/run` is left alone.
#[derive(Debug)]
pub struct Journal {
    dir: tempfile::TempDir,
    socket: std::os::unix::net::UnixDatagram,
    /// What reached the private `/dev/log`.
    pub syslog: Syslog,
}

/// One datagram of journald's native protocol, as fields in order.
pub type JournalEntry = Vec<(String, String)>;

impl Journal {
    /// A socket ready to receive.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = std::os::unix::net::UnixDatagram::bind(dir.path().join("socket")).unwrap();
        socket.set_nonblocking(true).unwrap();
        Self {
            dir,
            socket,
            syslog: Syslog::new(),
        }
    }

    /// Runs the rest of a command line in the private namespace (needs root).
    pub fn prefix(&self) -> Vec<String> {
        let socket = self.dir.path().join("socket");
        in_namespace(&[
            private_entry(
                self.dir.path(),
                Path::new("/run"),
                "systemd",
                Some(&socket),
                "systemd/journal/socket",
            ),
            self.syslog.dev_step(Path::new("/dev")),
        ])
    }

    /// pamtester in the private namespace.
    pub fn wrap(&self) -> Wrap {
        Wrap {
            prefix: self.prefix(),
            ..Wrap::default()
        }
    }

    /// Every entry received so far, parsed (`KEY=value` lines, or a key, a 64-bit
    /// little-endian length and that many bytes).
    pub fn entries(&self) -> Vec<JournalEntry> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = self.socket.recv(&mut buf) {
            out.push(parse_journal(&buf[..n]));
        }
        out
    }
}

impl Default for Journal {
    fn default() -> Self {
        Self::new()
    }
}

/// Parses one native-protocol datagram; panics on a malformed one (a failed test).
pub fn parse_journal(mut d: &[u8]) -> JournalEntry {
    let mut out = Vec::new();
    while !d.is_empty() {
        let end = d
            .iter()
            .position(|&b| b == b'\n')
            .expect("a field ends in a newline");
        let line = &d[..end];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            out.push((
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            ));
            d = &d[end + 1..];
        } else {
            let len = u64::from_le_bytes(d[end + 1..end + 9].try_into().unwrap());
            let len = usize::try_from(len).unwrap();
            out.push((
                String::from_utf8_lossy(line).into_owned(),
                String::from_utf8_lossy(&d[end + 9..end + 9 + len]).into_owned(),
            ));
            d = &d[end + 9 + len + 1..];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;
    use std::os::unix::net::UnixDatagram;

    /// The private `/dev` works whatever the real `log` is: a socket (rsyslog without
    /// systemd), a symlink (journald) or nothing (a container). A stand-in dev directory
    /// plays `/dev`; the line sent through the private `log` reaches the test's socket,
    /// and the real directory is left as it was.
    #[test]
    fn the_private_dev_log_takes_a_socket_a_symlink_or_nothing() {
        for kind in ["socket", "symlink", "none"] {
            let dev = tempfile::tempdir().unwrap();
            let d = dev.path();
            fs::write(d.join("null"), "").unwrap();
            fs::create_dir(d.join("pts")).unwrap();
            std::os::unix::fs::symlink("/proc/self/fd", d.join("fd")).unwrap();
            let _real = match kind {
                "socket" => Some(UnixDatagram::bind(d.join("log")).unwrap()),
                "symlink" => {
                    std::os::unix::fs::symlink("/run/systemd/journal/dev-log", d.join("log"))
                        .unwrap();
                    None
                }
                _ => None,
            };
            let log = Syslog::new();
            let line = format!("private-dev-log-{kind}");
            let check = format!(
                "test -S {d}/log && test -f {d}/null && test -d {d}/pts && test -L {d}/fd \
                 && logger -u {d}/log -t twofactor-test {line}",
                d = d.display()
            );
            let mut argv = log.prefix_for(d);
            argv.extend(["sh".into(), "-c".into(), check]);
            let out = Command::new(&argv[0]).args(&argv[1..]).output().unwrap();
            assert!(
                out.status.success(),
                "{kind}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(log.wait_for(&line, 1).len(), 1, "{kind}: {:?}", log.lines());
            let after = fs::symlink_metadata(d.join("log"));
            match kind {
                "socket" => assert!(after.unwrap().file_type().is_socket()),
                "symlink" => assert!(after.unwrap().file_type().is_symlink()),
                _ => assert!(after.is_err(), "{kind}: a log was left behind"),
            }
        }
    }
}
