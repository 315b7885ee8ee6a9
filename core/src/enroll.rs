//! Enrollment: a new secret, its otpauth URI, and saving it only once a code verifies.

use thiserror::Error;
use zeroize::Zeroizing;

use crate::backend::{Backend, BackendError};
use crate::backup_codes::{BackupCodes, GenerateError, HashCost, NewCodes};
use crate::config::Config;
use crate::qr::{self, QrStyle};
use crate::random::{Random, RandomError};
use crate::store::{Authenticator, UserState};
use crate::totp::{self, SecretKey, TotpCheck, TotpParams};

/// An authenticator being set up: shown to the user, saved by
/// [`crate::backend::Backend::enroll`] only once a code from it verifies.
#[derive(Debug, Clone)]
pub struct Enrollment {
    secret: SecretKey,
    params: TotpParams,
    issuer: String,
    account: String,
}

/// The code given to confirm an enrollment did not match.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfirmError {
    /// Not valid for the new secret in the window around now.
    #[error("that code does not match the new key; check the phone's clock and try the next code")]
    Wrong,
}

/// How a confirmed enrollment is saved.
#[derive(Debug, Clone, Copy)]
pub struct SaveSettings {
    /// `totp.window` for the first code.
    pub window: u8,
    /// `backup_codes.count`: how many fresh backup codes go with it (0: none).
    pub backup_codes: usize,
}

/// Replaces `state`'s backup codes with `count` fresh ones (none when `count` is 0) and
/// returns them to be shown once.
pub fn new_backup_codes(
    state: &mut UserState,
    count: usize,
    cost: HashCost,
    rng: &mut dyn Random,
) -> Result<NewCodes, GenerateError> {
    if count == 0 {
        state.backup_codes = None;
        return Ok(NewCodes(Vec::new()));
    }
    let (stored, shown) = BackupCodes::generate(count, cost, rng)?;
    state.backup_codes = Some(stored);
    Ok(shown)
}

/// The machine's host name, for labels and the default issuer.
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// What an enrollment's issuer falls back to when `enroll.issuer` is unset: the store's
/// (a fleet's), else `host`. On a fleet, one enrollment serves every host, so a host's or
/// an admin machine's name would be the wrong label. A config that names an issuer other
/// than the fleet's is an error: the app would show two names for one account.
pub fn issuer_for(
    config: &Config,
    backend: &dyn Backend,
    host: &str,
) -> Result<String, BackendError> {
    let stored = backend.issuer()?;
    match (&config.enroll.issuer, stored) {
        (Some(own), Some(fleet)) if *own != fleet => Err(BackendError::Refused(format!(
            "enroll.issuer is \"{own}\" but the fleet's issuer is \"{fleet}\": make them agree \
             ('twofactor fleet init --issuer' sets the fleet's)"
        ))),
        (_, Some(fleet)) => Ok(fleet),
        (Some(own), None) => Ok(own.clone()),
        (None, None) => Ok(host.to_string()),
    }
}

