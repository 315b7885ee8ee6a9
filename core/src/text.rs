//! Text from state files and PAM items made safe to print on a terminal.

use std::borrow::Cow;

/// `s` with every control character (escape sequences, carriage returns, C1 controls,
/// DEL) written as a visible `\u{..}` escape, so stored text such as a PAM_RHOST can
/// never move the cursor, retitle the terminal or hide what follows it.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_visible_escapes() {
        assert!(matches!(printable("10.0.0.1"), Cow::Borrowed("10.0.0.1")));
        assert_eq!(printable("héllo ▀"), "héllo ▀");
        let evil = "host\u{1b}]0;pwned\u{7}\r\n\u{9b}2J\u{7f}";
        let shown = printable(evil);
        assert!(!shown.chars().any(char::is_control), "{shown}");
        assert_eq!(
            shown,
            "host\\u{1b}]0;pwned\\u{7}\\u{d}\\u{a}\\u{9b}2J\\u{7f}"
        );
    }
}
