//! `[ssh_factor]`: whether the ssh login already used a second factor, read from the
//! `SSH_AUTH_INFO_0` that sshd (7.8 and later) puts in the PAM environment: the methods
//! passed so far and the keys or certificates they used.
//!
//! A certificate counts when a CA the config lists signed it (checked here, not only by
//! sshd), it is a user certificate valid now for this user, and it carries the
//! configured extension (an SSO stamps one after its own MFA).

use ssh_key::certificate::CertType;
use ssh_key::{Certificate, Fingerprint, HashAlg};

use crate::config::SshFactorSettings;

/// The longest `SSH_AUTH_INFO_0` read; sshd's holds a few keys.
const MAX_AUTH_INFO: usize = 64 * 1024;

/// A certificate that proved the second factor: what the audit line names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// The signing CA's fingerprint.
    pub ca: String,
    /// The certificate's key id (what the SSO wrote, often the person).
    pub key_id: String,
    /// Its serial number.
    pub serial: u64,
}

/// Why the login's ssh authentication is not a second factor here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotProven {
    /// `[ssh_factor]` is off (no `cert_cas`).
    Off,
    /// The PAM service is not in `ssh_factor.services`.
    OtherService,
    /// No `SSH_AUTH_INFO_0` in the PAM environment.
    NoAuthInfo,
    /// No certificate among the methods passed.
    NoCertificate,
    /// Certificates were used, but none qualifies: why the last one did not.
    Refused(String),
}

/// Decides whether `auth_info` (the PAM environment's `SSH_AUTH_INFO_0`) proves the
/// second factor for `user` logging in through `service` at `now`.
pub fn check(
    settings: &SshFactorSettings,
    service: &str,
    user: &str,
    auth_info: Option<&str>,
    now: u64,
) -> Result<Proof, NotProven> {
    if !settings.enabled() {
        return Err(NotProven::Off);
    }
    if !settings.services.iter().any(|s| s == service) {
        return Err(NotProven::OtherService);
    }
    let Some(info) = auth_info.filter(|i| !i.is_empty()) else {
        return Err(NotProven::NoAuthInfo);
    };
    if info.len() > MAX_AUTH_INFO {
        return Err(NotProven::Refused("SSH_AUTH_INFO_0 is too long".into()));
    }
    let cas: Vec<Fingerprint> = settings
        .cert_cas
        .iter()
        .filter_map(|f| f.parse().ok())
        .collect();
    let mut why = None;
    for line in info.lines() {
        // "publickey TYPE BASE64", as authorized_keys has a key.
        let mut words = line.split_whitespace();
        let (Some("publickey"), Some(kind), Some(blob)) =
            (words.next(), words.next(), words.next())
        else {
            continue;
        };
        if !kind.ends_with("-cert-v01@openssh.com") {
            continue;
        }
        match qualifies(settings, &cas, user, &format!("{kind} {blob}"), now) {
            Ok(proof) => return Ok(proof),
            Err(e) => why = Some(e),
        }
    }
    Err(why.map_or(NotProven::NoCertificate, NotProven::Refused))
}