/// RFC 3986 percent-encoding of everything but unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Enrollment {
    /// A fresh secret with the config's parameters, for `user` on `host`.
    pub fn new(
        config: &Config,
        user: &str,
        host: &str,
        rng: &mut dyn Random,
    ) -> Result<Self, RandomError> {
        let secret = SecretKey::generate(rng)?;
        Ok(Self::with_secret(
            config,
            secret,
            config.totp.params,
            user,
            host,
        ))
    }

    /// An enrollment of an existing secret (an import).
    pub fn with_secret(
        config: &Config,
        secret: SecretKey,
        params: TotpParams,
        user: &str,
        host: &str,
    ) -> Self {
        let issuer = config
            .enroll
            .issuer
            .clone()
            .unwrap_or_else(|| host.to_string());
        // ':' separates issuer and account in the label, so it cannot appear in either.
        // The account is the user alone: the host is in the issuer, which defaults to it,
        // and every character left out of the URI makes the QR code smaller.
        let issuer = issuer.replace(':', "-");
        let account = user.replace(':', "-");
        Self {
            secret,
            params,
            issuer,
            account,
        }
    }

    /// The new secret.
    pub fn secret(&self) -> &SecretKey {
        &self.secret
    }

    /// Its parameters.
    pub fn params(&self) -> &TotpParams {
        &self.params
    }

    /// `issuer:user`, the account name apps show.
    pub fn label(&self) -> String {
        format!("{}:{}", self.issuer, self.account)
    }

    /// The issuer shown in the app.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The `otpauth://totp/...` URI that QR codes carry, in the Key URI format the
    /// authenticator apps read: `algorithm`, `digits` and `period` only where they differ
    /// from the format's defaults (SHA1, 6, 30), so the QR code stays small.
    pub fn otpauth_uri(&self) -> Zeroizing<String> {
        let defaults = TotpParams::default();
        let mut uri = Zeroizing::new(format!(
            "otpauth://totp/{}:{}?secret={}&issuer={}",
            encode(&self.issuer),
            encode(&self.account),
            &*self.secret.to_base32(),
            encode(&self.issuer),
        ));
        if self.params.algorithm != defaults.algorithm {
            uri.push_str(&format!("&algorithm={}", self.params.algorithm));
        }
        if self.params.digits != defaults.digits {
            uri.push_str(&format!("&digits={}", self.params.digits));
        }
        if self.params.period != defaults.period {
            uri.push_str(&format!("&period={}", self.params.period));
        }
        uri
    }

    /// What to scan or type, as the login and `twofactor enroll` both show it: the
    /// account, the code type and the otpauth URI, then the QR code (if `style` draws
    /// one), then the key in groups. What the user acts on comes last, so that with the
    /// prompt after it, it stays on an 80x24 screen while the rest scrolls away.
    pub fn scan_or_type(&self, style: QrStyle, invert: bool) -> String {
        let uri = self.otpauth_uri();
        let p = &self.params;
        let mut t = String::new();
        t.push_str(&format!("Account: {}\n", self.label()));
        t.push_str(&format!(
            "Type:    time-based, {}, {} digits, every {} seconds\n",
            p.algorithm, p.digits, p.period
        ));
        t.push_str(&format!("URI:     {}\n", &*uri));
        if let Some(picture) = qr::render(&uri, style, invert) {
            t.push_str(&picture);
        }
        t.push_str(&format!("Key:     {}\n", &*self.secret.to_base32_grouped()));
        t
    }

    /// Checks `code` against the new secret and, if it matches, installs the authenticator
    /// in `state`, replacing any old one. The code's step counts as used. Returns the step.
    pub fn confirm(
        &self,
        state: &mut UserState,
        code: &str,
        window: u8,
        now: u64,
    ) -> Result<u64, ConfirmError> {
        let step = self.check(code, window, now).ok_or(ConfirmError::Wrong)?;
        self.install(state, now, Some(step));
        Ok(step)
    }

    /// The step `code` matches for the new secret, within `window` steps of `now`.
    pub fn check(&self, code: &str, window: u8, now: u64) -> Option<u64> {
        match totp::check(&self.secret, &self.params, window, code, now, None) {
            TotpCheck::Accepted { step } => Some(step),
            TotpCheck::Replayed { .. } | TotpCheck::Wrong => None,
        }
    }

    /// Installs the authenticator without a code (admin provisioning, imports).
    pub fn install(&self, state: &mut UserState, now: u64, last_step: Option<u64>) {
        state.authenticator = Some(Authenticator {
            secret: self.secret.clone(),
            params: self.params,
            enabled: true,
            enrolled_at: now,
            last_step,
            window: None,
        });
        state.grace_logins_used = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRandom;
    use crate::totp::Algorithm;

    #[test]
    fn uri_has_label_issuer_and_parameters() {
        let mut config = Config::default();
        config.enroll.issuer = Some("Acme Corp".into());
        let e = Enrollment::new(&config, "alice", "web1", &mut SeededRandom::new(1)).unwrap();
        let uri = e.otpauth_uri();
        let secret = e.secret().to_base32();
        assert_eq!(
            *uri,
            format!(
                "otpauth://totp/Acme%20Corp:alice?secret={}&issuer=Acme%20Corp",
                &*secret
            )
        );
        assert_eq!(e.label(), "Acme Corp:alice");
    }

    /// Only what differs from the Key URI format's defaults (SHA1, 6 digits, 30 s) is
    /// written; each non-default is, under the names the apps read.
    #[test]
    fn uri_carries_only_parameters_that_differ_from_the_defaults() {
        let config = Config::default();
        let secret = SecretKey::generate(&mut SeededRandom::new(3)).unwrap();
        let uri = |params: TotpParams| {
            let e = Enrollment::with_secret(&config, secret.clone(), params, "al", "h1");
            let uri = e.otpauth_uri().to_string();
            uri.split_once('?').unwrap().1.to_string()
        };
        let base = format!("secret={}&issuer=h1", &*secret.to_base32());
        let defaults = TotpParams::default();
        assert_eq!(uri(defaults), base);
        let eight = TotpParams {
            digits: 8,
            ..defaults
        };
        assert_eq!(uri(eight), format!("{base}&digits=8"));
        let sixty = TotpParams {
            period: 60,
            ..defaults
        };
        assert_eq!(uri(sixty), format!("{base}&period=60"));
        let sha256 = TotpParams {
            algorithm: Algorithm::Sha256,
            ..defaults
        };
        assert_eq!(uri(sha256), format!("{base}&algorithm=SHA256"));
    }

    #[test]
    fn issuer_defaults_to_host() {
        let e =
            Enrollment::new(&Config::default(), "bob", "db2", &mut SeededRandom::new(1)).unwrap();
        assert_eq!(e.label(), "db2:bob");
        assert!(!host_name().is_empty());
    }

    #[test]
    fn confirm_saves_only_a_verified_secret_and_marks_the_step_used() {
        let e = Enrollment::new(&Config::default(), "c", "h", &mut SeededRandom::new(2)).unwrap();
        let mut state = UserState {
            grace_logins_used: 2,
            ..UserState::default()
        };
        let now = 1_700_000_015;
        assert_eq!(
            e.confirm(&mut state, "000000", 1, now),
            Err(ConfirmError::Wrong)
        );
        assert!(!state.is_enrolled());
        let code = e.secret().code_at_step(e.params(), now / 30);
        assert_eq!(e.confirm(&mut state, &code, 1, now), Ok(now / 30));
        let auth = state.authenticator.as_ref().unwrap();
        assert_eq!(auth.last_step, Some(now / 30));
        assert_eq!(state.grace_logins_used, 0);
        // The confirming code cannot be used again to log in.
        assert!(matches!(
            totp::check(&auth.secret, &auth.params, 1, &code, now, auth.last_step),
            TotpCheck::Replayed { .. }
        ));
    }
}
