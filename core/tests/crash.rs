//! `kill -9` in the middle of state updates never leaves an unparseable or partial file:
//! a writer process is killed at random moments while it rewrites one user's state as
//! fast as it can, and every time the file still parses and never goes backwards.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use std::{env, thread};

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
            .load("victim")
            .unwrap_or_else(|e| panic!("round {round}: state unreadable after kill -9: {e}"));
        assert!(
            s.grace_logins_used >= last,
            "round {round}: state went backwards"
        );
        assert_eq!(
            s.trusted_devices.0.len() as u32,
            s.grace_logins_used.min(32),
            "round {round}: a partial update"
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
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        store
            .update("victim", |s| -> Result<(), StoreError> {
                // Two fields change together: a torn write would show them disagreeing.
                s.grace_logins_used += 1;
                let n = s.grace_logins_used;
                let host = RemoteHost::parse(&format!("10.0.{}.{}", n / 250, n % 250)).unwrap();
                s.trusted_devices
                    .add("sshd", &host, 1, 30, &mut OsRandom)
                    .unwrap();
                Ok(())
            })
            .unwrap();
    }
}
