//! Checking a code a user typed against a user's state: lock, TOTP with replay
//! protection, then backup codes. The file store runs it under the user's lock
//! ([`crate::backend`]); this module knows no backend.
//!
//! **Charge before you check.** The attempt is first recorded as a failure and made
//! durable; only then is the code looked at, and a right code writes the success over
//! it. A failure that cannot be written (a full disk, a file-size limit inherited through
//! `su` or a setuid exec) therefore refuses the login without looking at the code, and no
//! lost write can ever leave a wrong guess uncounted while a right one is accepted.

use crate::backup_codes::HashError;
use crate::config::Config;
use crate::store::UserState;
use crate::totp::{self, TotpCheck};

/// What a typed code achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeResult {
    /// A fresh TOTP code.
    Totp,
    /// A backup code, now spent; `left` remain.
    BackupCode { left: usize },
    /// Wrong or expired; `locked_for` is set when this failure started a lock.
    Wrong { locked_for: Option<u64> },
    /// A TOTP code already used (replay). It cannot log anyone in, so it neither counts
    /// as a failure nor clears the count: one code typed into several sessions at once
    /// must not lock its owner out.
    Replayed,
    /// Locked: no code was checked.
    Locked { seconds_left: u64 },
    /// A backup code, while the user's backup codes are void (an administrator retired
    /// the key they were made with) and no new ones were made: it can never succeed, so
    /// it is not counted as a failure.
    VoidedBackupCode,
    /// No enabled authenticator to check against.
    NotEnrolled,
}

impl CodeResult {
    /// Whether the code proved the second factor.
    pub fn is_success(self) -> bool {
        matches!(self, Self::Totp | Self::BackupCode { .. })
    }
}

/// What a code is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A login: only an enabled authenticator counts.
    Login,
    /// Confirming a change to one's own second factor: a temporarily disabled
    /// authenticator still has to be answered, so that the password alone cannot plant
    /// backup codes or a new key that work once 2FA is back on.
    Change,
}

/// A result reached without looking at the code: locked, or nothing to check against.
pub(crate) fn refuse_unchecked(
    state: &UserState,
    now: u64,
    purpose: Purpose,
) -> Option<CodeResult> {
    if let Some(seconds_left) = state.lockout.locked_for(now) {
        return Some(CodeResult::Locked { seconds_left });
    }
    let usable = state
        .authenticator
        .as_ref()
        .is_some_and(|a| a.enabled || purpose == Purpose::Change);
    (!usable).then_some(CodeResult::NotEnrolled)
}

/// The decision itself for a login, on a state already held under the user's lock.
pub fn apply_code(
    state: &mut UserState,
    input: &str,
    config: &Config,
    now: u64,
) -> Result<CodeResult, HashError> {
    apply_code_for(state, input, config, now, Purpose::Login)
}

