//! Prints what checking one backup code costs at login: one argon2id hash at the
//! default cost, plus constant-time comparisons against every stored hash.
//!
//! Run: `cargo bench -p twofactor-core --bench backup_code_cost`

use std::time::Instant;

use twofactor_core::backup_codes::{BackupCodes, HashCost, NewCodes};
use twofactor_core::random::OsRandom;

fn main() {
    let cost = HashCost::DEFAULT;
    let (stored, NewCodes(codes)) =
        BackupCodes::generate(10, cost, &mut OsRandom).expect("generate");
    let rounds = 30;
    let mut wrong = Vec::with_capacity(rounds);
    let mut right = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let mut copy = stored.clone();
        let t = Instant::now();
        assert!(!copy.try_spend("zzzzz-zzzzz").expect("hash"));
        wrong.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        assert!(copy.try_spend(&codes[i % codes.len()]).expect("hash"));
        right.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let report = |name: &str, v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let median = v[v.len() / 2];
        let max = v[v.len() - 1];
        println!(
            "{name:<28} median {median:6.1} ms   max {max:6.1} ms   ({} runs)",
            v.len()
        );
    };
    println!(
        "argon2id m={} KiB t={} p={}, 10 stored codes",
        cost.m_kib, cost.t, cost.p
    );
    report("check, wrong code", &mut wrong);
    report("check, correct code", &mut right);
    let t = Instant::now();
    BackupCodes::generate(10, cost, &mut OsRandom).expect("generate");
    println!(
        "{:<28} {:6.1} ms",
        "generate 10 codes",
        t.elapsed().as_secs_f64() * 1000.0
    );
}
