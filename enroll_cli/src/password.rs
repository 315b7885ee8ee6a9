//! Confirming the caller's password through PAM (service `twofactor`), on the terminal
//! or from stdin.

use twofactor_pam_client::{Context, ConvFailed, Converse, DISALLOW_NULL_AUTHTOK, Style};
use zeroize::Zeroizing;

use crate::prompt;

/// Answers libpam's prompts from the terminal (or stdin), and shows its messages on
/// stderr so stdout stays the command's output.
struct Terminal;

impl Converse for Terminal {
    fn converse(
        &mut self,
        style: Style,
        text: &str,
    ) -> Result<Option<Zeroizing<String>>, ConvFailed> {
        let answer = match style {
            Style::Hidden => prompt::read_hidden(text),
            Style::Visible => prompt::read_visible(text).map(|a| a.map(Zeroizing::new)),
            Style::Error | Style::Info => {
                eprintln!("{text}");
                return Ok(None);
            }
        };
        // No answer (end of input) ends the conversation: libpam must not take it as
        // an empty password.
        match answer {
            Ok(Some(a)) => Ok(Some(a)),
            Ok(None) | Err(_) => Err(ConvFailed),
        }
    }
}

/// Checks `user`'s password and account through PAM service `service`. `Err` carries
/// libpam's reason. A module that changed PAM_USER on the way is refused: the password
/// checked must be this user's.
pub fn check(service: &str, user: &str) -> Result<(), String> {
    let mut pam = Context::start(service, user, Terminal).map_err(|e| e.to_string())?;
    pam.authenticate(DISALLOW_NULL_AUTHTOK)
        .map_err(|e| e.to_string())?;
    match pam.user().map_err(|e| e.to_string())? {
        Some(now) if now == user => {}
        now => {
            return Err(format!(
                "the PAM stack changed the user from {user:?} to {now:?}; refusing"
            ));
        }
    }
    pam.acct_mgmt().map_err(|e| e.to_string())
}
