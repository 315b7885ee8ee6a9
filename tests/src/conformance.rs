//! What every storage backend must do under concurrency, written once against the
//! [`Backend`] trait: the file store's tests run these, and so must any other backend's.
//!
//! Each scenario races [`RACERS`] threads, each with its own handle from `open` (as
//! separate logins would have), and checks that exactly one wins.

use std::sync::Barrier;
use std::thread;

use twofactor_core::auth::{CodeResult, Purpose};
use twofactor_core::backend::{Authority, Backend, BackendError, Enrolled};
use twofactor_core::backup_codes::NewCodes;
use twofactor_core::clock::{Clock, SystemClock};
use twofactor_core::config::Config;
use twofactor_core::enroll::{Enrollment, SaveSettings};
use twofactor_core::random::OsRandom;
use twofactor_core::totp::{SecretKey, TotpParams};

/// Concurrent callers in each race.
pub const RACERS: usize = 8;
/// The time the races happen at: the real clock, since a database backend checks codes
/// on its own clock and takes no time from its callers.
pub fn now() -> u64 {
    SystemClock.now()
}

/// Opens a new handle on the backend under test.
pub type Open<'a> = &'a (dyn Fn() -> Box<dyn Backend> + Sync);

/// The config the races run under: lockout out of reach, so every loser says why it lost.
pub fn race_config() -> Config {
    let mut c = Config::default();
    c.lockout.max_failures = 1000;
    c
}

/// Enrolls `user` with real-cost backup codes (so a race has time to overlap); returns
/// the TOTP code at [`now`] and one backup code.
pub fn enroll_for_race(backend: &dyn Backend, user: &str) -> (String, String) {
    let key = SecretKey::generate(&mut OsRandom).unwrap();
    let params = TotpParams::default();
    let code = key.code_at_step(&params, params.step_at(now())).to_string();
    let e = Enrollment::with_secret(&Config::default(), key, params, user, "race");
    let settings = SaveSettings {
        window: 1,
        backup_codes: 3,
    };
    let NewCodes(plain) = backend
        .enroll(
            user,
            &e,
            None,
            None,
            Some(Authority::Admin),
            settings,
            &mut OsRandom,
        )
        .unwrap()
        .saved()
        .unwrap();
    (code, plain[1].to_string())
}

