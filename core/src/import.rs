//! Reading google-authenticator's `~/.google_authenticator` files, for taking users over.
//!
//! The format: the base32 secret on the first line, option lines starting with `"`
//! (`" TOTP_AUTH`, `" HOTP_COUNTER n`, `" WINDOW_SIZE n`, `" STEP_SIZE n`, ...), then
//! one 8-digit scratch code per line.

use thiserror::Error;
use zeroize::Zeroizing;

use crate::backup_codes::{BackupCodes, GenerateError, HashCost};
use crate::config::Config;
use crate::enroll::Enrollment;
use crate::random::Random;
use crate::totp::{Algorithm, SecretKey, TotpParams};

/// What an import takes over.
#[derive(Debug)]
pub struct GoogleAuthenticatorFile {
    /// The shared secret.
    pub secret: SecretKey,
    /// TOTP step size in seconds (`STEP_SIZE`, default 30).
    pub period: u64,
    /// Steps accepted either side of now, from `WINDOW_SIZE` (the total, default 3).
    pub window: u8,
    /// Unused scratch codes.
    pub scratch_codes: Vec<Zeroizing<String>>,
}

/// Why a file cannot be imported.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ImportError {
    /// The file is for counter-based (HOTP) codes, which twofactor does not do.
    #[error(
        "this is an HOTP (counter-based) file; twofactor supports time-based codes only: enrol the user with `twofactor enroll` instead"
    )]
    Hotp,
    /// The first line is not a usable secret.
    #[error("the first line is not a base32 secret of at least 80 bits")]
    BadSecret,
    /// An option or scratch line twofactor does not understand.
    #[error("line {line}: {what}")]
    BadLine { line: usize, what: String },
}

impl GoogleAuthenticatorFile {
    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<Self, ImportError> {
        let mut lines = text.lines();
        let secret = lines
            .next()
            .and_then(|l| SecretKey::from_base32(l.trim()))
            .ok_or(ImportError::BadSecret)?;
        let mut file = Self {
            secret,
            period: 30,
            window: 1,
            scratch_codes: Vec::new(),
        };
        let mut totp = false;
        for (i, raw) in lines.enumerate() {
            let line = i + 2;
            let l = raw.trim();
            if l.is_empty() {
                continue;
            }
            let bad = |what: &str| ImportError::BadLine {
                line,
                what: what.to_string(),
            };
            if let Some(option) = l.strip_prefix('"') {
                let mut words = option.split_whitespace();
                let number = |w: Option<&str>| w.and_then(|n| n.parse::<u64>().ok());
                match words.next() {
                    Some("TOTP_AUTH") => totp = true,
                    Some("HOTP_COUNTER") => return Err(ImportError::Hotp),
                    Some("STEP_SIZE") => {
                        file.period = number(words.next())
                            .filter(|p| (1..=300).contains(p))
                            .ok_or_else(|| bad("STEP_SIZE must be 1 to 300"))?;
                    }
                    Some("WINDOW_SIZE") => {
                        let size = number(words.next())
                            .filter(|s| (1..=21).contains(s))
                            .ok_or_else(|| bad("WINDOW_SIZE must be 1 to 21"))?;
                        file.window = ((size - 1) / 2) as u8;
                    }
                    // Rate limiting and reuse are policy here, and reuse is always refused.
                    Some("RATE_LIMIT" | "DISALLOW_REUSE") => {}
                    _ => return Err(bad("unknown option")),
                }
            } else if l.len() == 8 && l.bytes().all(|b| b.is_ascii_digit()) {
                file.scratch_codes.push(Zeroizing::new(l.to_string()));
            } else {
                return Err(bad("expected an option or an 8-digit scratch code"));
            }
        }
        if !totp {
            // A file without TOTP_AUTH is counter-based.
            return Err(ImportError::Hotp);
        }
        Ok(file)
    }
}

impl GoogleAuthenticatorFile {
    /// The imported authenticator as an enrollment (same secret; google-authenticator only
    /// makes 6-digit SHA1 codes).
    pub fn enrollment(&self, config: &Config, user: &str, host: &str) -> Enrollment {
        let params = TotpParams {
            algorithm: Algorithm::Sha1,
            digits: 6,
            period: self.period,
        };
        Enrollment::with_secret(config, self.secret.clone(), params, user, host)
    }

