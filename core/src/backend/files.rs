//! The file store as a [`Backend`]: each operation is one [`Store::update`] (or
//! [`Store::hold`]) under the user's lock, so it is atomic and durable.

use crate::auth::{self, CodeResult, Purpose};
use crate::backup_codes::{HashCost, NewCodes};
use crate::config::Config;
use crate::enroll::{Enrollment, SaveSettings, new_backup_codes};
use crate::random::Random;
use crate::store::{Store, UserState};
use crate::trusted::RemoteHost;

use super::{AuthenticatorId, Backend, BackendError, Imported, Revoke, UserFacts};

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
        now: u64,
    ) -> Result<CodeResult, BackendError> {
        self.hold(user, |held| {
            auth::charge_then_check(held, code, config, now, purpose)
        })
    }

    fn enrol(
        &self,
        user: &str,
        enrollment: &Enrollment,
        first_code: Option<&str>,
        expected: Option<&AuthenticatorId>,
        settings: SaveSettings,
        now: u64,
        rng: &mut dyn Random,
    ) -> Result<Option<NewCodes>, BackendError> {
        self.update(user, |s| {
            let current = s
                .authenticator
                .as_ref()
                .map(|a| AuthenticatorId::of(&a.secret));
            if current.as_ref() != expected {
                return Err(BackendError::Changed(user.to_string()));
            }
            match first_code {
                Some(code) => {
                    if enrollment.confirm(s, code, settings.window, now).is_err() {
                        return Ok(None);
                    }
                }
                None => enrollment.install(s, now, None),
            }
            Ok(Some(new_backup_codes(
                s,
                settings.backup_codes,
                settings.cost,
                rng,
            )?))
        })
    }

    fn import(
        &self,
        user: &str,
        imported: Imported<'_>,
        now: u64,
    ) -> Result<Option<usize>, BackendError> {
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
        user: &str,
        service: &str,
        host: &RemoteHost,
        days: u32,
        now: u64,
        rng: &mut dyn Random,
    ) -> Result<String, BackendError> {
        self.update(user, |s| -> Result<_, BackendError> {
            Ok(s.trusted_devices.add(service, host, now, days, rng)?)
        })
    }

    fn revoke_trust(&self, user: &str, which: Revoke<'_>) -> Result<usize, BackendError> {
        self.update(user, |s| -> Result<_, BackendError> {
            Ok(match which {
                Revoke::All => s.trusted_devices.revoke_all(),
                Revoke::One(id) => usize::from(s.trusted_devices.revoke(id)),
            })
        })
    }

    fn set_enabled(&self, user: &str, enabled: bool) -> Result<bool, BackendError> {
        self.update(user, |s| -> Result<_, BackendError> {
            Ok(s.authenticator
                .as_mut()
                .map(|a| a.enabled = enabled)
                .is_some())
        })
    }

    fn remove_authenticator(&self, user: &str) -> Result<bool, BackendError> {
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

    fn unlock(&self, user: &str, now: u64) -> Result<Option<u64>, BackendError> {
        self.update(user, |s| -> Result<_, BackendError> {
            let was = s.lockout.locked_for(now);
            s.lockout.unlock();
            Ok(was)
        })
    }

    fn new_backup_codes(
        &self,
        user: &str,
        count: usize,
        cost: HashCost,
        rng: &mut dyn Random,
    ) -> Result<Option<NewCodes>, BackendError> {
        self.update(user, |s| -> Result<_, BackendError> {
            if !s.is_enrolled() {
                return Ok(None);
            }
            Ok(Some(new_backup_codes(s, count, cost, rng)?))
        })
    }
}
