//! `kill -9` in the middle of state changes never leaves an unparseable or partial state:
//! a writer process is killed at random moments while it changes one user's state
//! through the backend as fast as it can, and every time the state still reads and
//! never goes backwards.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use std::{env, thread};

use twofactor_core::backend::Backend;
use twofactor_core::random::{OsRandom, Random};
use twofactor_core::store::{Store, StoreError};
use twofactor_core::trusted::RemoteHost;
use twofactor_testkit::me;

#[test]
fn kill_9_mid_update_leaves_old_or_new_state() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let store = Store::create(&state, me()).unwrap();
    let mut last = 0;
    let mut total_updates = 0;
    for round in 0..25 {
        let mut child = Command::new(env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_writer",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TWOFACTOR_CRASH_DIR", &state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut r = [0u8; 1];
        OsRandom.fill(&mut r).unwrap();
        thread::sleep(Duration::from_millis(20 + u64::from(r[0]) / 2));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let s = store
            .facts("victim")
            .unwrap_or_else(|e| panic!("round {round}: state unreadable after kill -9: {e}"));
        assert!(
            s.grace_logins_used >= last,
            "round {round}: state went backwards"
        );
        // Each round of the writer is a grace login, then a trust: killed between the
        // two, the trust is one behind, never anything else.
        let trusted = s.trusted_devices.0.len() as u32;
        let n = s.grace_logins_used;
        assert!(
            trusted == n.min(32) || trusted == n.saturating_sub(1).min(32),
            "round {round}: {trusted} trusted hosts after {n} grace logins"
        );
        total_updates += s.grace_logins_used - last;
        last = s.grace_logins_used;
    }
    assert!(
        total_updates > 25,
        "the writer barely ran ({total_updates} updates)"
    );
}

/// The writer killed by the test above.
#[test]
#[ignore = "run as a child process by kill_9_mid_update_leaves_old_or_new_state"]
fn crash_writer() {
    let dir = PathBuf::from(env::var_os("TWOFACTOR_CRASH_DIR").expect("TWOFACTOR_CRASH_DIR"));
    let store = Store::open_owned_by(&dir, me()).unwrap();
    let trust = |n: u32| {
        let host =
            RemoteHost::parse(&format!("10.{}.{}.{}", n / 62_500, n / 250 % 250, n % 250)).unwrap();
        store
            .update("victim", |s| -> Result<(), StoreError> {
                s.trusted_devices
                    .add("sshd", &host, 1, 30, &mut OsRandom)
                    .unwrap();
                Ok(())
            })
            .unwrap();
    };
    // The trust an earlier writer was killed before.
    let s = store.facts("victim").unwrap();
    if (s.trusted_devices.0.len() as u32) < s.grace_logins_used.min(32) {
        trust(s.grace_logins_used);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let left = store
            .count_grace_login("victim", u32::MAX)
            .unwrap()
            .unwrap();
        trust(u32::MAX - left);
    }
}