    /// The scratch codes, hashed as backup codes (`None` when there are none).
    pub fn backup_codes(
        &self,
        cost: HashCost,
        rng: &mut dyn Random,
    ) -> Result<Option<BackupCodes>, GenerateError> {
        let codes: Vec<&str> = self.scratch_codes.iter().map(|c| c.as_str()).collect();
        if codes.is_empty() {
            return Ok(None);
        }
        Ok(Some(BackupCodes::from_existing(&codes, cost, rng)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEH\n\" RATE_LIMIT 3 30 1700000000\n\" WINDOW_SIZE 17\n\" DISALLOW_REUSE 56666666\n\" TOTP_AUTH\n12345678\n87654321\n";

    #[test]
    fn parses_a_totp_file() {
        let f = GoogleAuthenticatorFile::parse(FILE).unwrap();
        assert_eq!(f.period, 30);
        assert_eq!(f.window, 8);
        assert_eq!(
            f.scratch_codes
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>(),
            ["12345678", "87654321"]
        );
        assert_eq!(
            f.secret,
            SecretKey::from_base32("JBSWY3DPEHPK3PXPJBSWY3DPEH").unwrap()
        );
        let stepped =
            GoogleAuthenticatorFile::parse("JBSWY3DPEHPK3PXP\n\" STEP_SIZE 60\n\" TOTP_AUTH\n")
                .unwrap();
        assert_eq!((stepped.period, stepped.window), (60, 1));
    }

    #[test]
    fn import_takes_over_secret_window_and_scratch_codes() {
        use crate::auth::{CodeResult, apply_code};
        use crate::backend::{Backend, Imported};
        let f = GoogleAuthenticatorFile::parse(FILE).unwrap();
        let d = tempfile::tempdir().unwrap();
        let store = crate::store::Store::create(&d.path().join("s"), crate::testing::me()).unwrap();
        let config = Config::default();
        let enrollment = f.enrollment(&config, "u", "h");
        let codes = f
            .backup_codes(
                crate::testing::CHEAP,
                &mut crate::random::SeededRandom::new(1),
            )
            .unwrap();
        let imported = |backup_codes| Imported {
            enrollment: &enrollment,
            window: f.window,
            backup_codes,
        };
        assert_eq!(store.import("u", imported(codes)).unwrap(), Some(2));
        assert_eq!(
            store.import("u", imported(None)).unwrap(),
            None,
            "already enrolled"
        );
        let mut state = store.load("u").unwrap();
        let now = 1_700_000_000;
        // A code 8 steps old is inside the imported window of 17.
        let old = f.secret.code_at_step(&TotpParams::default(), now / 30 - 8);
        assert_eq!(
            apply_code(&mut state, &old, &config, now).unwrap(),
            CodeResult::Totp
        );
        assert_eq!(
            apply_code(&mut state, "12345678", &config, now).unwrap(),
            CodeResult::BackupCode { left: 1 }
        );
        assert!(matches!(
            apply_code(&mut state, "12345678", &config, now).unwrap(),
            CodeResult::Wrong { .. }
        ));
    }

    #[test]
    fn refuses_hotp_and_junk() {
        assert_eq!(
            GoogleAuthenticatorFile::parse("JBSWY3DPEHPK3PXP\n\" HOTP_COUNTER 1\n").unwrap_err(),
            ImportError::Hotp
        );
        assert_eq!(
            GoogleAuthenticatorFile::parse("JBSWY3DPEHPK3PXP\n12345678\n").unwrap_err(),
            ImportError::Hotp
        );
        assert_eq!(
            GoogleAuthenticatorFile::parse("not-base32!\n").unwrap_err(),
            ImportError::BadSecret
        );
        assert_eq!(
            GoogleAuthenticatorFile::parse("").unwrap_err(),
            ImportError::BadSecret
        );
        assert!(matches!(
            GoogleAuthenticatorFile::parse("JBSWY3DPEHPK3PXP\n\" TOTP_AUTH\n\" FROBNICATE\n"),
            Err(ImportError::BadLine { line: 3, .. })
        ));
        assert!(matches!(
            GoogleAuthenticatorFile::parse("JBSWY3DPEHPK3PXP\n\" TOTP_AUTH\n1234\n"),
            Err(ImportError::BadLine { line: 3, .. })
        ));
    }
}