/// One certificate against the policy.
fn qualifies(
    settings: &SshFactorSettings,
    cas: &[Fingerprint],
    user: &str,
    text: &str,
    now: u64,
) -> Result<Proof, String> {
    let cert =
        Certificate::from_openssh(text).map_err(|e| format!("unreadable certificate: {e}"))?;
    let ca = cert.signature_key().fingerprint(HashAlg::Sha256);
    if !cas.contains(&ca) {
        return Err(format!(
            "certificate from CA {ca}, not one of ssh_factor.cert_cas"
        ));
    }
    if cert.cert_type() != CertType::User {
        return Err("a host certificate".into());
    }
    // Signature, CA and validity window, in one check.
    cert.validate_at(now, cas).map_err(|_| {
        if now < cert.valid_after() || now >= cert.valid_before() {
            "certificate not valid now (expired or not yet valid)".to_string()
        } else {
            "certificate signature does not verify".to_string()
        }
    })?;
    if !cert.valid_principals().iter().any(|p| p == user) {
        return Err(format!(
            "certificate not issued for {user} (its principals)"
        ));
    }
    if let Some(ext) = &settings.cert_extension
        && !cert.extensions().contains_key(ext)
    {
        return Err(format!("certificate without the extension {ext}"));
    }
    Ok(Proof {
        ca: ca.to_string(),
        key_id: cert.key_id().to_string(),
        serial: cert.serial(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    fn keygen(args: &[&str]) {
        let out = Command::new("ssh-keygen")
            .args(args)
            .output()
            .expect("ssh-keygen (openssh-client)");
        assert!(
            out.status.success(),
            "ssh-keygen {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn key(dir: &Path, name: &str) -> String {
        let path = dir.join(name);
        keygen(&[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            path.to_str().unwrap(),
        ]);
        path.to_str().unwrap().to_string()
    }

    fn fingerprint(public: &str) -> String {
        let out = Command::new("ssh-keygen")
            .args(["-l", "-E", "sha256", "-f", public])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    }

    /// Signs `user_key`'s public key with `ca`, returning the certificate line.
    fn sign(ca: &str, user_key: &str, principal: &str, validity: &str, extra: &[&str]) -> String {
        let mut args = vec![
            "-q",
            "-s",
            ca,
            "-I",
            "alice@sso",
            "-n",
            principal,
            "-V",
            validity,
            "-z",
            "42",
        ];
        args.extend_from_slice(extra);
        let public = format!("{user_key}.pub");
        args.push(&public);
        keygen(&args);
        std::fs::read_to_string(format!("{user_key}-cert.pub")).unwrap()
    }

    fn settings(cas: &[String], extension: Option<&str>) -> SshFactorSettings {
        SshFactorSettings {
            services: vec!["sshd".into()],
            cert_cas: cas.to_vec(),
            cert_extension: extension.map(str::to_string),
        }
    }

    fn now() -> u64 {
        use crate::clock::{Clock, SystemClock};
        SystemClock.now()
    }

    #[test]
    fn only_a_valid_certificate_from_a_listed_ca_with_the_extension_counts() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (ca1, ca2, user) = (key(d, "ca1"), key(d, "ca2"), key(d, "user"));
        let listed = vec![fingerprint(&format!("{ca1}.pub"))];
        let ext = "mfa@sso.example.com";
        let with_ext = [
            "-O",
            "clear",
            "-O",
            "extension:mfa@sso.example.com",
            "-O",
            "permit-pty",
        ];
        let info = |cert: &str| format!("publickey {}\nkeyboard-interactive\n", cert.trim());

        let good = sign(&ca1, &user, "alice", "-5m:+1h", &with_ext);
        let proof = check(
            &settings(&listed, Some(ext)),
            "sshd",
            "alice",
            Some(&info(&good)),
            now(),
        )
        .unwrap();
        assert_eq!((proof.key_id.as_str(), proof.serial), ("alice@sso", 42));
        assert_eq!(proof.ca, listed[0]);
        // Any certificate of the CA when no extension is asked for.
        assert!(
            check(
                &settings(&listed, None),
                "sshd",
                "alice",
                Some(&info(&good)),
                now()
            )
            .is_ok()
        );

        let refused = |s: &SshFactorSettings, line: &str, user: &str| match check(
            s,
            "sshd",
            user,
            Some(&info(line)),
            now(),
        ) {
            Err(NotProven::Refused(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        };
        let plain = sign(&ca1, &user, "alice", "-5m:+1h", &["-O", "clear"]);
        assert!(
            refused(&settings(&listed, Some(ext)), &plain, "alice")
                .contains("without the extension")
        );
        let other_ca = sign(&ca2, &user, "alice", "-5m:+1h", &with_ext);
        assert!(refused(&settings(&listed, Some(ext)), &other_ca, "alice").contains("not one of"));
        let expired = sign(&ca1, &user, "alice", "20200101:20200102", &with_ext);
        assert!(
            refused(&settings(&listed, Some(ext)), &expired, "alice").contains("not valid now")
        );
        let bob = sign(&ca1, &user, "bob", "-5m:+1h", &with_ext);
        assert!(
            refused(&settings(&listed, Some(ext)), &bob, "alice").contains("not issued for alice")
        );
        // A certificate whose signed content was altered (its key id) fails the signature.
        let good_blob = good.split_whitespace().nth(1).unwrap();
        let mut raw = base64_decode(good_blob);
        let at = raw.windows(9).position(|w| w == b"alice@sso").unwrap();
        raw[at] = b'A';
        let forged = format!("ssh-ed25519-cert-v01@openssh.com {}", base64_encode(&raw));
        assert!(refused(&settings(&listed, Some(ext)), &forged, "alice").contains("signature"));

        // No certificate, another service, the policy off, nothing from sshd.
        let user_pub = std::fs::read_to_string(format!("{user}.pub")).unwrap();
        let s = settings(&listed, Some(ext));
        assert_eq!(
            check(&s, "sshd", "alice", Some(&info(&user_pub)), now()),
            Err(NotProven::NoCertificate)
        );
        assert_eq!(
            check(&s, "sudo", "alice", Some(&info(&good)), now()),
            Err(NotProven::OtherService)
        );
        assert_eq!(
            check(&s, "sshd", "alice", None, now()),
            Err(NotProven::NoAuthInfo)
        );
        assert_eq!(
            check(
                &settings(&[], None),
                "sshd",
                "alice",
                Some(&info(&good)),
                now()
            ),
            Err(NotProven::Off)
        );
        // A line that is not a key is refused, never trusted.
        let junk = check(
            &s,
            "sshd",
            "alice",
            Some("publickey ssh-ed25519-cert-v01@openssh.com !!!\n"),
            now(),
        );
        assert!(
            matches!(&junk, Err(NotProven::Refused(w)) if w.contains("unreadable")),
            "{junk:?}"
        );
    }

    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    /// The certificate's binary form (what the base64 holds).
    fn base64_decode(s: &str) -> Vec<u8> {
        let mut bits = 0u32;
        let mut n = 0;
        let mut out = Vec::new();
        for c in s.bytes().filter(|&c| c != b'=') {
            let v = B64.iter().position(|&t| t == c).unwrap() as u32;
            bits = bits << 6 | v;
            n += 6;
            if n >= 8 {
                n -= 8;
                out.push((bits >> n) as u8);
            }
        }
        out
    }

    fn base64_encode(b: &[u8]) -> String {
        let mut out = String::new();
        for chunk in b.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &c)| n | u32::from(c) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(char::from(B64[(n >> (18 - 6 * i)) as usize & 63]));
            }
        }
        while !out.len().is_multiple_of(4) {
            out.push('=');
        }
        out
    }
}
