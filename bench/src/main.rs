//! pam-bench: pam_twofactor against pam_google_authenticator through real libpam
//! (pam_wrapper), with libfaketime moving the clock so every login spends a fresh step.
//! Prints tables; `BENCHMARKS.md` records a run. Run as root: `bash bench/run`.

#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod ffi;
mod fleet;

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;
use std::{env, thread};

use twofactor_core::auth::{CodeResult, Purpose};
use twofactor_core::backend::Backend;
use twofactor_core::backup_codes::{BackupCodes, HashCost, NewCodes};
use twofactor_core::clock::{Clock, SystemClock};
use twofactor_core::config::Config;
use twofactor_core::random::OsRandom;
use twofactor_core::store::Store;
use twofactor_core::totp::{SecretKey, TotpParams};
use twofactor_pam_client::{Context, ConvFailed, Converse, Style};
use twofactor_testkit::{Accounts, enroll, enroll_key, pam_module_so};
use zeroize::Zeroizing;

const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
const GA_MODULE: &str = "/lib/x86_64-linux-gnu/security/pam_google_authenticator.so";
const N: usize = 2000;

fn main() {
    let args: Vec<String> = env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--inproc") => inproc(
            &args[2],
            &args[3],
            &args[4],
            args[5].parse().expect("count"),
            args[6].parse().expect("start"),
        ),
        Some("--rss") => rss(&args[2]),
        Some("--charge") => charge_cost(),
        Some("--inproc-fleet") => fleet::inproc_child(&args[2]),
        Some("--fleet") => fleet::run(),
        _ => orchestrate(),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Child: `count` pam_authenticate calls, each at a fresh 30 s step (libfaketime), printing
/// "median_us p99_us successes".
fn inproc(service: &str, user: &str, key: &str, count: usize, start: u64) {
    let key = SecretKey::from_base32(key).expect("key");
    let p = TotpParams::default();
    let mut times = Vec::with_capacity(count);
    let mut ok = 0;
    for i in 0..count as u64 {
        ffi::set_env("FAKETIME", &format!("+{}", start + i * 30));
        let code = key.code_at_step(&p, p.step_at(SystemClock.now()));
        let t = Instant::now();
        let accepted = authenticate(service, user, &code);
        times.push(t.elapsed().as_secs_f64() * 1e6);
        ok += usize::from(accepted);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{:.1} {:.1} {ok}",
        percentile(&times, 0.5),
        percentile(&times, 0.99)
    );
}

/// Answers every prompt with one code.
struct Answer<'a>(&'a str);

impl Converse for Answer<'_> {
    fn converse(
        &mut self,
        style: Style,
        _text: &str,
    ) -> Result<Option<Zeroizing<String>>, ConvFailed> {
        Ok(style
            .is_prompt()
            .then(|| Zeroizing::new(self.0.to_string())))
    }
}

/// One login (`pam_start`, `pam_authenticate`, `pam_end`) answered with `code`.
fn authenticate(service: &str, user: &str, code: &str) -> bool {
    Context::start(service, user, Answer(code)).is_ok_and(|mut pam| pam.authenticate(0).is_ok())
}

/// Child: RSS added by loading a module, in kB.
fn rss(module: &str) {
    let vm = || -> u64 {
        let s = fs::read_to_string("/proc/self/status").unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .unwrap_or(0)
    };
    let before = vm();
    let loaded = ffi::dlopen(&CString::new(module).unwrap_or_default());
    let after = vm();
    println!("{} {loaded}", after.saturating_sub(before));
}

struct Setup {
    dir: PathBuf,
    key: String,
}

