//! The login flow's verdict, and the one place it becomes a PAM return code.

use pam::constants::PamResultCode;
use twofactor_core::audit::{Event, Outcome, Reason};

/// What kind of failure an error was, for the return code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The module arguments or the config file are wrong.
    Config,
    /// State, NSS or randomness could not be had.
    Unavailable,
    /// The fleet database could not be reached: the user is told to try again later.
    Unreachable,
    /// The conversation with the user failed.
    Conversation,
}

/// The verdict of one `pam_sm_authenticate` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The second factor is proven (or trusted, or a grace login).
    Allow(Reason),
    /// Refused.
    Deny(Reason),
    /// twofactor does not apply to this user.
    NotApplicable(Reason),
    /// Something broke; refused.
    Error(ErrorKind, String),
}

impl Decision {
    /// The audit record of this decision.
    pub fn event(
        &self,
        user: &str,
        account: Option<&str>,
        service: &str,
        rhost: Option<&str>,
    ) -> Event {
        let (outcome, reason) = match self {
            Self::Allow(r) => (Outcome::Success, r.clone()),
            Self::Deny(r) => (Outcome::Failure, r.clone()),
            Self::NotApplicable(r) => (Outcome::Ignore, r.clone()),
            Self::Error(_, e) => (Outcome::Error, Reason::Error(e.clone())),
        };
        Event {
            user: user.to_string(),
            account: account.map(str::to_string),
            service: service.to_string(),
            rhost: rhost.map(str::to_string),
            outcome,
            reason,
            server: None,
        }
    }
}

/// Maps a decision to the code libpam sees. Only [`Decision::Allow`] can yield
/// `PAM_SUCCESS` and only [`Decision::NotApplicable`] `PAM_IGNORE`; every error fails.
pub fn pam_code(decision: &Decision) -> PamResultCode {
    match decision {
        Decision::Allow(_) => PamResultCode::PAM_SUCCESS,
        Decision::NotApplicable(_) => PamResultCode::PAM_IGNORE,
        Decision::Deny(_) => PamResultCode::PAM_AUTH_ERR,
        Decision::Error(ErrorKind::Config, _) => PamResultCode::PAM_SERVICE_ERR,
        Decision::Error(ErrorKind::Unavailable | ErrorKind::Unreachable, _) => {
            PamResultCode::PAM_AUTHINFO_UNAVAIL
        }
        Decision::Error(ErrorKind::Conversation, _) => PamResultCode::PAM_AUTH_ERR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twofactor_core::policy;

    #[test]
    fn table() {
        let e = |k| Decision::Error(k, "x".into());
        let table = [
            (Decision::Allow(Reason::Totp), PamResultCode::PAM_SUCCESS),
            (
                Decision::Allow(Reason::BackupCode { left: 1 }),
                PamResultCode::PAM_SUCCESS,
            ),
            (
                Decision::Allow(Reason::Enrolled),
                PamResultCode::PAM_SUCCESS,
            ),
            (
                Decision::Allow(Reason::Grace { left: 0 }),
                PamResultCode::PAM_SUCCESS,
            ),
            (Decision::Allow(Reason::Trusted), PamResultCode::PAM_SUCCESS),
            (
                Decision::NotApplicable(Reason::NotRequired(policy::Reason::NoRule)),
                PamResultCode::PAM_IGNORE,
            ),
            (
                Decision::NotApplicable(Reason::Exempt(policy::Reason::ExemptUser)),
                PamResultCode::PAM_IGNORE,
            ),
            (
                Decision::NotApplicable(Reason::Disabled),
                PamResultCode::PAM_IGNORE,
            ),
            (
                Decision::NotApplicable(Reason::OutOfScope {
                    service: "sudo".into(),
                }),
                PamResultCode::PAM_IGNORE,
            ),
            (
                Decision::Deny(Reason::WrongCode { locked_for: None }),
                PamResultCode::PAM_AUTH_ERR,
            ),
            (Decision::Deny(Reason::Replay), PamResultCode::PAM_AUTH_ERR),
            (
                Decision::Deny(Reason::Locked { seconds: 5 }),
                PamResultCode::PAM_AUTH_ERR,
            ),
            (
                Decision::Deny(Reason::NoGraceLeft),
                PamResultCode::PAM_AUTH_ERR,
            ),
            (Decision::Deny(Reason::NoCode), PamResultCode::PAM_AUTH_ERR),
            (
                Decision::Deny(Reason::UnknownAccount),
                PamResultCode::PAM_AUTH_ERR,
            ),
            (e(ErrorKind::Config), PamResultCode::PAM_SERVICE_ERR),
            (
                e(ErrorKind::Unavailable),
                PamResultCode::PAM_AUTHINFO_UNAVAIL,
            ),
            (e(ErrorKind::Conversation), PamResultCode::PAM_AUTH_ERR),
        ];
        for (decision, code) in table {
            assert_eq!(pam_code(&decision), code, "{decision:?}");
        }
    }

    #[test]
    fn events_carry_outcome_and_reason() {
        let ev = Decision::Error(ErrorKind::Unavailable, "disk full".into()).event(
            "u",
            None,
            "sshd",
            Some("10.0.0.1"),
        );
        assert_eq!(ev.outcome, Outcome::Error);
        assert_eq!(ev.reason, Reason::Error("disk full".into()));
        assert_eq!(ev.rhost.as_deref(), Some("10.0.0.1"));
    }
}
