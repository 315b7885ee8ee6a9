//! Trusted devices: remote hosts that may skip the code for one PAM service, for a
//! limited number of days.
//!
//! Trust is keyed by service and address. Only IP addresses are trusted unless the admin
//! allows host names (`trusted_devices.allow_host_names`): PAM_RHOST is whatever the
//! application says, and a name is only as good as the resolver behind it. Hosts behind
//! one NAT gateway or bastion share an address, and so share its trust.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::random::{Random, RandomError};

/// Entries kept per user; the oldest goes when a new one would pass this.
pub const MAX_TRUSTED: usize = 32;

/// What kind of remote host an entry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostKind {
    /// An IP address, written in its canonical form.
    Ip,
    /// A host name, trusted only while `trusted_devices.allow_host_names` is on.
    Name,
}

/// A PAM_RHOST as trust sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteHost {
    /// The address in canonical form, or the name as given.
    pub host: String,
    /// Address or name.
    pub kind: HostKind,
}

impl RemoteHost {
    /// Reads PAM_RHOST: an IP address (an IPv4-mapped IPv6 address becomes IPv4), or else
    /// a name. `None` for an empty string.
    pub fn parse(rhost: &str) -> Option<Self> {
        let rhost = rhost.trim();
        if rhost.is_empty() {
            return None;
        }
        let bare = rhost.trim_start_matches('[').trim_end_matches(']');
        Some(match bare.parse::<IpAddr>() {
            Ok(ip) => Self {
                host: ip.to_canonical().to_string(),
                kind: HostKind::Ip,
            },
            Err(_) => Self {
                host: rhost.to_string(),
                kind: HostKind::Name,
            },
        })
    }

    /// Whether trust may be granted to or honoured for this host.
    pub fn may_be_trusted(&self, allow_host_names: bool) -> bool {
        self.kind == HostKind::Ip || allow_host_names
    }
}

/// One trusted remote host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedDevice {
    /// Short random id, for `twofactor trust revoke ID`.
    pub id: String,
    /// The PAM service the trust was granted through; it holds for that service only.
    pub service: String,
    /// The remote host it was granted to.
    pub host: String,
    /// Address or name.
    pub kind: HostKind,
    /// Unix time it was granted.
    pub created: u64,
    /// Unix time it stops counting.
    pub expires: u64,
}

