//! Concurrent logins racing for one backup code or one TOTP step: exactly one may win,
//! whether they race as threads or as separate processes (each with its own flock).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use std::{env, fs, thread};

use twofactor_core::auth::{CodeResult, verify_code};
use twofactor_core::backup_codes::{BackupCodes, HashCost, NewCodes};
use twofactor_core::clock::ManualClock;
use twofactor_core::config::Config;
use twofactor_core::random::OsRandom;
use twofactor_core::store::{Authenticator, Store, StoreError, UserState};
use twofactor_core::totp::{SecretKey, TotpParams};
use twofactor_testkit::me;

const NOW: u64 = 1_900_000_000;
const RACERS: usize = 8;

/// A store with one enrolled user holding real-cost backup codes; returns the current
/// TOTP code and one backup code.
fn enrolled_store(dir: &Path, user: &str) -> (Store, String, String) {
    let store = Store::create(dir, me()).unwrap();
    let key = SecretKey::generate(&mut OsRandom).unwrap();
    let params = TotpParams::default();
    let code = key.code_at_step(&params, params.step_at(NOW)).to_string();
    let (codes, NewCodes(plain)) =
        BackupCodes::generate(3, HashCost::DEFAULT, &mut OsRandom).unwrap();
    let state = UserState {
        authenticator: Some(Authenticator {
            secret: key,
            params,
            enabled: true,
            enrolled_at: 0,
            last_step: None,
            window: None,
        }),
        backup_codes: Some(codes),
        ..UserState::default()
    };
    store
        .update(user, |s| -> Result<(), StoreError> {
            *s = state;
            Ok(())
        })
        .unwrap();
    (store, code, plain[1].to_string())
}

/// Lockout is raised out of reach so every loser reports why it lost.
fn config() -> Config {
    let mut c = Config::default();
    c.lockout.max_failures = 1000;
    c
}

fn race_threads(store: &Store, user: &str, input: &str) -> Vec<CodeResult> {
    let barrier = Arc::new(Barrier::new(RACERS));
    thread::scope(|s| {
        let handles: Vec<_> = (0..RACERS)
            .map(|_| {
                let barrier = Arc::clone(&barrier);
                s.spawn(move || {
                    barrier.wait();
                    verify_code(store, user, input, &config(), &ManualClock::new(NOW)).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn wins(results: &[CodeResult]) -> usize {
    results.iter().filter(|r| r.is_success()).count()
}

#[test]
fn threads_racing_for_one_totp_step_get_one_success() {
    let dir = tempfile::tempdir().unwrap();
    let (store, code, _) = enrolled_store(&dir.path().join("s"), "racer");
    let results = race_threads(&store, "racer", &code);
    assert_eq!(wins(&results), 1, "{results:?}");
    let replays = results
        .iter()
        .filter(|r| matches!(r, CodeResult::Replayed { .. }))
        .count();
    assert_eq!(replays, RACERS - 1, "{results:?}");
}

#[test]
fn threads_racing_for_one_backup_code_get_one_success() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, backup) = enrolled_store(&dir.path().join("s"), "racer");
    let results = race_threads(&store, "racer", &backup);
    assert_eq!(wins(&results), 1, "{results:?}");
    assert!(results.contains(&CodeResult::BackupCode { left: 2 }));
    assert_eq!(store.load("racer").unwrap().backup_codes_left(), 2);
}

fn race_processes(dir: &Path, input: &str) -> Vec<String> {
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
                .env("TWOFACTOR_RACE_DIR", dir)
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
    let state = dir.path().join("s");
    let (_store, _, backup) = enrolled_store(&state, "racer");
    let results = race_processes(dir.path(), &backup);
    let won: Vec<_> = results
        .iter()
        .filter(|r| r.starts_with("BackupCode"))
        .collect();
    assert_eq!(won.len(), 1, "{results:?}");
}

#[test]
fn processes_racing_for_one_totp_step_get_one_success() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, code, _) = enrolled_store(&dir.path().join("s"), "racer");
    let results = race_processes(dir.path(), &code);
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
    let dir = PathBuf::from(env::var_os("TWOFACTOR_RACE_DIR").expect("TWOFACTOR_RACE_DIR"));
    let input = env::var("TWOFACTOR_RACE_INPUT").expect("TWOFACTOR_RACE_INPUT");
    let store = Store::open_owned_by(&dir.join("s"), me()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.join("go").exists() {
        assert!(Instant::now() < deadline, "never told to go");
        thread::sleep(Duration::from_millis(1));
    }
    let result = verify_code(&store, "racer", &input, &config(), &ManualClock::new(NOW)).unwrap();
    println!("RESULT={result:?}");
}
