//! Single-use backup codes: 50 random bits each, stored only as salted argon2id hashes.
//!
//! All codes of one generation share a fresh salt, so checking an attempt costs exactly
//! one hash (then a constant-time comparison against each stored hash) instead of one
//! hash per stored code.

use argon2::{Argon2, Params, Version};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::random::{Random, RandomError};

/// Crockford's base32 alphabet: no I, L, O or U, so codes survive being read aloud.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
/// Characters per code: 10 x 5 bits = 50 bits of entropy.
pub const CODE_CHARS: usize = 10;
const SALT_BYTES: usize = 16;
const HASH_BYTES: usize = 32;

/// argon2id cost parameters, kept with the hashes so they can be raised later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashCost {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Iterations.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl HashCost {
    /// 16 MiB, 2 passes, 1 lane: about 21 ms per check on one core of a current server,
    /// inside the 50 ms budget of a login attempt. Measured by
    /// `cargo bench -p twofactor-core --bench backup_code_cost`.
    pub const DEFAULT: Self = Self {
        m_kib: 16 * 1024,
        t: 2,
        p: 1,
    };
}

/// A backup-code hashing failure (bad stored parameters), which fails the login closed.
#[derive(Debug, Error)]
#[error("backup code hashing failed: {0}")]
pub struct HashError(String);

/// The stored form of one generation of backup codes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupCodes {
    cost: HashCost,
    #[serde(with = "hex_bytes")]
    salt: Vec<u8>,
    #[serde(with = "hex_list")]
    hashes: Vec<Vec<u8>>,
}

impl std::fmt::Debug for BackupCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupCodes")
            .field("remaining", &self.hashes.len())
            .finish_non_exhaustive()
    }
}

/// Freshly generated plaintext codes, shown to the user once and then dropped (wiped).
#[derive(Debug)]
pub struct NewCodes(pub Vec<Zeroizing<String>>);

/// Formats a canonical code as `xxxxx-xxxxx`.
fn display(code: &str) -> String {
    format!("{}-{}", &code[..CODE_CHARS / 2], &code[CODE_CHARS / 2..])
}

/// Length of google-authenticator's scratch codes, accepted after an import.
pub const SCRATCH_DIGITS: usize = 8;

/// Puts typed input in canonical form: no spaces or dashes, lower case, with the
/// look-alikes O -> 0 and I, L -> 1. `None` if it cannot be a backup code: ten
/// characters of ours, or eight digits of an imported google-authenticator scratch code.
pub fn normalize(input: &str) -> Option<Zeroizing<String>> {
    let mut out = Zeroizing::new(String::with_capacity(CODE_CHARS));
    for c in input.chars() {
        let c = match c.to_ascii_lowercase() {
            ' ' | '-' | '\t' => continue,
            'o' => '0',
            'i' | 'l' => '1',
            c if c.is_ascii() && ALPHABET.contains(&(c as u8)) => c,
            _ => return None,
        };
        if out.len() == CODE_CHARS {
            return None;
        }
        out.push(c);
    }
    let scratch = out.len() == SCRATCH_DIGITS && out.bytes().all(|b| b.is_ascii_digit());
    (out.len() == CODE_CHARS || scratch).then_some(out)
}

/// One random code in canonical form.
fn new_code(rng: &mut dyn Random) -> Result<Zeroizing<String>, RandomError> {
    let mut raw = Zeroizing::new([0u8; CODE_CHARS]);
    rng.fill(&mut raw[..])?;
    // 32 divides 256, so masking keeps every character equally likely.
    Ok(Zeroizing::new(
        raw.iter()
            .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
            .collect(),
    ))
}

/// `count` distinct new codes, unhashed, for a backend that hashes them itself: the
/// canonical forms to store, and the forms to show.
pub fn generate_plain(
    count: usize,
    rng: &mut dyn Random,
) -> Result<(Vec<Zeroizing<String>>, NewCodes), RandomError> {
    let mut canonical: Vec<Zeroizing<String>> = Vec::with_capacity(count);
    while canonical.len() < count {
        let code = new_code(rng)?;
        if !canonical.contains(&code) {
            canonical.push(code);
        }
    }
    let shown = canonical
        .iter()
        .map(|c| Zeroizing::new(display(c)))
        .collect();
    Ok((canonical, NewCodes(shown)))
}

