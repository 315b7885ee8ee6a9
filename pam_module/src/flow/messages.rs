//! Every prompt and message the login shows, in one place.

use std::fmt::Write as _;

use twofactor_core::config::Config;
use twofactor_core::enroll::Enrollment;
use zeroize::Zeroizing;

/// When this few backup codes are left, the user is told how to make more.
pub const FEW_BACKUP_CODES: usize = 3;

/// The prompt for a code at login.
pub const CODE_PROMPT: &str = "Authentication code: ";
/// The one prompt of the `split` layout, the same for every user, so it does not tell
/// who has two-factor login.
pub const ONE_PROMPT: &str = "Password and code: ";
/// The prompt for the first code when enrolling.
pub const ENROLL_PROMPT: &str = "Code from the app to finish setup: ";
/// Shown when the answer to the code prompt was the password.
pub const PASSWORD_AT_CODE_PROMPT: &str = "The code prompt was answered with your password, so no code was checked.\nIf you use ssh, this server must allow keyboard-interactive login for the code prompt\nto reach you; ask an administrator (twofactor doctor explains).";

/// The code prompt got an empty answer.
pub const NO_CODE: &str = "No code entered.\nEnter the code shown in your authenticator app.";

/// One prompt, and no code after the password.
pub const NO_CODE_AFTER_PASSWORD: &str = "No code after the password.\nType your password followed by the current code from your authenticator app,\nfor example hunter2123456 or hunter2 123456 (a backup code goes after a space).";

/// A wrong code.
pub const WRONG_CODE: &str = "Wrong code.\nEnter the current code from your authenticator app, or a backup code.\nIf codes keep failing, check that the phone sets its time automatically.";

/// The first code of an enrollment did not match the new key.
pub const ENROLL_CODE_MISMATCH: &str = "That code does not match.\nCheck that the phone sets its time automatically, then enter the next code.";

/// Holds the backup codes on screen until the user has saved them.
pub const SAVED_CODES_PROMPT: &str = "Press Enter once you have saved the backup codes: ";

/// Enrollment at login ran out of tries.
pub const SETUP_NOT_FINISHED: &str = "Setup was not finished. Log in again to start over.";

/// A backup code typed by a user whose backup codes went with a retired key.
pub const VOIDED_BACKUP_CODE: &str = "That is a backup code, but your backup codes no longer work: an administrator retired the key they were made with.\nIt was not counted as a wrong code. Type a code from your authenticator app, or ask an administrator to let you in.";

/// After a login of a user whose backup codes went with a retired key.
pub const BACKUP_CODES_VOIDED: &str = "Your backup codes no longer work: an administrator retired the key they were made with.\nMake new ones now with: twofactor backup-codes";

/// A code already used.
pub fn replayed(period: u64) -> String {
    format!(
        "That code was already used.\nWait for the next code (up to {period} seconds) and enter it."
    )
}

/// A backup code was spent; how many are left, and when to make more.
pub fn backup_code_accepted(left: usize) -> String {
    let mut text = format!(
        "Backup code accepted.\n{left} backup code{} left.",
        if left == 1 { "" } else { "s" }
    );
    if left == 0 {
        text.push_str("\nMake new ones now with: twofactor backup-codes");
    } else if left <= FEW_BACKUP_CODES {
        text.push_str("\nMake new ones soon with: twofactor backup-codes");
    }
    text
}

/// Offers to trust the remote host.
pub fn trust_question(service: &str, host: &str, days: u32) -> String {
    format!("Skip the code for {service} logins from {host} for {days} days? [y/N]: ")
}

/// Confirms a new trust.
pub fn trusted(service: &str, host: &str, days: u32) -> String {
    format!("{service} logins from {host} will not ask for a code until {days} days from now.")
}

/// A grace login.
pub fn grace(left: u32) -> String {
    format!(
        "Two-factor authentication is required for this account\n\
         and is not set up yet. {left} more login{} will be allowed without it.\n\
         Set it up now with: twofactor enroll",
        if left == 1 { "" } else { "s" }
    )
}

