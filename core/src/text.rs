//! Text from state files and PAM items made safe to print on a terminal or in a log.

use std::borrow::Cow;

/// Unicode's format characters (general category Cf, Unicode 15.1), which include the
/// bidirectional controls that reorder what follows them (U+202A-202E, U+2066-2069).
const FORMAT: &[(char, char)] = &[
    ('\u{ad}', '\u{ad}'),
    ('\u{600}', '\u{605}'),
    ('\u{61c}', '\u{61c}'),
    ('\u{6dd}', '\u{6dd}'),
    ('\u{70f}', '\u{70f}'),
    ('\u{890}', '\u{891}'),
    ('\u{8e2}', '\u{8e2}'),
    ('\u{180e}', '\u{180e}'),
    ('\u{200b}', '\u{200f}'),
    ('\u{202a}', '\u{202e}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206f}'),
    ('\u{feff}', '\u{feff}'),
    ('\u{fff9}', '\u{fffb}'),
    ('\u{110bd}', '\u{110bd}'),
    ('\u{110cd}', '\u{110cd}'),
    ('\u{13430}', '\u{1343f}'),
    ('\u{1bca0}', '\u{1bca3}'),
    ('\u{1d173}', '\u{1d17a}'),
    ('\u{e0001}', '\u{e0001}'),
    ('\u{e0020}', '\u{e007f}'),
];

/// Whether `c` can change how text around it shows: a control character (Cc: escape
/// sequences, carriage returns, C1 controls, DEL), a format character (Cf: bidi
/// overrides, zero-width characters), or the line and paragraph separators (Zl, Zp).
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || c == '\u{2028}'
        || c == '\u{2029}'
        || FORMAT.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

/// A PostgreSQL regular expression bracket that matches every unsafe character (see
/// [`is_unsafe`]), so the database refuses the same names as the file store.
pub fn unsafe_sql_bracket() -> String {
    let entry = |c: char| format!("\\U{:08x}", u32::from(c));
    let mut out = String::from("[\\x01-\\x1f\\x7f-\\x9f\\u2028\\u2029");
    for &(lo, hi) in FORMAT {
        out.push_str(&entry(lo));
        if hi != lo {
            out.push('-');
            out.push_str(&entry(hi));
        }
    }
    out.push(']');
    out
}

/// `s` with every unsafe character (see [`is_unsafe`]) written as a visible `\u{..}`
/// escape, so stored text such as a PAM_RHOST or a user name can never move the cursor,
/// retitle the terminal, reverse what follows it or hide it.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| {
                if is_unsafe(c) {
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

    #[test]
    fn bidi_format_and_separator_characters_become_visible_escapes() {
        // "alice" followed by a right-to-left override would show a reversed tail.
        assert_eq!(printable("alice\u{202e}nimda"), "alice\\u{202e}nimda");
        for c in [
            '\u{2066}',
            '\u{2069}',
            '\u{2028}',
            '\u{2029}',
            '\u{200b}',
            '\u{feff}',
            '\u{e0041}',
        ] {
            assert!(is_unsafe(c), "{c:?}");
            let text = format!("a{c}b");
            let shown = printable(&text);
            assert!(!shown.chars().any(is_unsafe), "{shown}");
        }
        // Letters of other scripts, and the ordinary space, stay as they are.
        for fine in ["Łukasz", "محمد", "日本", "domain users"] {
            assert!(matches!(printable(fine), Cow::Borrowed(_)), "{fine}");
        }
    }
}
