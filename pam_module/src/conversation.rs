//! What the login flow needs from PAM's conversation function, as a trait so the flow is
//! tested with a scripted fake and driven by libpam in production.

use zeroize::Zeroizing;

/// The conversation failed (the application hung up or refused the message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvError(pub String);

/// Talking to the user.
pub trait Conversation {
    /// Asks with echo off (codes). `Ok(None)` means no answer: EOF or a null response.
    fn ask_hidden(&mut self, prompt: &str) -> Result<Option<Zeroizing<String>>, ConvError>;
    /// Asks with echo on (yes/no questions).
    fn ask_visible(&mut self, prompt: &str) -> Result<Option<String>, ConvError>;
    /// Shows information (PAM_TEXT_INFO).
    fn info(&mut self, text: &str) -> Result<(), ConvError>;
    /// Shows an error (PAM_ERROR_MSG).
    fn error(&mut self, text: &str) -> Result<(), ConvError>;
}