/// A trusted host as state format version 1 stored it (no service, no address type).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedDeviceV1 {
    /// Short random id.
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
    /// Trusts `host` for `service` for `days` from `now`, replacing an earlier entry for
    /// the same service and host. Returns the new entry's id.
    pub fn add(
        &mut self,
        service: &str,
        host: &RemoteHost,
        now: u64,
        days: u32,
        rng: &mut dyn Random,
    ) -> Result<String, RandomError> {
        let mut raw = [0u8; 6];
        rng.fill(&mut raw)?;
        let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        self.expire(now);
        self.0
            .retain(|d| !(d.service == service && d.host == host.host));
        if self.0.len() >= MAX_TRUSTED {
            self.0.sort_by_key(|d| d.created);
            self.0.remove(0);
        }
        let expires = now.saturating_add(u64::from(days) * 86_400);
        self.0.push(TrustedDevice {
            id: id.clone(),
            service: service.to_string(),
            host: host.host.clone(),
            kind: host.kind,
            created: now,
            expires,
        });
        Ok(id)
    }

    /// Whether `host` holds an unexpired trust for `service` at `now`. Entries for host
    /// names count only while `allow_host_names` is on.
    pub fn is_trusted(
        &self,
        service: &str,
        host: &RemoteHost,
        allow_host_names: bool,
        now: u64,
    ) -> bool {
        host.may_be_trusted(allow_host_names)
            && self.0.iter().any(|d| {
                d.service == service
                    && d.host == host.host
                    && d.kind == host.kind
                    && d.expires > now
            })
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

    fn ip(s: &str) -> RemoteHost {
        let h = RemoteHost::parse(s).unwrap();
        assert_eq!(h.kind, HostKind::Ip, "{s}");
        h
    }

    #[test]
    fn trust_lasts_exactly_the_configured_days() {
        let mut t = TrustedDevices::default();
        let mut rng = SeededRandom::new(4);
        let h = ip("10.0.0.5");
        t.add("sshd", &h, 1000, 30, &mut rng).unwrap();
        assert!(t.is_trusted("sshd", &h, false, 1000));
        assert!(t.is_trusted("sshd", &h, false, 1000 + 30 * DAY - 1));
        assert!(!t.is_trusted("sshd", &h, false, 1000 + 30 * DAY));
        assert!(
            !t.is_trusted("sshd", &ip("10.0.0.6"), false, 1000),
            "trust is per host"
        );
        assert_eq!(t.expire(1000 + 30 * DAY), 1);
        assert!(t.0.is_empty());
    }

    #[test]
    fn trust_is_per_service() {
        let mut t = TrustedDevices::default();
        let h = ip("192.0.2.1");
        t.add("sshd", &h, 0, 7, &mut SeededRandom::new(1)).unwrap();
        assert!(t.is_trusted("sshd", &h, false, 1));
        assert!(!t.is_trusted("sudo", &h, false, 1));
        assert!(!t.is_trusted("login", &h, false, 1));
    }

    #[test]
    fn addresses_are_canonical_and_names_need_the_opt_in() {
        assert_eq!(ip("::ffff:10.1.2.3").host, "10.1.2.3");
        assert_eq!(ip("2001:DB8::1").host, "2001:db8::1");
        assert_eq!(ip("[2001:db8::1]").host, "2001:db8::1");
        assert_eq!(RemoteHost::parse("  "), None);
        let name = RemoteHost::parse("laptop.example").unwrap();
        assert_eq!(name.kind, HostKind::Name);
        assert!(!name.may_be_trusted(false));
        assert!(name.may_be_trusted(true));
        let mut t = TrustedDevices::default();
        t.add("sshd", &name, 0, 7, &mut SeededRandom::new(1))
            .unwrap();
        assert!(t.is_trusted("sshd", &name, true, 1));
        assert!(
            !t.is_trusted("sshd", &name, false, 1),
            "a name entry stops counting when names are turned off"
        );
        // A name that looks like an address is not the address.
        let spoof = RemoteHost::parse("10.0.0.5.evil.example").unwrap();
        assert_eq!(spoof.kind, HostKind::Name);
    }

    #[test]
    fn list_revoke_and_revoke_all() {
        let mut t = TrustedDevices::default();
        let mut rng = SeededRandom::new(4);
        let (ha, hb) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let a = t.add("sshd", &ha, 0, 7, &mut rng).unwrap();
        let b = t.add("sshd", &hb, 0, 7, &mut rng).unwrap();
        assert_ne!(a, b);
        assert_eq!(t.active(1).count(), 2);
        assert!(t.revoke(&a));
        assert!(!t.revoke(&a), "revoking twice finds nothing");
        assert!(!t.is_trusted("sshd", &ha, false, 1));
        assert!(t.is_trusted("sshd", &hb, false, 1));
        assert_eq!(t.revoke_all(), 1);
        assert!(!t.is_trusted("sshd", &hb, false, 1));
    }

    #[test]
    fn re_trusting_a_host_replaces_its_entry_and_the_list_is_bounded() {
        let mut t = TrustedDevices::default();
        let mut rng = SeededRandom::new(9);
        let h = ip("10.9.9.9");
        t.add("sshd", &h, 0, 1, &mut rng).unwrap();
        t.add("sshd", &h, 10, 1, &mut rng).unwrap();
        assert_eq!(t.0.len(), 1);
        assert_eq!(t.0[0].created, 10);
        t.add("login", &h, 10, 1, &mut rng).unwrap();
        assert_eq!(t.0.len(), 2, "another service is another entry");
        for i in 0..(MAX_TRUSTED as u64 + 5) {
            t.add(
                "sshd",
                &ip(&format!("10.0.{}.{}", i / 250, i % 250)),
                20 + i,
                1,
                &mut rng,
            )
            .unwrap();
        }
        assert_eq!(t.0.len(), MAX_TRUSTED);
        let newest = MAX_TRUSTED as u64 + 4;
        assert!(
            t.is_trusted(
                "sshd",
                &ip(&format!("10.0.{}.{}", newest / 250, newest % 250)),
                false,
                100
            ),
            "newest kept"
        );
        assert!(
            !t.is_trusted("sshd", &ip("10.0.0.0"), false, 100),
            "oldest evicted"
        );
    }
}
