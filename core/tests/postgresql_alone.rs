//! The fleet backend in situations that need the cluster to itself: no thread started in
//! the calling process, a server certificate for another name, and an outage. Needs root.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::fs;

use twofactor_core::auth::{CodeResult, Purpose};
use twofactor_core::backend::postgresql::{Postgresql, Role};
use twofactor_core::backend::{Backend, BackendError};
use twofactor_core::random::OsRandom;
use twofactor_core::totp::{SecretKey, TotpParams};
use twofactor_testkit::conformance::{now, race_config};
use twofactor_testkit::enroll_with_codes;
use twofactor_testkit::postgres::{ADMIN, Cluster, HOSTS};

fn code(key: &SecretKey) -> String {
    let p = TotpParams::default();
    key.code_at_step(&p, p.step_at(now())).to_string()
}

#[test]
fn threads_names_and_an_outage() {
    let c = Cluster::start();
    let (key, _) = enroll_with_codes(&c.backend(ADMIN), "solo", 2, &mut OsRandom);

    // 1. No thread: tokio keeps a blocking-pool thread alive for seconds after use, so a
    // name lookup or a worker started for the login would still be counted here.
    let threads = || fs::read_dir("/proc/self/task").unwrap().count();
    let before = threads();
    let b = c.backend(HOSTS[0]);
    b.facts("solo").unwrap();
    assert_eq!(
        b.verify("solo", &code(&key), Purpose::Login, &race_config())
            .unwrap()
            .result,
        CodeResult::Totp
    );
    let during = threads();
    drop(b);
    println!("threads: {before} before a login, {during} during it");
    assert_eq!(during, before);
    // A server named, not numbered: resolved (from /etc/hosts) on the login's own
    // runtime, with its deadline, and still no thread.
    let by_name = Postgresql::new(
        c.settings_for(HOSTS[0], "ca", "localhost", c.port),
        Role::Host,
        0,
    );
    assert!(by_name.facts("solo").unwrap().is_enrolled());
    let named = threads();
    drop(by_name);
    println!("threads: {named} during a login to a server by name");
    assert_eq!(named, before);

    // 2. A server certificate from the right CA for another name is refused.
    c.serve_certificate("wrong-name");
    let r = c.backend(HOSTS[0]).facts("solo");
    c.serve_certificate("server");
    match r {
        Err(e @ BackendError::Unreachable { .. }) => {
            let m = e.to_string();
            assert!(m.contains("certificate verify failed"), "{m}")
        }
        other => panic!("connected to a server named otherwise: {other:?}"),
    }

    // 3. The server goes away: a login fails closed; after a restart nothing is lost.
    c.pg_ctl("stop");
    let r = c
        .backend(HOSTS[0])
        .verify("solo", &code(&key), Purpose::Login, &race_config());
    c.pg_ctl("start");
    match r {
        Err(e @ BackendError::Unreachable { .. }) => {
            let m = e.to_string();
            assert!(
                m.starts_with("the two-factor database cannot be reached"),
                "{m}"
            );
        }
        other => panic!("{other:?}"),
    }
    let facts = c.backend(HOSTS[1]).facts("solo").unwrap();
    assert!(facts.is_enrolled());
    assert_eq!(facts.backup_codes_left, 2);
}