fn write(path: &Path, text: &str, mode: u32) {
    fs::write(path, text).expect("write");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A fixture with services "tf" (pam_twofactor) and "ga" (pam_google_authenticator), the
/// same secret for `user` in both, window ±1, replay protection on, no rate limit.
fn setup(user: &str, state_dir: Option<&Path>) -> Setup {
    let dir = tempfile::Builder::new()
        .prefix("tfbench")
        .tempdir()
        .expect("tempdir")
        .keep();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    let state = state_dir.map_or_else(|| dir.join("state"), Path::to_path_buf);
    let store = Store::create(&state, 0).expect("state dir");
    let key = SecretKey::generate(&mut OsRandom).expect("random");
    let b32 = key.to_base32().to_string();
    let mut rng = OsRandom;
    enroll_key(&store, user, key.clone(), &mut rng);
    write(
        &dir.join("config.toml"),
        &format!(
            "version = 1\n[enforce]\nall_users = true\n[totp]\nwindow = 1\n[lockout]\nmax_failures = 1000\n[storage]\nstate_dir = \"{}\"\n",
            state.display()
        ),
        0o644,
    );
    write(
        &dir.join("ga_secret"),
        &format!("{b32}\n\" WINDOW_SIZE 3\n\" DISALLOW_REUSE\n\" TOTP_AUTH\n"),
        0o600,
    );
    fs::create_dir_all(dir.join("pam.d")).expect("pam.d");
    write(
        &dir.join("pam.d/tf"),
        &format!(
            "auth required {} config={}\n",
            pam_module_so().display(),
            dir.join("config.toml").display()
        ),
        0o644,
    );
    write(
        &dir.join("pam.d/ga"),
        &format!(
            "auth required {GA_MODULE} secret={} user=root\n",
            dir.join("ga_secret").display()
        ),
        0o644,
    );
    Setup { dir, key: b32 }
}

fn child_env(cmd: &mut Command, s: &Setup) {
    cmd.env("LD_PRELOAD", format!("libpam_wrapper.so {FAKETIME_LIB}"))
        .env("PAM_WRAPPER", "1")
        .env("PAM_WRAPPER_SERVICE_DIR", s.dir.join("pam.d"))
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME", "+0");
}

fn run_inproc(s: &Setup, service: &str, user: &str, count: usize, start: u64) -> (f64, f64, usize) {
    let mut cmd = Command::new(env::current_exe().expect("exe"));
    cmd.args([
        "--inproc",
        service,
        user,
        &s.key,
        &count.to_string(),
        &start.to_string(),
    ]);
    child_env(&mut cmd, s);
    child_result(&cmd.output().expect("child"))
}

/// What a measuring child printed: "median_us p99_us successes".
fn child_result(out: &std::process::Output) -> (f64, f64, usize) {
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<&str> = text.split_whitespace().collect();
    assert!(
        v.len() == 3,
        "child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        v[0].parse().unwrap_or(0.0),
        v[1].parse().unwrap_or(0.0),
        v[2].parse().unwrap_or(0),
    )
}

fn pamtester(
    s: &Setup,
    service: &str,
    user: &str,
    code: &str,
    faketime: Option<u64>,
) -> (bool, f64) {
    let mut cmd = Command::new("pamtester");
    cmd.args([service, user, "authenticate"]);
    child_env(&mut cmd, s);
    if let Some(off) = faketime {
        cmd.env("FAKETIME", format!("+{off}"));
    } else {
        cmd.env("LD_PRELOAD", "libpam_wrapper.so");
    }
    login_with(cmd, code)
}

/// Runs a prepared pamtester `cmd`, answering with `code`; whether it was accepted, and
/// its wall time in ms.
fn login_with(mut cmd: Command, code: &str) -> (bool, f64) {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t = Instant::now();
    let mut child = cmd.spawn().expect("pamtester");
    use std::io::Write;
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{code}\n").as_bytes());
    let out = child.wait_with_output().expect("pamtester");
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let said = String::from_utf8_lossy(&out.stderr) + String::from_utf8_lossy(&out.stdout);
    (said.contains("successfully authenticated"), ms)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

fn code_at(key: &str, at: u64) -> String {
    let k = SecretKey::from_base32(key).expect("key");
    let p = TotpParams::default();
    k.code_at_step(&p, p.step_at(at)).to_string()
}

fn orchestrate() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "run as root: bash bench/run"
    );
    let mut accounts = Accounts::default();
    let user = accounts.login_user("tfbench", Path::new("/tmp/tfbench-home"), "Bench-Pass-1");
    println!("pam-bench: pam_twofactor vs pam_google_authenticator, real libpam under pam_wrapper");
    println!(
        "each login is at a fresh 30 s step (libfaketime moves the clock), same secret, window ±1,"
    );
    println!("replay protection on (DISALLOW_REUSE for google-authenticator), no rate limit.\n");

    // In-process: N pam_authenticate calls per module in one process each.
    let s = setup(&user, None);
    let (tf_med, tf_p99, tf_ok) = run_inproc(&s, "tf", &user, N, 3600);
    let (ga_med, ga_p99, ga_ok) = run_inproc(&s, "ga", &user, N, 3600);
    println!("In-process pam_authenticate, {N} logins each");
    println!("| module | median µs | p99 µs | accepted |");
    println!("|---|---:|---:|---:|");
    println!("| pam_twofactor | {tf_med:.1} | {tf_p99:.1} | {tf_ok}/{N} |");
    println!("| pam_google_authenticator | {ga_med:.1} | {ga_p99:.1} | {ga_ok}/{N} |");
    println!(
        "| ratio twofactor / google-authenticator | {:.2} | {:.2} | |\n",
        tf_med / ga_med,
        tf_p99 / ga_p99
    );

    // Whole process: pamtester per login.
    let runs = 60;
    let base = 86_400 * 10;
    let now = SystemClock.now();
    let mut tf_ms = Vec::new();
    let mut ga_ms = Vec::new();
    let (mut tf_good, mut ga_good) = (0, 0);
    for i in 0..runs {
        let off = base + i * 30;
        let (ok, ms) = pamtester(&s, "tf", &user, &code_at(&s.key, now + off), Some(off));
        tf_good += usize::from(ok);
        tf_ms.push(ms);
        let (ok, ms) = pamtester(&s, "ga", &user, &code_at(&s.key, now + off), Some(off));
        ga_good += usize::from(ok);
        ga_ms.push(ms);
    }
    let (tfm, gam) = (median(tf_ms), median(ga_ms));
    println!("Whole process (pamtester), {runs} logins each");
    println!("| module | median ms | accepted |");
    println!("|---|---:|---:|");
    println!("| pam_twofactor | {tfm:.2} | {tf_good}/{runs} |");
    println!("| pam_google_authenticator | {gam:.2} | {ga_good}/{runs} |");
    println!("| ratio | {:.2} | |\n", tfm / gam);

    // Scale: enrolled users in the state directory.
    println!("Scale: pam_twofactor median with many enrolled users in the state dir (300 logins)");
    println!("| users in state dir | median µs | p99 µs |");
    println!("|---:|---:|---:|");
    for users in [100usize, 10_000, 100_000] {
        let dir = tempfile::Builder::new()
            .prefix("tfscale")
            .tempdir()
            .expect("tmp")
            .keep();
        let state = dir.join("state");
        let s2 = setup(&user, Some(&state));
        let template = fs::read_to_string(state.join(format!("{user}.json"))).expect("template");
        let needle = format!("\"user\": \"{user}\"");
        for i in 0..users.saturating_sub(1) {
            let name = format!("filler{i:06}");
            write(
                &state.join(format!("{name}.json")),
                &template.replace(&needle, &format!("\"user\": \"{name}\"")),
                0o600,
            );
        }
        let (m, p99, ok) = run_inproc(&s2, "tf", &user, 300, 7200);
        assert_eq!(ok, 300, "scale run refused logins");
        println!("| {users} | {m:.1} | {p99:.1} |");
        let _ = fs::remove_dir_all(&dir);
        let _ = fs::remove_dir_all(&s2.dir);
    }
    println!();

    concurrency(&user);
    fleet::run();
    footprint();
    let _ = fs::remove_dir_all(&s.dir);
}

