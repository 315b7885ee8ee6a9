//! Concurrent logins racing for one backup code, one TOTP step, the last grace login or
//! an enrollment: exactly one may win, whether they race as threads or as separate
//! processes. The scenarios are testkit's backend conformance suite, run here against
//! the file store; processes open it from a config file, as the module does.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use std::{env, fs, thread};

use twofactor_core::auth::Purpose;
use twofactor_core::backend::{self, Backend};
use twofactor_core::config::Config;
use twofactor_core::store::Store;
use twofactor_testkit::behaviour;
use twofactor_testkit::conformance::{self, RACERS, enroll_for_race, race_config};
use twofactor_testkit::me;

/// A file store in `dir`, and a config naming it (for the child processes).
fn file_backend(dir: &Path) -> PathBuf {
    let state = dir.join("s");
    Store::create(&state, me()).unwrap();
    let path = dir.join("config.toml");
    fs::write(
        &path,
        format!(
            "version = 1\n[lockout]\nmax_failures = 1000\n[storage]\nbackend = \"files\"\nstate_dir = \"{}\"\n",
            state.display()
        ),
    )
    .unwrap();
    path
}

fn open(config: &Path) -> Box<dyn Backend> {
    backend::open(&Config::load(config, me()).unwrap(), me()).unwrap()
}

/// The backend's behaviour table (testkit's `behaviour`), on the file store.
#[test]
fn the_behaviour_table_passes_on_the_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let config = file_backend(dir.path());
    let open = || open(&config);
    behaviour::check(
        "file",
        &behaviour::Stores {
            admin: &open,
            host: &open,
        },
    );
}

#[test]
fn threads_racing_for_one_totp_step_get_one_success() {
    let dir = tempfile::tempdir().unwrap();
    let config = file_backend(dir.path());
    conformance::one_totp_step_is_accepted_once(&|| open(&config));
}

#[test]
fn threads_racing_for_one_backup_code_get_one_success() {
    let dir = tempfile::tempdir().unwrap();
    let config = file_backend(dir.path());
    conformance::one_backup_code_is_spent_once(&|| open(&config));
}

#[test]
fn threads_racing_for_the_last_grace_login_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = file_backend(dir.path());
    conformance::the_last_grace_login_goes_once(&|| open(&config));
}

#[test]
fn a_replay_is_refused_and_not_counted() {
    let dir = tempfile::tempdir().unwrap();
    let config = file_backend(dir.path());
    conformance::a_replay_is_refused_and_not_counted(&|| open(&config));
}

#[test]
fn a_turned_off_authenticator_is_replaced_at_login() {
    let dir = tempfile::tempdir().unwrap();
    let config = file_backend(dir.path());
    conformance::a_turned_off_authenticator_is_replaced_at_login(&|| open(&config), &|| {
        open(&config)
    });
}

#[test]
fn threads_racing_to_enroll_save_one_authenticator() {
    let dir = tempfile::tempdir().unwrap();
    let config = file_backend(dir.path());
    conformance::one_of_racing_enrollments_is_saved(&|| open(&config));
}

fn race_processes(dir: &Path, config: &Path, input: &str) -> Vec<String> {
    let go = dir.join("go");
    let children: Vec<_> = (0..RACERS)
        .map(|_| {
            Command::new(env::current_exe().unwrap())
                .args([
                    "--exact",
                    "race_child",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("TWOFACTOR_RACE_GO", &go)
                .env("TWOFACTOR_RACE_CONFIG", config)
                .env("TWOFACTOR_RACE_INPUT", input)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    fs::write(&go, b"").unwrap();
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "child failed");
            let text = String::from_utf8(out.stdout).unwrap();
            // libtest prints "test race_child ... " without a newline before the output.
            text.lines()
                .find_map(|l| l.split_once("RESULT=").map(|(_, r)| r.trim().to_string()))
                .expect("child printed no RESULT")
        })
        .collect()
}

#[test]
fn processes_racing_for_one_backup_code_get_one_success() {
    let dir = tempfile::tempdir().unwrap();
    let config = file_backend(dir.path());
    let (_, backup) = enroll_for_race(&*open(&config), "racer");
    let results = race_processes(dir.path(), &config, &backup);
    let won: Vec<_> = results
        .iter()
        .filter(|r| r.starts_with("BackupCode"))
        .collect();
    assert_eq!(won.len(), 1, "{results:?}");
}

#[test]
fn processes_racing_for_one_totp_step_get_one_success() {
    let dir = tempfile::tempdir().unwrap();
    let config = file_backend(dir.path());
    let (code, _) = enroll_for_race(&*open(&config), "racer");
    let results = race_processes(dir.path(), &config, &code);
    assert_eq!(
        results.iter().filter(|r| *r == "Totp").count(),
        1,
        "{results:?}"
    );
    assert_eq!(
        results.iter().filter(|r| r.starts_with("Replayed")).count(),
        RACERS - 1,
        "{results:?}"
    );
}

/// One racing login, run as a separate process by the tests above.
#[test]
#[ignore = "run as a child process by the processes_racing_* tests"]
fn race_child() {
    let go = PathBuf::from(env::var_os("TWOFACTOR_RACE_GO").expect("TWOFACTOR_RACE_GO"));
    let config =
        PathBuf::from(env::var_os("TWOFACTOR_RACE_CONFIG").expect("TWOFACTOR_RACE_CONFIG"));
    let input = env::var("TWOFACTOR_RACE_INPUT").expect("TWOFACTOR_RACE_INPUT");
    let backend = open(&config);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !go.exists() {
        assert!(Instant::now() < deadline, "never told to go");
        thread::sleep(Duration::from_millis(1));
    }
    let result = backend
        .verify("racer", &input, Purpose::Login, &race_config())
        .unwrap()
        .result;
    println!("RESULT={result:?}");
}