/// Required, no authenticator, nothing to be done in this login. `one_prompt`: the
/// login could not have shown a QR code, wherever it came from.
pub fn no_authenticator(enroll_elsewhere: bool, one_prompt: bool) -> String {
    let remedy = if one_prompt {
        "This login cannot set one up. Log in over ssh or at a console and run:\n  twofactor enroll\nthen type your password followed by the code here."
    } else if enroll_elsewhere {
        "Set it up from an allowed network, or ask an administrator for help."
    } else {
        "Ask an administrator to set it up for you (twofactor enroll --user)."
    };
    format!(
        "Two-factor authentication is required for this account,\nbut no authenticator is set up.\n{remedy}"
    )
}

/// A lock, how long it lasts and who can lift it.
pub fn locked(user: &str, seconds: u64) -> String {
    format!(
        "Too many wrong codes.\nTwo-factor login is locked for {}. Try again later, or ask an\nadministrator to run: twofactor unlock {user}",
        minutes(seconds)
    )
}

fn minutes(seconds: u64) -> String {
    let m = seconds.div_ceil(60);
    if m == 1 {
        "1 minute".into()
    } else {
        format!("{m} minutes")
    }
}

/// The text shown before the first code when enrolling at login.
pub fn enrollment_text(config: &Config, e: &Enrollment) -> String {
    let mut t = String::new();
    // OpenSSH's client puts "(user@host) " before the first line, so it stays short.
    t.push_str("Two-factor authentication is required.\nSet it up now for this account:\n");
    t.push_str(" 1. Open an authenticator app (Google Authenticator, Microsoft Authenticator,\n    FreeOTP, ...) and add an account.\n");
    t.push_str(" 2. Scan the QR code below, or type the key under it into the app\n    (if the picture looks garbled, type the key).\n");
    t.push_str(" 3. Enter the code the app shows.\n\n");
    // What the user acts on comes last: the QR code, the key, then the prompt, which
    // fit an 80x24 screen while the text above scrolls away.
    t.push_str(e.scan_or_type(config.enroll.qr, false).trim_end());
    t
}

/// The text that shows freshly made backup codes, two per line.
pub fn backup_codes_text(codes: &[Zeroizing<String>]) -> String {
    let mut t = String::from(
        "Your authenticator is set up.\nIf you lose your phone, each of these backup codes lets you log in once.\nSave them somewhere safe now; they are not shown again.\n",
    );
    for pair in codes.chunks(2) {
        let line: Vec<&str> = pair.iter().map(|c| c.as_str()).collect();
        let _ = writeln!(t, "    {}", line.join("    "));
    }
    t.truncate(t.trim_end().len());
    t
}

/// What the user is told when the config is broken and no good copy stands in.
pub const BROKEN_CONFIG_MESSAGE: &str = "Login refused: the two-factor configuration on this server is broken.\nAsk an administrator to run: twofactor check-config";

/// The fleet database cannot be reached: nobody required gets in, and the user learns why.
pub const SERVER_UNREACHABLE_MESSAGE: &str = "Login refused: the two-factor server cannot be reached.\nTry again later; if it persists, tell an administrator (pam_twofactor in the system log).";

/// What the user is told when an error stops the login (state, name service or
/// randomness unavailable), so they know it is not their code.
pub const UNAVAILABLE_MESSAGE: &str = "Login refused: two-factor login is unavailable on this server right now.\nTry again later, or ask an administrator to check the system log (pam_twofactor).";

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's "What the user sees" shows the prompts as the module words them.
    #[test]
    fn the_readme_shows_the_prompts_as_they_are() {
        let readme = include_str!("../../../README.md");
        for prompt in [SAVED_CODES_PROMPT, CODE_PROMPT] {
            assert!(
                readme.contains(&format!("`{prompt}`")),
                "README lacks {prompt:?}"
            );
        }
    }
}