fn concurrency(user: &str) {
    let s = setup(user, None);
    let store = Store::open(&s.dir.join("state")).expect("store");
    // The module refuses names no account has, so each login is a real account.
    let mut accounts = Accounts::default();
    for name in (0..32)
        .map(|i| format!("tfconc{i:02}"))
        .chain(["tfconcbackup".into(), "tfconcsame".into()])
    {
        accounts.user(&name, "users", &[]);
    }
    // 32 distinct users at once.
    let users: Vec<(String, String)> = (0..32)
        .map(|i| {
            let name = format!("tfconc{i:02}");
            let (key, _) = enroll(&store, &name, &mut OsRandom);
            (name, key.to_base32().to_string())
        })
        .collect();
    let now = SystemClock.now();
    let t = Instant::now();
    let logins = users
        .iter()
        .map(|(u, k)| (u.clone(), code_at(k, now)))
        .collect();
    let ok = parallel_logins(&s.dir, logins);
    let secs = t.elapsed().as_secs_f64();
    println!("Concurrency (pamtester processes started together)");
    println!("| case | result |");
    println!("|---|---|");
    println!(
        "| 32 logins of distinct users | {ok}/32 accepted, {} errors, {:.0} logins/s |",
        32 - ok,
        32.0 / secs
    );

    // 20 logins of one user, each with a different backup code.
    let (codes, NewCodes(plain)) =
        BackupCodes::generate(20, HashCost::DEFAULT, &mut OsRandom).expect("codes");
    enroll(&store, "tfconcbackup", &mut OsRandom);
    store
        .update(
            "tfconcbackup",
            |st| -> Result<(), twofactor_core::store::StoreError> {
                st.backup_codes = Some(codes);
                Ok(())
            },
        )
        .expect("update");
    let ok = parallel_logins(
        &s.dir,
        plain
            .iter()
            .map(|c| ("tfconcbackup".to_string(), c.to_string()))
            .collect(),
    );
    let left = store
        .load("tfconcbackup")
        .expect("load")
        .backup_codes_left();
    println!(
        "| 20 logins of one user, 20 different backup codes | {ok}/20 accepted, {left} codes left |"
    );

    // 20 logins of one user with the same TOTP code.
    let (key, _) = enroll(&store, "tfconcsame", &mut OsRandom);
    let code = code_at(&key.to_base32(), SystemClock.now());
    let ok = parallel_logins(
        &s.dir,
        (0..20)
            .map(|_| ("tfconcsame".to_string(), code.clone()))
            .collect(),
    );
    println!("| 20 logins of one user, the same TOTP code | {ok}/20 accepted |\n");
    let _ = fs::remove_dir_all(&s.dir);
}

