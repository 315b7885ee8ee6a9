//! Password and code typed into one prompt, for clients that send a single secret
//! (OpenVPN's auth-pam, xrdp, mail servers, sshd's password method): where the password
//! ends and the code begins. Only the split itself lives here; whether to split at all
//! (only for a user with an enabled authenticator) is the caller's decision.

use zeroize::Zeroizing;

use crate::backup_codes;

/// A password with its code taken off the end.
#[derive(Debug, PartialEq, Eq)]
pub struct Split {
    /// What the password module checks.
    pub password: Zeroizing<String>,
    /// What the second factor checks: a TOTP code or a backup code, as typed.
    pub code: Zeroizing<String>,
}

fn split_at(input: &str, password_end: usize, code_start: usize) -> Option<Split> {
    let password = &input[..password_end];
    (!password.is_empty()).then(|| Split {
        password: Zeroizing::new(password.to_string()),
        code: Zeroizing::new(input[code_start..].to_string()),
    })
}

/// Ten characters, or eleven with the dash after the fifth, as backup codes are shown.
fn shaped_like_ours(word: &str) -> bool {
    let b = word.as_bytes();
    match b.len() {
        10 => !b.contains(&b'-'),
        11 => b[5] == b'-' && b.iter().filter(|&&c| c == b'-').count() == 1,
        _ => false,
    }
}

/// Splits `input` for one try, in this order:
/// - an imported google-authenticator scratch code (8 digits) after the last space;
/// - otherwise the last `digits` digits, appended directly or after one space;
/// - otherwise a backup code of ours after the last space, with or without its dash;
/// - otherwise a backup code in its dashed form (`xxxxx-xxxxx`) appended directly.
///
/// `None` when the input ends in no code, or nothing would be left as the password.
/// The TOTP reading comes before ours so that a passphrase whose last word happens to
/// be four letters of the backup-code alphabet (`my dark` + `123456`) still splits as
/// meant; a backup code that ends in six digits is then only read in its dashed form.
pub fn split(input: &str, digits: u8) -> Option<Split> {
    let last_word = input.rfind(' ').map(|space| (space, &input[space + 1..]));
    if let Some((space, word)) = last_word
        && usize::from(digits) != backup_codes::SCRATCH_DIGITS
        && word.len() == backup_codes::SCRATCH_DIGITS
        && word.bytes().all(|b| b.is_ascii_digit())
    {
        return split_at(input, space, space + 1);
    }
    let n = usize::from(digits);
    if input.len() > n
        && input.as_bytes()[input.len() - n..]
            .iter()
            .all(u8::is_ascii_digit)
    {
        let at = input.len() - n;
        let password_end = if input.as_bytes()[at - 1] == b' ' {
            at - 1
        } else {
            at
        };
        return split_at(input, password_end, at);
    }
    if let Some((space, word)) = last_word
        && shaped_like_ours(word)
        && backup_codes::normalize(word).is_some()
    {
        return split_at(input, space, space + 1);
    }
    let dashed = backup_codes::CODE_CHARS + 1;
    let at = input.len().checked_sub(dashed)?;
    let tail = input.get(at..)?;
    (shaped_like_ours(tail) && backup_codes::normalize(tail).is_some())
        .then(|| split_at(input, at, at))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(input: &str, digits: u8) -> Option<(String, String)> {
        split(input, digits).map(|s| (s.password.to_string(), s.code.to_string()))
    }

    fn pair(p: &str, c: &str) -> Option<(String, String)> {
        Some((p.to_string(), c.to_string()))
    }

    #[test]
    fn a_totp_code_appended_directly_or_after_one_space() {
        assert_eq!(parts("hunter2123456", 6), pair("hunter2", "123456"));
        assert_eq!(parts("hunter2 123456", 6), pair("hunter2", "123456"));
        assert_eq!(
            parts("correct horse 123456", 6),
            pair("correct horse", "123456")
        );
        assert_eq!(parts("pw12345678", 8), pair("pw", "12345678"));
        // Only one space is the separator; another belongs to the password.
        assert_eq!(parts("pw  123456", 6), pair("pw ", "123456"));
        // A last word of four backup-code letters does not turn into a backup code.
        assert_eq!(parts("my dark123456", 6), pair("my dark", "123456"));
        assert_eq!(parts("pw 1234567890", 6), pair("pw 1234", "567890"));
    }

    #[test]
    fn a_backup_code_after_a_space_or_in_its_dashed_form() {
        assert_eq!(
            parts("hunter2 veb1ysrrtg", 6),
            pair("hunter2", "veb1ysrrtg")
        );
        assert_eq!(
            parts("hunter2 veb1y-srrtg", 6),
            pair("hunter2", "veb1y-srrtg")
        );
        assert_eq!(
            parts("hunter2veb1y-srrtg", 6),
            pair("hunter2", "veb1y-srrtg")
        );
        assert_eq!(
            parts("hunter2 VEB1Y-SRRTG", 6),
            pair("hunter2", "VEB1Y-SRRTG")
        );
        // A google-authenticator scratch code needs the space: run together, its last
        // six digits read as a TOTP code.
        assert_eq!(parts("hunter2 12345678", 6), pair("hunter2", "12345678"));
        assert_eq!(parts("hunter212345678", 6), pair("hunter212", "345678"));
        // A dash that ends the password stays in it.
        assert_eq!(parts("a -abcde-fghij", 6), pair("a -", "abcde-fghij"));
        // Without a space or a dash, ten characters of ours are part of the password.
        assert_eq!(parts("hunter2veb1ysrrtg", 6), None);
    }

    #[test]
    fn no_code_at_the_end_or_nothing_left_is_no_split() {
        assert_eq!(parts("hunter2", 6), None);
        assert_eq!(parts("123456", 6), None, "a code alone leaves no password");
        assert_eq!(parts(" 123456", 6), None);
        assert_eq!(parts("", 6), None);
        assert_eq!(parts("pass12345", 6), None, "five digits are not a code");
    }

    proptest::proptest! {
        #[test]
        fn any_password_and_any_code_come_apart_as_typed(
            password in "[ -~]{0,20}[!-/:-~]",
            totp in "[0-9]{6}",
            backup in "[0-9a-hjkmnp-tv-z]{5}-[0-9a-hjkmnp-tv-z]{5}",
        ) {
            let want = |code: &str| Some((password.clone(), code.to_string()));
            proptest::prop_assert_eq!(parts(&format!("{password}{totp}"), 6), want(&totp));
            proptest::prop_assert_eq!(parts(&format!("{password} {totp}"), 6), want(&totp));
            proptest::prop_assert_eq!(parts(&format!("{password} {backup}"), 6), want(&backup));
            proptest::prop_assert_eq!(parts(&format!("{password}{backup}"), 6), want(&backup));
        }
    }

    #[test]
    fn passwords_beyond_ascii_split_on_character_boundaries() {
        assert_eq!(parts("pässwörd123456", 6), pair("pässwörd", "123456"));
        assert_eq!(
            parts("пароль veb1y-srrtg", 6),
            pair("пароль", "veb1y-srrtg")
        );
        assert_eq!(parts("ü", 6), None);
        assert_eq!(parts("éééééééééé", 6), None);
    }
}
