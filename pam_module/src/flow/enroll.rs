//! Required users without an authenticator: enrollment during the login, grace logins,
//! or a refusal that says what to do.

use twofactor_core::audit::Reason;
use twofactor_core::backend::{Backend, UserFacts};
use twofactor_core::enroll::{self, Enrollment, SaveSettings};

use super::messages::{self, ENROLL_PROMPT, backup_codes_text, enrollment_text};
use super::{CodeFrom, Env, Login, MAX_TRIES, Stop, Ui, is_the_password, refuse_password};
use crate::decision::Decision;

/// Shows a new authenticator and saves it once a code from it verifies.
pub(super) fn at_login(
    ui: &mut Ui<'_>,
    login: &Login<'_>,
    env: &mut Env<'_>,
    backend: &dyn Backend,
    state: &UserFacts,
) -> Result<Decision, Stop> {
    let config = env.config;
    // A fleet's issuer when the config names none; a mismatch is doctor's to report, and
    // must not keep a user from enrolling (the config's issuer is then used).
    let issuer =
        enroll::issuer_for(config, backend, &env.host).unwrap_or_else(|_| env.host.clone());
    let enrollment = Enrollment::new(config, login.user, &issuer, &mut *env.rng)?;
    // Saved only over the authenticator this login routed on (none, or a disabled one).
    let expected = state.authenticator_id();
    ui.info(&enrollment_text(config, &enrollment))?;
    for _ in 0..MAX_TRIES {
        let Some(code) = ui.conv.ask_hidden(ENROLL_PROMPT)? else {
            return Ok(Decision::Deny(Reason::NoCode));
        };
        if is_the_password(login, &code) {
            return refuse_password(ui);
        }
        let settings = SaveSettings {
            window: config.totp.window,
            backup_codes: config.backup_codes.count,
        };
        // No authority: a login replaces only a turned-off authenticator, which needs none.
        let saved = backend.enroll(
            login.user,
            &enrollment,
            Some(&code),
            expected,
            None,
            settings,
            &mut *env.rng,
        );
        let Some(codes) = saved?.saved() else {
            ui.error(messages::ENROLL_CODE_MISMATCH)?;
            continue;
        };
        let codes = codes.0;
        if !codes.is_empty() {
            ui.info(&backup_codes_text(&codes))?;
            // A prompt makes sshd show the codes now and gives the user time to save them.
            ui.conv.ask_visible(messages::SAVED_CODES_PROMPT)?;
        }
        return Ok(Decision::Allow(Reason::Enrolled));
    }
    ui.error(messages::SETUP_NOT_FINISHED)?;
    Ok(Decision::Deny(Reason::WrongCode { locked_for: None }))
}

/// A grace login: counted again under the lock, since two logins may race for the last.
pub(super) fn grace(
    ui: &mut Ui<'_>,
    login: &Login<'_>,
    env: &mut Env<'_>,
    backend: &dyn Backend,
) -> Result<Decision, Stop> {
    let config = env.config;
    let Some(left) = backend.count_grace_login(login.user, config.enroll.grace_logins)? else {
        return refuse_unenrolled(ui, login, config.enroll.at_login);
    };
    ui.info(&messages::grace(left))?;
    Ok(Decision::Allow(Reason::Grace { left }))
}

/// Required, no authenticator, no enrollment here and no grace left.
pub(super) fn refuse_unenrolled(
    ui: &mut Ui<'_>,
    login: &Login<'_>,
    enroll_elsewhere: bool,
) -> Result<Decision, Stop> {
    let one_prompt = matches!(login.code_from, CodeFrom::OnePrompt(_));
    ui.error(&messages::no_authenticator(enroll_elsewhere, one_prompt))?;
    Ok(Decision::Deny(Reason::NoGraceLeft))
}