/// Starts one pamtester per `(user, code)` at once; returns how many were accepted.
fn parallel_logins(dir: &Path, logins: Vec<(String, String)>) -> usize {
    let handles: Vec<_> = logins
        .into_iter()
        .map(|(user, code)| {
            let s = Setup {
                dir: dir.to_path_buf(),
                key: String::new(),
            };
            thread::spawn(move || pamtester(&s, "tf", &user, &code, None).0)
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap_or(false))
        .filter(|b| *b)
        .count()
}

fn footprint() {
    let ours = pam_module_so();
    let size = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let rss = |p: &Path| {
        let out = Command::new(env::current_exe().expect("exe"))
            .args(["--rss", &p.display().to_string()])
            .output()
            .expect("child");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("?")
            .to_string()
    };
    println!("Footprint");
    println!("| module | file size (stripped) | RSS added by dlopen |");
    println!("|---|---:|---:|");
    println!(
        "| pam_twofactor | {} KiB | {} kB |",
        size(&ours) / 1024,
        rss(&ours)
    );
    println!(
        "| pam_google_authenticator | {} KiB | {} kB |",
        size(Path::new(GA_MODULE)) / 1024,
        rss(Path::new(GA_MODULE))
    );
}

/// What charging before checking costs, on the store alone (no PAM): a right code writes
/// the state twice (the charge, then the success) where one locked write did before; a
/// wrong code writes once, as before. The state directory is under /var/tmp, on the root
/// filesystem like /var/lib/twofactor.
fn charge_cost() {
    const RUNS: usize = 1000;
    let dir = tempfile::tempdir_in("/var/tmp").expect("temp dir");
    let start = 1_900_000_000;
    let clock = std::sync::Arc::new(twofactor_core::clock::ManualClock::new(start));
    let store = Store::create(&dir.path().join("state"), 0)
        .expect("state dir")
        .with_clock(clock.clone());
    let (key, _) = enroll(&store, "bench", &mut OsRandom);
    let p = TotpParams::default();
    let config = Config::default();
    let time = |f: &mut dyn FnMut(u64)| {
        let mut v: Vec<f64> = (0..RUNS as u64)
            .map(|i| {
                let t = Instant::now();
                f(i);
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        v.sort_by(f64::total_cmp);
        (percentile(&v, 0.5), percentile(&v, 0.99))
    };
    let one_write = time(&mut |i| {
        store
            .update(
                "bench",
                |s| -> Result<(), twofactor_core::store::StoreError> {
                    s.grace_logins_used = u32::try_from(i % 2).unwrap_or(0);
                    Ok(())
                },
            )
            .expect("write");
    });
    let right = time(&mut |i| {
        let now = start + i * 30;
        clock.set(now);
        let code = key.code_at_step(&p, p.step_at(now)).to_string();
        let r = store.verify("bench", &code, Purpose::Login, &config);
        assert!(
            matches!(r, Ok(ref c) if c.result == CodeResult::Totp),
            "{r:?}"
        );
    });
    let mut lenient = config.clone();
    lenient.lockout.max_failures = 1000;
    let wrong = time(&mut |i| {
        clock.set(start + (RUNS as u64 + i) * 30);
        if i % 500 == 0 {
            store
                .update(
                    "bench",
                    |s| -> Result<(), twofactor_core::store::StoreError> {
                        s.lockout.record_success();
                        Ok(())
                    },
                )
                .expect("reset");
        }
        let r = store.verify("bench", "000000", Purpose::Login, &lenient);
        assert!(
            matches!(r, Ok(ref c) if matches!(c.result, CodeResult::Wrong { .. })),
            "{r:?}"
        );
    });
    println!("Charge before check: {RUNS} runs each, state on /var/tmp");
    println!("| case | median µs | p99 µs |");
    println!("|---|---:|---:|");
    println!(
        "| one locked state write (a right code before) | {:.1} | {:.1} |",
        one_write.0, one_write.1
    );
    println!(
        "| right code: charge, check, success write | {:.1} | {:.1} |",
        right.0, right.1
    );
    println!(
        "| wrong code: charge, check | {:.1} | {:.1} |",
        wrong.0, wrong.1
    );
    println!(
        "| ratio right code / one write | {:.2} | {:.2} |",
        right.0 / one_write.0,
        right.1 / one_write.1
    );
}
