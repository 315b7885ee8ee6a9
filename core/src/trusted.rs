//! Trusted devices: remote hosts that may skip the code for a limited number of days.

use serde::{Deserialize, Serialize};

use crate::random::{Random, RandomError};

/// Entries kept per user; the oldest goes when a new one would pass this.
pub const MAX_TRUSTED: usize = 32;

/// One trusted remote host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedDevice {
    /// Short random id, for `twofactor trust revoke ID`.
    pub id: String,
    /// The PAM_RHOST it was granted to.
    pub host: String,
    /// Unix time it was granted.
    pub created: u64,
    /// Unix time it stops counting.
    pub expires: u64,
}

/// A user's trusted hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TrustedDevices(pub Vec<TrustedDevice>);

impl TrustedDevices {
    /// Trusts `host` for `days` from `now`, replacing an earlier entry for the same host.
    /// Returns the new entry's id.
    pub fn add(
        &mut self,
        host: &str,
        now: u64,
        days: u32,
        rng: &mut dyn Random,
    ) -> Result<String, RandomError> {
        let mut raw = [0u8; 6];
        rng.fill(&mut raw)?;
        let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        self.expire(now);
        self.0.retain(|d| d.host != host);
        if self.0.len() >= MAX_TRUSTED {
            self.0.sort_by_key(|d| d.created);
            self.0.remove(0);
        }
        let expires = now.saturating_add(u64::from(days) * 86_400);
        self.0.push(TrustedDevice {
            id: id.clone(),
            host: host.to_string(),
            created: now,
            expires,
        });
        Ok(id)
    }

    /// Whether `host` holds an unexpired trust at `now`.
    pub fn is_trusted(&self, host: &str, now: u64) -> bool {
        !host.is_empty() && self.0.iter().any(|d| d.host == host && d.expires > now)
    }

    /// Unexpired entries at `now`.
    pub fn active(&self, now: u64) -> impl Iterator<Item = &TrustedDevice> {
        self.0.iter().filter(move |d| d.expires > now)
    }

    /// Removes the entry with `id`; whether there was one.
    pub fn revoke(&mut self, id: &str) -> bool {
        let before = self.0.len();
        self.0.retain(|d| d.id != id);
        self.0.len() != before
    }

    /// Removes every entry; how many there were.
    pub fn revoke_all(&mut self) -> usize {
        std::mem::take(&mut self.0).len()
    }

    /// Drops entries that have expired at `now`; how many.
    pub fn expire(&mut self, now: u64) -> usize {
        let before = self.0.len();
        self.0.retain(|d| d.expires > now);
        before - self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRandom;

    const DAY: u64 = 86_400;

    #[test]
    fn trust_lasts_exactly_the_configured_days() {
        let mut t = TrustedDevices::default();
        let mut rng = SeededRandom::new(4);
        t.add("10.0.0.5", 1000, 30, &mut rng).unwrap();
        assert!(t.is_trusted("10.0.0.5", 1000));
        assert!(t.is_trusted("10.0.0.5", 1000 + 30 * DAY - 1));
        assert!(!t.is_trusted("10.0.0.5", 1000 + 30 * DAY));
        assert!(!t.is_trusted("10.0.0.6", 1000), "trust is per host");
        assert!(!t.is_trusted("", 1000));
        assert_eq!(t.expire(1000 + 30 * DAY), 1);
        assert!(t.0.is_empty());
    }

    #[test]
    fn list_revoke_and_revoke_all() {
        let mut t = TrustedDevices::default();
        let mut rng = SeededRandom::new(4);
        let a = t.add("a.example", 0, 7, &mut rng).unwrap();
        let b = t.add("b.example", 0, 7, &mut rng).unwrap();
        assert_ne!(a, b);
        assert_eq!(t.active(1).count(), 2);
        assert!(t.revoke(&a));
        assert!(!t.revoke(&a), "revoking twice finds nothing");
        assert!(!t.is_trusted("a.example", 1));
        assert!(t.is_trusted("b.example", 1));
        assert_eq!(t.revoke_all(), 1);
        assert!(!t.is_trusted("b.example", 1));
    }

    #[test]
    fn re_trusting_a_host_replaces_its_entry_and_the_list_is_bounded() {
        let mut t = TrustedDevices::default();
        let mut rng = SeededRandom::new(9);
        t.add("h", 0, 1, &mut rng).unwrap();
        t.add("h", 10, 1, &mut rng).unwrap();
        assert_eq!(t.0.len(), 1);
        assert_eq!(t.0[0].created, 10);
        for i in 0..(MAX_TRUSTED as u64 + 5) {
            t.add(&format!("host{i}"), 20 + i, 1, &mut rng).unwrap();
        }
        assert_eq!(t.0.len(), MAX_TRUSTED);
        assert!(
            t.is_trusted(&format!("host{}", MAX_TRUSTED + 4), 100),
            "newest kept"
        );
        assert!(!t.is_trusted("host0", 100), "oldest evicted");
    }
}
