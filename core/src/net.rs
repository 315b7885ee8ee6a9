//! Network ranges (CIDR) for limiting where enrollment at login may happen.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IPv4 or IPv6 network such as `10.0.0.0/8` or `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside this network. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`)
    /// match IPv4 networks, since that is how a dual-stack sshd reports IPv4 peers.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => mask_eq(&net.octets(), &ip.octets(), self.prefix),
            (IpAddr::V6(net), IpAddr::V6(ip)) => mask_eq(&net.octets(), &ip.octets(), self.prefix),
            _ => false,
        }
    }

    /// Whether a PAM_RHOST value is an address inside this network. Host names never
    /// match: they come from reverse DNS, which the remote side controls.
    pub fn contains_host(&self, rhost: &str) -> bool {
        rhost.parse::<IpAddr>().is_ok_and(|ip| self.contains(ip))
    }
}

fn mask_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (a[full] & mask) == (b[full] & mask)
}

/// A CIDR that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrError(String);

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a network like 10.0.0.0/8 or 2001:db8::/32",
            self.0
        )
    }
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, CidrError> {
        let err = || CidrError(s.to_string());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (
                a.parse::<IpAddr>().map_err(|_| err())?,
                Some(p.parse::<u8>().map_err(|_| err())?),
            ),
            None => (s.parse::<IpAddr>().map_err(|_| err())?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(err());
        }
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn v4_and_v6_membership() {
        assert!(c("10.0.0.0/8").contains_host("10.200.3.4"));
        assert!(!c("10.0.0.0/8").contains_host("11.0.0.1"));
        assert!(c("192.168.1.0/25").contains_host("192.168.1.127"));
        assert!(!c("192.168.1.0/25").contains_host("192.168.1.128"));
        assert!(c("127.0.0.1").contains_host("127.0.0.1"));
        assert!(c("0.0.0.0/0").contains_host("8.8.8.8"));
        assert!(c("2001:db8::/32").contains_host("2001:db8:ffff::1"));
        assert!(!c("2001:db8::/32").contains_host("2001:db9::1"));
        assert!(
            c("10.0.0.0/8").contains_host("::ffff:10.1.2.3"),
            "v4-mapped peers match v4 ranges"
        );
        assert!(
            !c("10.0.0.0/8").contains_host("evil.example"),
            "names never match"
        );
        assert!(!c("10.0.0.0/8").contains_host(""));
    }

    #[test]
    fn bad_networks_are_refused() {
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "host.example/8",
            "10.0.0.0/x",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
        assert_eq!(c("10.1.0.0/16").to_string(), "10.1.0.0/16");
    }
}