/// The decision itself for `purpose`, on a state already held under the user's lock.
pub fn apply_code_for(
    state: &mut UserState,
    input: &str,
    config: &Config,
    now: u64,
    purpose: Purpose,
) -> Result<CodeResult, HashError> {
    if let Some(result) = refuse_unchecked(state, now, purpose) {
        return Ok(result);
    }
    let Some(auth) = state.authenticator.as_mut() else {
        return Ok(CodeResult::NotEnrolled);
    };
    let window = auth.window.unwrap_or(config.totp.window);
    match totp::check(
        &auth.secret,
        &auth.params,
        window,
        input,
        now,
        auth.last_step,
    ) {
        TotpCheck::Accepted { step } => {
            auth.last_step = Some(step);
            state.lockout.record_success();
            return Ok(CodeResult::Totp);
        }
        TotpCheck::Replayed { .. } => return Ok(CodeResult::Replayed),
        TotpCheck::Wrong => {}
    }
    if let Some(codes) = state.backup_codes.as_mut()
        && codes.try_spend(input)?
    {
        let left = codes.remaining();
        state.lockout.record_success();
        return Ok(CodeResult::BackupCode { left });
    }
    let locked_for = state.lockout.record_failure(&config.lockout, now);
    Ok(CodeResult::Wrong { locked_for })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::backup_codes::{BackupCodes, NewCodes};
    use crate::clock::ManualClock;
    use crate::random::SeededRandom;
    use crate::store::Authenticator;
    use crate::store::{Store, StoreError};
    use crate::testing::CHEAP;
    use crate::totp::{SecretKey, TotpParams};
    use std::fs;
    use std::sync::Arc;

    const NOW: u64 = 1_800_000_000;

    fn setup() -> (UserState, SecretKey, Vec<String>) {
        let mut rng = SeededRandom::new(11);
        let key = SecretKey::generate(&mut rng).unwrap();
        let (codes, NewCodes(plain)) = BackupCodes::generate(3, CHEAP, &mut rng).unwrap();
        let state = UserState {
            authenticator: Some(Authenticator {
                secret: key.clone(),
                params: TotpParams::default(),
                enabled: true,
                enrolled_at: 0,
                last_step: None,
                window: None,
            }),
            backup_codes: Some(codes),
            ..UserState::default()
        };
        (state, key, plain.iter().map(|c| c.to_string()).collect())
    }

    fn code(key: &SecretKey, now: u64) -> String {
        let p = TotpParams::default();
        key.code_at_step(&p, p.step_at(now)).to_string()
    }

    #[test]
    fn totp_then_replay_then_next_step() {
        let (mut s, key, _) = setup();
        let c = Config::default();
        assert_eq!(
            apply_code(&mut s, &code(&key, NOW), &c, NOW).unwrap(),
            CodeResult::Totp
        );
        assert_eq!(
            apply_code(&mut s, "000000", &c, NOW + 4).unwrap(),
            CodeResult::Wrong { locked_for: None }
        );
        assert_eq!(
            apply_code(&mut s, &code(&key, NOW), &c, NOW + 5).unwrap(),
            CodeResult::Replayed
        );
        assert_eq!(s.lockout.failures, 1, "a replay neither counts nor clears");
        assert_eq!(
            apply_code(&mut s, &code(&key, NOW + 30), &c, NOW + 30).unwrap(),
            CodeResult::Totp
        );
        assert_eq!(s.lockout.failures, 0, "success resets the count");
    }

    #[test]
    fn backup_codes_spend_once_and_count_down() {
        let (mut s, _, plain) = setup();
        let c = Config::default();
        assert_eq!(
            apply_code(&mut s, &plain[0], &c, NOW).unwrap(),
            CodeResult::BackupCode { left: 2 }
        );
        assert_eq!(
            apply_code(&mut s, &plain[0], &c, NOW).unwrap(),
            CodeResult::Wrong { locked_for: None }
        );
        assert_eq!(
            apply_code(&mut s, &plain[2].to_uppercase(), &c, NOW).unwrap(),
            CodeResult::BackupCode { left: 1 }
        );
    }

    #[test]
    fn lock_stops_checking_even_correct_codes() {
        let (mut s, key, _) = setup();
        let c = Config::default();
        for i in 0..4 {
            assert_eq!(
                apply_code(&mut s, "000000", &c, NOW).unwrap(),
                CodeResult::Wrong { locked_for: None },
                "try {i}"
            );
        }
        assert_eq!(
            apply_code(&mut s, "000000", &c, NOW).unwrap(),
            CodeResult::Wrong {
                locked_for: Some(300)
            }
        );
        assert_eq!(
            apply_code(&mut s, &code(&key, NOW + 10), &c, NOW + 10).unwrap(),
            CodeResult::Locked { seconds_left: 290 }
        );
        assert_eq!(
            apply_code(&mut s, &code(&key, NOW + 300), &c, NOW + 300).unwrap(),
            CodeResult::Totp
        );
    }

    #[test]
    fn disabled_or_missing_authenticator_is_not_enrolled() {
        let (mut s, key, _) = setup();
        let c = Config::default();
        s.authenticator.as_mut().unwrap().enabled = false;
        assert_eq!(
            apply_code(&mut s, &code(&key, NOW), &c, NOW).unwrap(),
            CodeResult::NotEnrolled
        );
        assert_eq!(
            apply_code(&mut UserState::default(), "123456", &c, NOW).unwrap(),
            CodeResult::NotEnrolled
        );
    }

    #[test]
    fn verify_code_persists_through_the_store() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::create(&d.path().join("s"), nix::unistd::geteuid().as_raw())
            .unwrap()
            .with_clock(Arc::new(ManualClock::new(NOW)));
        let (state, key, _) = setup();
        store
            .update("carol", |s| -> Result<(), StoreError> {
                *s = state;
                Ok(())
            })
            .unwrap();
        let c = Config::default();
        assert_eq!(
            store
                .verify("carol", &code(&key, NOW), Purpose::Login, &c)
                .unwrap()
                .result,
            CodeResult::Totp
        );
        assert_eq!(
            store
                .load("carol")
                .unwrap()
                .authenticator
                .unwrap()
                .last_step,
            Some(NOW / 30)
        );
        assert_eq!(
            store
                .verify("carol", &code(&key, NOW), Purpose::Login, &c)
                .unwrap()
                .result,
            CodeResult::Replayed
        );
        // Charged before the check, and the charge taken back once it was a replay.
        assert_eq!(store.load("carol").unwrap().lockout.failures, 0);
    }

    #[test]
    fn clock_jumping_back_an_hour_allows_no_replay_and_no_early_unlock() {
        let (mut s, key, _) = setup();
        let c = Config::default();
        assert_eq!(
            apply_code(&mut s, &code(&key, NOW), &c, NOW).unwrap(),
            CodeResult::Totp
        );
        let back = NOW - 3600;
        // Every code of the earlier hour is now at or before the last used step.
        assert_eq!(
            apply_code(&mut s, &code(&key, back), &c, back).unwrap(),
            CodeResult::Replayed
        );
        assert_eq!(
            apply_code(&mut s, &code(&key, NOW), &c, back).unwrap(),
            CodeResult::Wrong { locked_for: None }
        );
        // A lock taken now still holds after the clock goes back: it lasts longer, never shorter.
        let mut l = UserState {
            lockout: Default::default(),
            ..s.clone()
        };
        for _ in 0..5 {
            apply_code(&mut l, "000000", &c, NOW).unwrap();
        }
        assert_eq!(l.lockout.locked_for(NOW), Some(300));
        assert_eq!(l.lockout.locked_for(back), Some(3900));
        assert!(matches!(
            apply_code(&mut l, &code(&key, back), &c, back).unwrap(),
            CodeResult::Locked { .. }
        ));
    }

    /// The online brute-force budget at the default settings: an attacker who has the
    /// password guesses as fast as the lockout allows for 30 days.
    #[test]
    fn a_month_of_online_guessing_stays_under_one_in_a_thousand() {
        let (mut s, key, _) = setup();
        s.backup_codes = None;
        let c = Config::default();
        let p = TotpParams::default();
        let start = NOW;
        let end = start + 30 * 86_400;
        let mut now = start;
        let mut guesses: u64 = 0;
        while now < end {
            if let Some(wait) = s.lockout.locked_for(now) {
                now += wait;
                continue;
            }
            // A guess that is wrong for every step in the window, so the count is exact.
            let valid: Vec<String> = (0..3)
                .map(|d| key.code_at_step(&p, p.step_at(now) + d - 1).to_string())
                .collect();
            let guess = (0..)
                .map(|n| format!("{:06}", (guesses * 7919 + n) % 1_000_000))
                .find(|g| !valid.contains(g))
                .unwrap();
            assert!(matches!(
                apply_code(&mut s, &guess, &c, now).unwrap(),
                CodeResult::Wrong { .. }
            ));
            guesses += 1;
            now += 1;
        }
        // Each guess hits one of the 2 * window + 1 = 3 codes in force with chance 3 / 10^6.
        let chance = 1.0 - (1.0 - 3e-6f64).powf(guesses as f64);
        println!(
            "{guesses} guesses in 30 days at the defaults: chance of success {:.4}%",
            chance * 100.0
        );
        assert!(guesses <= 200, "{guesses} guesses allowed");
        assert!(chance < 0.001, "chance {chance}");

        // A user who mistypes twice is not locked, and the next correct code works.
        let (mut user, key, _) = setup();
        apply_code(&mut user, "000000", &c, NOW).unwrap();
        apply_code(&mut user, "000001", &c, NOW).unwrap();
        assert_eq!(user.lockout.locked_for(NOW), None);
        assert_eq!(
            apply_code(&mut user, &code(&key, NOW), &c, NOW).unwrap(),
            CodeResult::Totp
        );
    }

    #[test]
    fn a_disabled_authenticator_still_answers_for_changes() {
        let (mut s, key, _) = setup();
        let c = Config::default();
        s.authenticator.as_mut().unwrap().enabled = false;
        assert_eq!(
            apply_code_for(&mut s, "000000", &c, NOW, Purpose::Change).unwrap(),
            CodeResult::Wrong { locked_for: None }
        );
        assert_eq!(
            apply_code_for(&mut s, &code(&key, NOW), &c, NOW, Purpose::Change).unwrap(),
            CodeResult::Totp
        );
        assert_eq!(
            apply_code_for(&mut UserState::default(), "1", &c, NOW, Purpose::Change).unwrap(),
            CodeResult::NotEnrolled
        );
    }

    /// The attempt is written before the code is looked at: when that write fails, even a
    /// right code is not accepted and nothing else changes.
    #[test]
    fn an_attempt_that_cannot_be_recorded_is_refused_unchecked() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::create(&d.path().join("s"), nix::unistd::geteuid().as_raw())
            .unwrap()
            .with_clock(Arc::new(ManualClock::new(NOW)));
        let (state, key, _) = setup();
        store
            .update("dan", |s| -> Result<(), StoreError> {
                *s = state;
                Ok(())
            })
            .unwrap();
        let before = fs::read(store.dir().join("dan.json")).unwrap();
        // A directory where the temp file goes makes every write fail.
        fs::create_dir(store.dir().join(".dan.tmp")).unwrap();
        let c = Config::default();
        assert!(
            store
                .verify("dan", &code(&key, NOW), Purpose::Login, &c)
                .is_err()
        );
        assert!(store.verify("dan", "000000", Purpose::Login, &c).is_err());
        assert_eq!(fs::read(store.dir().join("dan.json")).unwrap(), before);
        fs::remove_dir(store.dir().join(".dan.tmp")).unwrap();
        // Charged and checked: a wrong code leaves exactly one failure, a right one none.
        assert_eq!(
            store
                .verify("dan", "000000", Purpose::Login, &c)
                .unwrap()
                .result,
            CodeResult::Wrong { locked_for: None }
        );
        assert_eq!(store.load("dan").unwrap().lockout.failures, 1);
        assert_eq!(
            store
                .verify("dan", &code(&key, NOW), Purpose::Login, &c)
                .unwrap()
                .result,
            CodeResult::Totp
        );
        assert_eq!(store.load("dan").unwrap().lockout, Default::default());
    }
}
