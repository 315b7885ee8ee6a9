//! Locking a user out of the second factor after consecutive wrong codes.

use serde::{Deserialize, Serialize};

use crate::config::LockoutSettings;

/// The longest lock, however many came before.
pub const MAX_LOCK_SECONDS: u64 = 86_400;

/// Failure count and lock, kept in the user's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lockout {
    /// Consecutive wrong codes since the last success or lock.
    pub failures: u32,
    /// Locked until this Unix time.
    pub locked_until: Option<u64>,
    /// Locks since the last success; each one doubles the next.
    pub locks: u32,
}

impl Lockout {
    /// Seconds left on a lock in force at `now`, if any.
    pub fn locked_for(&self, now: u64) -> Option<u64> {
        self.locked_until
            .filter(|&until| until > now)
            .map(|until| until - now)
    }

    /// Counts a wrong code. Returns the length of the lock it started, if it started one.
    pub fn record_failure(&mut self, settings: &LockoutSettings, now: u64) -> Option<u64> {
        self.failures = self.failures.saturating_add(1);
        if self.failures < settings.max_failures {
            return None;
        }
        let doubling = 1u64.checked_shl(self.locks.min(63)).unwrap_or(u64::MAX);
        let seconds = settings
            .lock_seconds
            .saturating_mul(doubling)
            .min(MAX_LOCK_SECONDS);
        self.failures = 0;
        self.locks = self.locks.saturating_add(1);
        self.locked_until = Some(now.saturating_add(seconds));
        Some(seconds)
    }

    /// A correct code clears the count and the escalation.
    pub fn record_success(&mut self) {
        *self = Self::default();
    }

    /// An administrator's unlock clears everything, as a success does.
    pub fn unlock(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: LockoutSettings = LockoutSettings {
        max_failures: 3,
        lock_seconds: 300,
    };

    fn fail_n(l: &mut Lockout, n: u32, now: u64) -> Option<u64> {
        (0..n)
            .map(|_| l.record_failure(&SETTINGS, now))
            .last()
            .flatten()
    }

    #[test]
    fn locks_after_max_consecutive_failures() {
        let mut l = Lockout::default();
        assert_eq!(fail_n(&mut l, 2, 1000), None);
        assert_eq!(l.locked_for(1000), None);
        assert_eq!(l.record_failure(&SETTINGS, 1000), Some(300));
        assert_eq!(l.locked_for(1000), Some(300));
        assert_eq!(l.locked_for(1299), Some(1));
        assert_eq!(l.locked_for(1300), None, "the lock ends on time");
    }

    #[test]
    fn each_further_lock_doubles_up_to_a_day() {
        let mut l = Lockout::default();
        let mut now = 0;
        let mut lengths = Vec::new();
        for _ in 0..12 {
            let len = fail_n(&mut l, 3, now).unwrap();
            lengths.push(len);
            now += len;
        }
        assert_eq!(&lengths[..5], &[300, 600, 1200, 2400, 4800]);
        assert_eq!(*lengths.last().unwrap(), MAX_LOCK_SECONDS);
        assert!(lengths.iter().all(|&s| s <= MAX_LOCK_SECONDS));
    }

    #[test]
    fn success_resets_count_and_escalation() {
        let mut l = Lockout::default();
        fail_n(&mut l, 2, 0);
        l.record_success();
        assert_eq!(fail_n(&mut l, 2, 0), None, "count restarted after success");
        fail_n(&mut l, 1, 0);
        l.record_success();
        assert_eq!(
            fail_n(&mut l, 3, 10_000),
            Some(300),
            "escalation restarted after success"
        );
    }

    #[test]
    fn admin_unlock_clears_a_lock() {
        let mut l = Lockout::default();
        fail_n(&mut l, 3, 0);
        assert!(l.locked_for(1).is_some());
        l.unlock();
        assert_eq!(l, Lockout::default());
        assert_eq!(l.locked_for(1), None);
    }
}
