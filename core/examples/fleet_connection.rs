//! Measures the fleet backend's two ways to serve a login (routing facts before the
//! prompt, then the verify): one connection for the conversation, or one per call.
//! Starts a throwaway PostgreSQL with TLS (root): `cargo run --release -p twofactor-core
//! --example fleet_connection [ROUNDS]`. Prints the median and p99 of each.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a measuring tool, not product code

use std::time::{Duration, Instant};

use twofactor_core::auth::Purpose;
use twofactor_core::backend::Backend;
use twofactor_core::config::Config;
use twofactor_core::random::OsRandom;
use twofactor_testkit::postgres::{ADMIN, Cluster, HOSTS};

fn summary(name: &str, mut times: Vec<Duration>) {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    println!(
        "{name:<44} median {:>7.2} ms   p99 {:>7.2} ms   ({} logins)",
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        times.len()
    );
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().unwrap())
        .unwrap_or(200);
    let cluster = Cluster::start();
    let user = "bench";
    twofactor_testkit::enroll(&cluster.backend(ADMIN), user, &mut OsRandom);
    let config = Config::default();
    // A wrong code: the whole verify transaction runs, and the user never locks because
    // each round's failure is cleared by the next admin unlock below.
    let admin = cluster.backend(ADMIN);
    let mut one = Vec::new();
    let mut per_call = Vec::new();
    let mut facts_open = Vec::new();
    let mut verify_open = Vec::new();
    let open = cluster.backend(HOSTS[1]);
    open.facts(user).unwrap();
    for _ in 0..rounds {
        let t = Instant::now();
        let h = cluster.backend(HOSTS[0]);
        h.facts(user).unwrap();
        h.verify(user, "000000", Purpose::Login, &config).unwrap();
        drop(h);
        one.push(t.elapsed());

        let t = Instant::now();
        cluster.backend(HOSTS[0]).facts(user).unwrap();
        cluster
            .backend(HOSTS[0])
            .verify(user, "000000", Purpose::Login, &config)
            .unwrap();
        per_call.push(t.elapsed());
        let t = Instant::now();
        open.facts(user).unwrap();
        facts_open.push(t.elapsed());
        let t = Instant::now();
        open.verify(user, "000000", Purpose::Login, &config)
            .unwrap();
        verify_open.push(t.elapsed());
        admin.unlock(user).unwrap();
    }
    summary("one connection per login (facts + verify)", one);
    summary("one connection per call (facts, verify)", per_call);
    summary("facts on an open connection", facts_open);
    summary("verify on an open connection", verify_open);
}
