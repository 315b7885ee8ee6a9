//! RFC 6238 time-based codes: parameters, secrets, and checking with replay protection.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, Zeroizing};

use crate::random::{Random, RandomError};

/// HMAC hash used to derive codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Algorithm {
    /// What every authenticator app supports.
    #[default]
    #[serde(rename = "SHA1")]
    Sha1,
    /// SHA-256.
    #[serde(rename = "SHA256")]
    Sha256,
    /// SHA-512.
    #[serde(rename = "SHA512")]
    Sha512,
}

impl Algorithm {
    /// The name used in config files and otpauth URIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA256",
            Self::Sha512 => "SHA512",
        }
    }

    fn to_totp_rs(self) -> totp_rs::Algorithm {
        match self {
            Self::Sha1 => totp_rs::Algorithm::SHA1,
            Self::Sha256 => totp_rs::Algorithm::SHA256,
            Self::Sha512 => totp_rs::Algorithm::SHA512,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_uppercase().replace('-', "").as_str() {
            "SHA1" => Ok(Self::Sha1),
            "SHA256" => Ok(Self::Sha256),
            "SHA512" => Ok(Self::Sha512),
            _ => Err(()),
        }
    }
}

/// How an authenticator computes its codes; stored with each secret so a later change
/// of the config does not break enrolled phones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TotpParams {
    /// HMAC hash.
    pub algorithm: Algorithm,
    /// 6 or 8.
    pub digits: u8,
    /// Seconds per step.
    pub period: u64,
}

impl Default for TotpParams {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::Sha1,
            digits: 6,
            period: 30,
        }
    }
}

impl TotpParams {
    /// The step a Unix time falls in.
    pub fn step_at(&self, now: u64) -> u64 {
        now / self.period.max(1)
    }
}

/// Bytes in a newly generated secret: 160 bits, as RFC 4226 recommends.
pub const SECRET_BYTES: usize = 20;
/// The shortest secret accepted (80 bits), which is what google-authenticator wrote.
pub const MIN_SECRET_BYTES: usize = 10;

/// A shared TOTP secret; wiped from memory when dropped, never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Zeroize)]
#[zeroize(drop)]
pub struct SecretKey(Vec<u8>);

impl SecretKey {
    /// A fresh 160-bit secret.
    pub fn generate(rng: &mut dyn Random) -> Result<Self, RandomError> {
        let mut bytes = vec![0u8; SECRET_BYTES];
        rng.fill(&mut bytes)?;
        Ok(Self(bytes))
    }

    /// A secret from raw bytes; `None` if shorter than 80 bits.
    pub fn from_bytes(bytes: Vec<u8>) -> Option<Self> {
        let key = Self(bytes);
        (key.0.len() >= MIN_SECRET_BYTES).then_some(key)
    }

    /// Parses base32 as typed into apps: case, spaces, dashes and padding are ignored.
    pub fn from_base32(text: &str) -> Option<Self> {
        let clean: Zeroizing<String> = Zeroizing::new(
            text.chars()
                .filter(|c| !matches!(c, ' ' | '-' | '=' | '\t'))
                .map(|c| c.to_ascii_uppercase())
                .collect(),
        );
        let bytes = base32::decode(base32::Alphabet::Rfc4648 { padding: false }, &clean)?;
        Self::from_bytes(bytes)
    }

    /// Unpadded upper-case base32, as in otpauth URIs.
    pub fn to_base32(&self) -> Zeroizing<String> {
        Zeroizing::new(base32::encode(
            base32::Alphabet::Rfc4648 { padding: false },
            &self.0,
        ))
    }

    /// Base32 in groups of four, easier to read aloud and type into a phone.
    pub fn to_base32_grouped(&self) -> Zeroizing<String> {
        let plain = self.to_base32();
        let mut out = Zeroizing::new(String::with_capacity(plain.len() * 5 / 4));
        for (i, c) in plain.chars().enumerate() {
            if i > 0 && i % 4 == 0 {
                out.push(' ');
            }
            out.push(c);
        }
        out
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The code for `step`, zero-padded to the configured number of digits.
    pub fn code_at_step(&self, params: &TotpParams, step: u64) -> Zeroizing<String> {
        Zeroizing::new(
            self.totp(params)
                .generate(step.saturating_mul(params.period))
                .to_string(),
        )
    }

    fn totp(&self, params: &TotpParams) -> totp_rs::Totp {
        // Our own checks (digits 6 or 8, period > 0, >= 80-bit key) replace totp-rs's
        // RFC checks, which would refuse the 80-bit keys imported from google-authenticator.
        totp_rs::Builder::new()
            .with_algorithm(params.algorithm.to_totp_rs())
            .with_digits(params.digits)
            .with_step_duration(params.period.max(1))
            .with_skew(0)
            .with_secret(self.0.clone())
            .build_noncompliant()
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl Serialize for SecretKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base32())
    }
}

