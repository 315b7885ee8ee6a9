//! The file store as a [`Backend`]: each operation is one [`Store::update`] (or
//! [`Store::hold`]) under the user's lock, so it is atomic and durable.

use crate::auth::{self, CodeResult, Purpose};
use crate::backup_codes::NewCodes;
use crate::config::Config;
use crate::enroll::{Enrollment, SaveSettings, new_backup_codes};
use crate::random::{OsRandom, Random};
use crate::store::{Held, Store, UserState};
use crate::trusted::RemoteHost;

use super::{
    AuthenticatorId, Authority, Backend, BackendError, Checked, Enrolled, Imported, Revoke,
    UserFacts, Verified, needs_proof,
};

impl Backend for Store {
    fn facts(&self, user: &str) -> Result<UserFacts, BackendError> {
        Ok(UserFacts::from(&self.load(user)?))
    }

    fn users(&self) -> Result<Vec<String>, BackendError> {
        Ok(Store::users(self)?)
    }

    fn verify(
        &self,
        user: &str,
        code: &str,
        purpose: Purpose,
        config: &Config,
    ) -> Result<Checked, BackendError> {
        let now = self.now();
        let result = self.hold(user, |held| {
            charge_then_check(held, code, config, now, purpose)
        })?;
        let proof = result.is_success().then(|| Verified::new(user, None));
        Ok(Checked { result, proof })
    }

    fn enroll(
        &self,
        user: &str,
        enrollment: &Enrollment,
        first_code: Option<&str>,
        expected: Option<&AuthenticatorId>,
        authority: Option<Authority>,
        settings: SaveSettings,
        rng: &mut dyn Random,
    ) -> Result<Enrolled, BackendError> {
        let now = self.now();
        if first_code.is_none() && !matches!(authority, Some(Authority::Admin)) {
            return Err(BackendError::Refused(
                "saving an authenticator without a code from it is for administrators".into(),
            ));
        }
        if let Some(a) = &authority {
            a.covers(user)?;
        }
        // The code first, as the database checks it: a mistyped one changes nothing.
        let step = match first_code {
            Some(code) => match enrollment.check(code, settings.window, now) {
                Some(step) => Some(step),
                None => return Ok(Enrolled::Mismatch(authority)),
            },
            None => None,
        };
        self.update(user, |s| {
            let current = s
                .authenticator
                .as_ref()
                .map(|a| AuthenticatorId::of(&a.secret));
            if current.as_ref() != expected {
                return Err(BackendError::Changed(user.to_string()));
            }
            // A turned-off authenticator cannot log in: a required user replaces it at
            // login without proof of it, as on the database.
            if s.authenticator.as_ref().is_some_and(|a| a.enabled) && authority.is_none() {
                return Err(needs_proof("replacing an authenticator"));
            }
            enrollment.install(s, now, step);
            Ok(Enrolled::Saved(new_backup_codes(
                s,
                settings.backup_codes,
                self.hash_cost(),
                rng,
            )?))
        })
    }

    fn import(&self, user: &str, imported: Imported<'_>) -> Result<Option<usize>, BackendError> {
        let now = self.now();
        self.update(user, |s| -> Result<_, BackendError> {
            if s.is_enrolled() {
                return Ok(None);
            }
            imported.enrollment.install(s, now, None);
            if let Some(a) = s.authenticator.as_mut() {
                a.window = Some(imported.window);
            }
            s.backup_codes = imported.backup_codes;
            Ok(Some(s.backup_codes_left()))
        })
    }

    fn count_grace_login(&self, user: &str, allowed: u32) -> Result<Option<u32>, BackendError> {
        self.update(user, |s| -> Result<_, BackendError> {
            if s.grace_logins_used >= allowed {
                return Ok(None);
            }
            s.grace_logins_used += 1;
            Ok(Some(allowed - s.grace_logins_used))
        })
    }

    fn trust_host(
        &self,
        proof: Verified,
        service: &str,
        host: &RemoteHost,
        days: u32,
    ) -> Result<String, BackendError> {
        let now = self.now();
        self.update(proof.user(), |s| -> Result<_, BackendError> {
            Ok(s.trusted_devices
                .add(service, host, now, days, &mut OsRandom)?)
        })
    }

    fn revoke_trust(
        &self,
        user: &str,
        authority: Authority,
        which: Revoke<'_>,
    ) -> Result<usize, BackendError> {
        authority.covers(user)?;
        self.update(user, |s| -> Result<_, BackendError> {
            Ok(match which {
                Revoke::All => s.trusted_devices.revoke_all(),
                Revoke::One(id) => usize::from(s.trusted_devices.revoke(id)),
            })
        })
    }

    fn set_enabled(
        &self,
        user: &str,
        authority: Authority,
        enabled: bool,
    ) -> Result<bool, BackendError> {
        authority.covers(user)?;
        self.update(user, |s| -> Result<_, BackendError> {
            Ok(s.authenticator
                .as_mut()
                .map(|a| a.enabled = enabled)
                .is_some())
        })
    }

    fn remove_authenticator(&self, user: &str, authority: Authority) -> Result<bool, BackendError> {
        authority.covers(user)?;
        self.update(user, |s| -> Result<_, BackendError> {
            let had = s.is_enrolled();
            s.authenticator = None;
            s.backup_codes = None;
            s.trusted_devices.revoke_all();
            Ok(had)
        })
    }

    fn reset(&self, user: &str) -> Result<(), BackendError> {
        self.update(user, |s| -> Result<_, BackendError> {
            *s = UserState::default();
            Ok(())
        })
    }

    fn unlock(&self, user: &str) -> Result<Option<u64>, BackendError> {
        let now = self.now();
        self.update(user, |s| -> Result<_, BackendError> {
            let was = s.lockout.locked_for(now);
            s.lockout.unlock();
            Ok(was)
        })
    }

    fn new_backup_codes(
        &self,
        user: &str,
        authority: Authority,
        count: usize,
        rng: &mut dyn Random,
    ) -> Result<Option<NewCodes>, BackendError> {
        authority.covers(user)?;
        self.update(user, |s| -> Result<_, BackendError> {
            if !s.is_enrolled() {
                return Ok(None);
            }
            Ok(Some(new_backup_codes(s, count, self.hash_cost(), rng)?))
        })
    }
}

/// The attempt is made durable as a failure first (see [`crate::auth`]); the code is
/// looked at only once that write succeeded.
fn charge_then_check(
    held: &mut Held<'_>,
    input: &str,
    config: &Config,
    now: u64,
    purpose: Purpose,
) -> Result<CodeResult, BackendError> {
    let before = held.state.clone();
    if let Some(result) = auth::refuse_unchecked(&before, now, purpose) {
        return Ok(result);
    }
    held.state.lockout.record_failure(&config.lockout, now);
    held.commit()?;
    let mut after = before;
    let result = auth::apply_code_for(&mut after, input, config, now, purpose)?;
    // A wrong code leaves exactly the charged state; a right one is written when `hold`
    // commits, and a failure of that write refuses the login.
    held.state = after;
    Ok(result)
}