/// Runs `f` in [`RACERS`] threads released together, each with its own handle.
pub fn race<T: Send>(open: Open<'_>, f: &(dyn Fn(&dyn Backend) -> T + Sync)) -> Vec<T> {
    let barrier = Barrier::new(RACERS);
    thread::scope(|s| {
        let handles: Vec<_> = (0..RACERS)
            .map(|_| {
                let barrier = &barrier;
                s.spawn(move || {
                    let backend = open();
                    barrier.wait();
                    f(&*backend)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn wins(results: &[CodeResult]) -> usize {
    results.iter().filter(|r| r.is_success()).count()
}

fn verify_race(open: Open<'_>, user: &str, input: &str) -> Vec<CodeResult> {
    let config = race_config();
    race(open, &|b| {
        b.verify(user, input, Purpose::Login, &config)
            .unwrap()
            .result
    })
}

/// One TOTP step, typed by many logins at once: one is accepted, the rest are replays.
pub fn one_totp_step_is_accepted_once(open: Open<'_>) {
    let (code, _) = enroll_for_race(&*open(), "racer1");
    let results = verify_race(open, "racer1", &code);
    assert_eq!(wins(&results), 1, "{results:?}");
    let replays = results
        .iter()
        .filter(|r| matches!(r, CodeResult::Replayed))
        .count();
    assert_eq!(replays, RACERS - 1, "{results:?}");
}

/// One backup code, typed by many logins at once: spent once.
pub fn one_backup_code_is_spent_once(open: Open<'_>) {
    let (_, backup) = enroll_for_race(&*open(), "racer2");
    let results = verify_race(open, "racer2", &backup);
    assert_eq!(wins(&results), 1, "{results:?}");
    assert!(results.contains(&CodeResult::BackupCode { left: 2 }));
    assert_eq!(open().facts("racer2").unwrap().backup_codes_left, 2);
}

/// The last grace login, taken by many logins at once: one gets it.
pub fn the_last_grace_login_goes_once(open: Open<'_>) {
    assert_eq!(open().count_grace_login("racer3", 2).unwrap(), Some(1));
    let results = race(open, &|b| b.count_grace_login("racer3", 2).unwrap());
    assert_eq!(
        results.iter().filter(|r| r.is_some()).count(),
        1,
        "{results:?}"
    );
    assert!(results.contains(&Some(0)), "{results:?}");
    assert_eq!(open().facts("racer3").unwrap().grace_logins_used, 2);
}

/// Many enrollments from nothing at once: one is saved, every other one learns that the
/// authenticator changed under it, and none overwrites the winner.
pub fn one_of_racing_enrollments_is_saved(open: Open<'_>) {
    let config = Config::default();
    let settings = SaveSettings {
        window: 1,
        backup_codes: 0,
    };
    let results = race(open, &|b| {
        let e = Enrollment::new(&config, "racer4", "race", &mut OsRandom).unwrap();
        let saved = b.enroll(
            "racer4",
            &e,
            None,
            None,
            Some(Authority::Admin),
            settings,
            &mut OsRandom,
        );
        match saved {
            Ok(Enrolled::Saved(_)) => Ok(e.secret().clone()),
            Ok(Enrolled::Mismatch(_)) => panic!("no code was asked for"),
            Err(BackendError::Changed(u)) => Err(u),
            Err(e) => panic!("{e}"),
        }
    });
    let saved: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(saved.len(), 1, "{} saved", saved.len());
    let kept = open().facts("racer4").unwrap();
    assert_eq!(
        kept.authenticator_id(),
        Some(&twofactor_core::backend::AuthenticatorId::of(saved[0]))
    );
}

/// Every scenario above, for a backend's test suite.
pub fn all(open: Open<'_>) {
    one_totp_step_is_accepted_once(open);
    one_backup_code_is_spent_once(open);
    the_last_grace_login_goes_once(open);
    one_of_racing_enrollments_is_saved(open);
}

/// A replayed code is refused, and neither counts as a failure nor clears the count: one
/// code typed into several sessions at once must not lock its owner out. Both stores.
pub fn a_replay_is_refused_and_not_counted(open: Open<'_>) {
    let b = open();
    let (code, _) = enroll_for_race(&*b, "replayer");
    let config = Config::default();
    let verify = |input: &str| {
        b.verify("replayer", input, Purpose::Login, &config)
            .unwrap()
            .result
    };
    assert_eq!(verify(&code), CodeResult::Totp);
    assert_eq!(verify("000000"), CodeResult::Wrong { locked_for: None });
    for _ in 0..2 * config.lockout.max_failures {
        assert_eq!(verify(&code), CodeResult::Replayed);
    }
    let facts = b.facts("replayer").unwrap();
    assert_eq!(facts.lockout.failures, 1, "replays neither count nor clear");
    assert_eq!(facts.lockout.locked_until, None);
}

/// A required user whose authenticator is turned off sets up a new one at login, on
/// `login`'s handle (a host's): a mistyped code saves nothing, the right one replaces the
/// turned-off authenticator without proof of it, which cannot log in anyway. `open`'s
/// handle enrolls and turns it off (an administrator's). Both stores.
pub fn a_turned_off_authenticator_is_replaced_at_login(open: Open<'_>, login: Open<'_>) {
    let admin = open();
    let (code, _) = enroll_for_race(&*admin, "switched");
    assert!(
        admin
            .set_enabled("switched", Authority::Admin, false)
            .unwrap()
    );
    let host = login();
    let config = Config::default();
    assert_eq!(
        host.verify("switched", &code, Purpose::Login, &config)
            .unwrap()
            .result,
        CodeResult::NotEnrolled
    );
    let old = host.facts("switched").unwrap().authenticator_id().cloned();
    assert!(old.is_some());
    let e = Enrollment::new(&config, "switched", "conformance", &mut OsRandom).unwrap();
    let settings = SaveSettings {
        window: 1,
        backup_codes: 2,
    };
    let fresh = e
        .secret()
        .code_at_step(e.params(), e.params().step_at(now()))
        .to_string();
    let wrong = if fresh == "000000" {
        "111111"
    } else {
        "000000"
    };
    let saved = host
        .enroll(
            "switched",
            &e,
            Some(wrong),
            old.as_ref(),
            None,
            settings,
            &mut OsRandom,
        )
        .unwrap();
    assert!(saved.saved().is_none(), "a wrong code saves nothing");
    let saved = host
        .enroll(
            "switched",
            &e,
            Some(&fresh),
            old.as_ref(),
            None,
            settings,
            &mut OsRandom,
        )
        .unwrap();
    assert!(
        saved.saved().is_some(),
        "the right code replaces the turned-off authenticator"
    );
    let facts = host.facts("switched").unwrap();
    let a = facts.authenticator.as_ref().unwrap();
    assert!(a.enabled);
    assert_ne!(Some(&a.id), old.as_ref());
}