impl<'de> Deserialize<'de> for SecretKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Zeroizing::new(String::deserialize(d)?);
        Self::from_base32(&text).ok_or_else(|| serde::de::Error::custom("invalid TOTP secret"))
    }
}

/// Strips the spaces and dashes people type between digit groups.
pub fn normalize(input: &str) -> Zeroizing<String> {
    Zeroizing::new(
        input
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '\t'))
            .collect(),
    )
}

/// The result of checking a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotpCheck {
    /// Valid for this step, which is newer than any accepted before.
    Accepted { step: u64 },
    /// Valid, but for a step at or before the last accepted one.
    Replayed { step: u64 },
    /// Not valid anywhere in the window (wrong, expired, or the clock is off).
    Wrong,
}

/// Checks `input` against `window` steps either side of `now`. Replay protection is not
/// optional: a code whose step is at or before `last_step` is [`TotpCheck::Replayed`].
///
/// Every step in the window is computed and compared in constant time, and the newest
/// matching step wins, so an equal code in an older step cannot shadow a fresh one.
pub fn check(
    key: &SecretKey,
    params: &TotpParams,
    window: u8,
    input: &str,
    now: u64,
    last_step: Option<u64>,
) -> TotpCheck {
    let code = normalize(input);
    if code.len() != usize::from(params.digits) || !code.bytes().all(|b| b.is_ascii_digit()) {
        return TotpCheck::Wrong;
    }
    let totp = key.totp(params);
    let current = params.step_at(now);
    let first = current.saturating_sub(u64::from(window));
    let last = current.saturating_add(u64::from(window));
    let mut newest = None;
    for step in first..=last {
        // totp-rs compares in constant time; skew is 0, so this checks exactly `step`.
        if totp
            .check(&code, step.saturating_mul(params.period))
            .is_some()
        {
            newest = Some(step);
        }
    }
    match (newest, last_step) {
        (None, _) => TotpCheck::Wrong,
        (Some(step), Some(used)) if step <= used => TotpCheck::Replayed { step },
        (Some(step), _) => TotpCheck::Accepted { step },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::{OsRandom, SeededRandom};
    use std::process::Command;

    fn params(algorithm: Algorithm, digits: u8) -> TotpParams {
        TotpParams {
            algorithm,
            digits,
            period: 30,
        }
    }

    // RFC 6238 Appendix B: the seeds are ASCII "1234567890" repeated to 20, 32, 64 bytes.
    fn rfc_key(algorithm: Algorithm) -> SecretKey {
        let len = match algorithm {
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
        };
        SecretKey(b"1234567890".iter().cycle().take(len).copied().collect())
    }

    const RFC6238: &[(u64, &str, &str, &str)] = &[
        (59, "94287082", "46119246", "90693936"),
        (1_111_111_109, "07081804", "68084774", "25091201"),
        (1_111_111_111, "14050471", "67062674", "99943326"),
        (1_234_567_890, "89005924", "91819424", "93441116"),
        (2_000_000_000, "69279037", "90698825", "38618901"),
        (20_000_000_000, "65353130", "77737706", "47863826"),
    ];

    #[test]
    fn rfc6238_vectors_generate_and_check() {
        for &(time, sha1, sha256, sha512) in RFC6238 {
            for (alg, expected) in [
                (Algorithm::Sha1, sha1),
                (Algorithm::Sha256, sha256),
                (Algorithm::Sha512, sha512),
            ] {
                let key = rfc_key(alg);
                let p = params(alg, 8);
                assert_eq!(
                    &*key.code_at_step(&p, p.step_at(time)),
                    expected,
                    "{alg} at {time}"
                );
                assert_eq!(
                    check(&key, &p, 0, expected, time, None),
                    TotpCheck::Accepted { step: time / 30 }
                );
                // The 6-digit code is the low six digits of the 8-digit one.
                let p6 = params(alg, 6);
                assert_eq!(
                    check(&key, &p6, 0, &expected[2..], time, None),
                    TotpCheck::Accepted { step: time / 30 }
                );
            }
        }
    }

    #[test]
    fn window_edges() {
        let key = rfc_key(Algorithm::Sha1);
        let p = params(Algorithm::Sha1, 6);
        let now = 1_234_567_890;
        let step = p.step_at(now);
        for (offset, window, accepted) in [
            (-1i64, 1u8, true),
            (1, 1, true),
            (-2, 1, false),
            (2, 1, false),
            (2, 2, true),
            (-1, 0, false),
            (0, 0, true),
        ] {
            let s = step.checked_add_signed(offset).unwrap();
            let code = key.code_at_step(&p, s);
            let got = check(&key, &p, window, &code, now, None);
            let want = if accepted {
                TotpCheck::Accepted { step: s }
            } else {
                TotpCheck::Wrong
            };
            assert_eq!(got, want, "offset {offset} window {window}");
        }
    }

    #[test]
    fn replay_is_refused_at_and_before_the_last_step() {
        let key = rfc_key(Algorithm::Sha1);
        let p = params(Algorithm::Sha1, 6);
        let now = 1_000_000_020;
        let step = p.step_at(now);
        let code = key.code_at_step(&p, step);
        assert_eq!(
            check(&key, &p, 1, &code, now, Some(step)),
            TotpCheck::Replayed { step }
        );
        assert_eq!(
            check(&key, &p, 1, &code, now, Some(step + 1)),
            TotpCheck::Replayed { step }
        );
        assert_eq!(
            check(&key, &p, 1, &code, now, Some(step - 1)),
            TotpCheck::Accepted { step }
        );
        // The previous step's code is refused once the current one has been used.
        let older = key.code_at_step(&p, step - 1);
        assert_eq!(
            check(&key, &p, 1, &older, now, Some(step)),
            TotpCheck::Replayed { step: step - 1 }
        );
    }

    #[test]
    fn input_is_normalised_and_junk_is_wrong() {
        let key = rfc_key(Algorithm::Sha1);
        let p = params(Algorithm::Sha1, 6);
        let code = key.code_at_step(&p, p.step_at(59));
        let spaced = format!(" {}-{} ", &code[..3], &code[3..]);
        assert!(matches!(
            check(&key, &p, 0, &spaced, 59, None),
            TotpCheck::Accepted { .. }
        ));
        for junk in [
            "",
            "12345",
            "1234567",
            "abcdef",
            "+12345",
            "１２３４５６",
            "\0\0\0\0\0\0",
        ] {
            assert_eq!(
                check(&key, &p, 1, junk, 59, None),
                TotpCheck::Wrong,
                "{junk:?}"
            );
        }
    }

    #[test]
    fn secret_round_trips_and_stays_out_of_debug() {
        let key = SecretKey::generate(&mut SeededRandom::new(3)).unwrap();
        assert_eq!(key.as_bytes().len(), SECRET_BYTES);
        let b32 = key.to_base32();
        assert_eq!(b32.len(), 32);
        assert_eq!(
            SecretKey::from_base32(&key.to_base32_grouped().to_lowercase()).unwrap(),
            key
        );
        assert!(!format!("{key:?}").contains(&*b32));
        assert!(
            SecretKey::from_base32("JBSWY3DP").is_none(),
            "40-bit keys are too short"
        );
        assert!(SecretKey::from_base32("not base32!").is_none());
    }

    /// Codes from oathtool (an independent implementation) for random secrets at fixed times.
    #[test]
    fn agrees_with_oathtool() {
        let mut rng = OsRandom;
        for (alg, flag, digits) in [
            (Algorithm::Sha1, "sha1", 6u8),
            (Algorithm::Sha256, "sha256", 8),
            (Algorithm::Sha512, "sha512", 6),
            (Algorithm::Sha1, "sha1", 8),
        ] {
            let key = SecretKey::generate(&mut rng).unwrap();
            for time in [59u64, 1_111_111_111, 1_700_000_000, 2_000_000_000] {
                let p = TotpParams {
                    algorithm: alg,
                    digits,
                    period: 30,
                };
                let out = Command::new("oathtool")
                    .args([
                        &format!("--totp={flag}"),
                        "-b",
                        "-d",
                        &digits.to_string(),
                        "-s",
                        "30s",
                    ])
                    .arg(format!("--now=@{time}"))
                    .arg(&*key.to_base32())
                    .output()
                    .expect("oathtool must be installed (apt-get install oathtool)");
                assert!(
                    out.status.success(),
                    "oathtool failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let code = String::from_utf8(out.stdout).unwrap();
                assert_eq!(
                    check(&key, &p, 0, code.trim(), time, None),
                    TotpCheck::Accepted { step: time / 30 }
                );
            }
        }
    }
}