impl BackupCodes {
    /// Makes `count` new codes. The returned [`BackupCodes`] replaces any older ones.
    pub fn generate(
        count: usize,
        cost: HashCost,
        rng: &mut dyn Random,
    ) -> Result<(Self, NewCodes), GenerateError> {
        let mut salt = vec![0u8; SALT_BYTES];
        rng.fill(&mut salt)?;
        let mut stored = Self {
            cost,
            salt,
            hashes: Vec::with_capacity(count),
        };
        let mut shown = Vec::with_capacity(count);
        while shown.len() < count {
            let code = new_code(rng)?;
            let hash = stored.hash(&code)?;
            if stored.hashes.iter().any(|h| h == &hash) {
                continue; // a repeat within one generation would be spent twice at once
            }
            stored.hashes.push(hash);
            shown.push(Zeroizing::new(display(&code)));
        }
        Ok((stored, NewCodes(shown)))
    }

    /// Stores existing codes (google-authenticator scratch codes) as hashes. Codes that
    /// are not valid backup codes are refused, so nothing unusable is stored.
    pub fn from_existing(
        codes: &[&str],
        cost: HashCost,
        rng: &mut dyn Random,
    ) -> Result<Self, GenerateError> {
        let mut salt = vec![0u8; SALT_BYTES];
        rng.fill(&mut salt)?;
        let mut stored = Self {
            cost,
            salt,
            hashes: Vec::with_capacity(codes.len()),
        };
        for code in codes {
            let canonical =
                normalize(code).ok_or_else(|| HashError("not a valid backup code".into()))?;
            let hash = stored.hash(&canonical)?;
            if !stored.hashes.contains(&hash) {
                stored.hashes.push(hash);
            }
        }
        Ok(stored)
    }

    /// Codes not yet used.
    pub fn remaining(&self) -> usize {
        self.hashes.len()
    }

    /// Spends `input` if it is an unused code: one argon2id hash, then a constant-time
    /// comparison with every stored hash. Returns whether a code was spent.
    pub fn try_spend(&mut self, input: &str) -> Result<bool, HashError> {
        let Some(code) = normalize(input) else {
            return Ok(false);
        };
        let hash = self.hash(&code)?;
        let mut found = None;
        for (i, stored) in self.hashes.iter().enumerate() {
            if bool::from(stored.as_slice().ct_eq(&hash)) {
                found = Some(i);
            }
        }
        Ok(match found {
            Some(i) => {
                self.hashes.swap_remove(i);
                true
            }
            None => false,
        })
    }

    fn hash(&self, code: &str) -> Result<Vec<u8>, HashError> {
        let params = Params::new(self.cost.m_kib, self.cost.t, self.cost.p, Some(HASH_BYTES))
            .map_err(|e| HashError(e.to_string()))?;
        let mut out = vec![0u8; HASH_BYTES];
        Argon2::new(argon2::Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(code.as_bytes(), &self.salt, &mut out)
            .map_err(|e| HashError(e.to_string()))?;
        Ok(out)
    }
}

/// Making new codes failed.
#[derive(Debug, Error)]
pub enum GenerateError {
    /// No randomness.
    #[error(transparent)]
    Random(#[from] RandomError),
    /// Bad cost parameters.
    #[error(transparent)]
    Hash(#[from] HashError),
}

pub(crate) mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&to_hex(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        from_hex(&String::deserialize(d)?).ok_or_else(|| serde::de::Error::custom("invalid hex"))
    }

    pub fn to_hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(s: &str) -> Option<Vec<u8>> {
        if !s.len().is_multiple_of(2) {
            return None;
        }
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
            .collect()
    }
}

mod hex_list {
    use super::hex_bytes::{from_hex, to_hex};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(list: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(list.iter().map(|b| to_hex(b)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| from_hex(s).ok_or_else(|| serde::de::Error::custom("invalid hex")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::{OsRandom, SeededRandom};
    use crate::testing::CHEAP;

    /// Small cost so tests stay quick; the real cost is measured separately.

    #[test]
    fn generates_count_distinct_readable_codes() {
        let (stored, NewCodes(codes)) = BackupCodes::generate(10, CHEAP, &mut OsRandom).unwrap();
        assert_eq!(codes.len(), 10);
        assert_eq!(stored.remaining(), 10);
        for code in &codes {
            assert_eq!(code.len(), 11);
            assert_eq!(code.as_bytes()[5], b'-');
            assert!(
                code.chars()
                    .filter(|c| *c != '-')
                    .all(|c| ALPHABET.contains(&(c as u8)))
            );
        }
        let mut unique: Vec<_> = codes.iter().map(|c| c.to_string()).collect();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 10);
    }

    #[test]
    fn each_code_works_once() {
        let (mut stored, NewCodes(codes)) =
            BackupCodes::generate(3, CHEAP, &mut SeededRandom::new(5)).unwrap();
        assert!(stored.try_spend(&codes[1]).unwrap());
        assert_eq!(stored.remaining(), 2);
        assert!(
            !stored.try_spend(&codes[1]).unwrap(),
            "a spent code must not work again"
        );
        assert!(stored.try_spend(&codes[0]).unwrap());
        assert!(stored.try_spend(&codes[2]).unwrap());
        assert_eq!(stored.remaining(), 0);
    }

    #[test]
    fn input_is_case_space_dash_and_lookalike_insensitive() {
        let (mut stored, NewCodes(codes)) =
            BackupCodes::generate(1, CHEAP, &mut SeededRandom::new(8)).unwrap();
        let typed: String = codes[0]
            .chars()
            .filter(|c| *c != '-')
            .map(|c| match c {
                '0' => 'O',
                '1' => 'l',
                c => c.to_ascii_uppercase(),
            })
            .collect();
        let typed = format!("{} {}", &typed[..3], &typed[3..]);
        assert!(
            stored.try_spend(&typed).unwrap(),
            "{typed} should match {}",
            &*codes[0]
        );
    }

    #[test]
    fn non_codes_are_not_hashed_or_accepted() {
        for junk in [
            "",
            "123456",
            "abcde-fghij-k",
            "abcdefghiu",
            "ééééééééé",
            "abcde\0fghi",
        ] {
            assert!(normalize(junk).is_none(), "{junk:?}");
        }
        let (mut stored, _) = BackupCodes::generate(2, CHEAP, &mut SeededRandom::new(1)).unwrap();
        assert!(!stored.try_spend("00000-00000").unwrap());
        assert_eq!(stored.remaining(), 2);
    }

    #[test]
    fn imported_scratch_codes_work_once() {
        let mut stored =
            BackupCodes::from_existing(&["12345678", "87654321"], CHEAP, &mut SeededRandom::new(3))
                .unwrap();
        assert_eq!(stored.remaining(), 2);
        assert!(stored.try_spend("1234 5678").unwrap());
        assert!(!stored.try_spend("12345678").unwrap());
        assert!(BackupCodes::from_existing(&["123"], CHEAP, &mut SeededRandom::new(3)).is_err());
    }

    #[test]
    fn regenerating_replaces_old_codes() {
        let mut rng = SeededRandom::new(77);
        let (_, NewCodes(old)) = BackupCodes::generate(2, CHEAP, &mut rng).unwrap();
        let (mut new, _) = BackupCodes::generate(2, CHEAP, &mut rng).unwrap();
        assert!(!new.try_spend(&old[0]).unwrap());
        assert!(!new.try_spend(&old[1]).unwrap());
    }

    #[test]
    fn stored_form_has_no_plaintext() {
        let (stored, NewCodes(codes)) =
            BackupCodes::generate(4, CHEAP, &mut SeededRandom::new(2)).unwrap();
        let json = serde_json::to_string(&stored).unwrap();
        for code in &codes {
            assert!(!json.contains(&code.replace('-', "")));
            assert!(!json.contains(code.as_str()));
        }
        let back: BackupCodes = serde_json::from_str(&json).unwrap();
        assert_eq!(back, stored);
        assert!(!format!("{stored:?}").contains(&json[..20]));
    }

    /// Each code carries at least 50 bits: 10 characters from a 32-letter alphabet,
    /// and the generator uses every letter.
    #[test]
    fn entropy_is_at_least_50_bits() {
        assert!(CODE_CHARS as f64 * (ALPHABET.len() as f64).log2() >= 50.0);
        let (_, NewCodes(codes)) = BackupCodes::generate(40, CHEAP, &mut OsRandom).unwrap();
        let seen: std::collections::HashSet<char> = codes
            .iter()
            .flat_map(|c| c.chars())
            .filter(|c| *c != '-')
            .collect();
        assert!(
            seen.len() > 28,
            "only {} distinct characters in 400",
            seen.len()
        );
    }
}
