//! sshd's effective settings: what lets a login skip the PAM stack, or lock root out.

use super::pam::split_word;
use super::{Finding, Level};

/// The sshd settings that matter, from `sshd -T` output or a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshdSettings {
    /// `UsePAM`.
    pub use_pam: bool,
    /// `KbdInteractiveAuthentication` (or the old ChallengeResponseAuthentication).
    pub kbd_interactive: bool,
    /// `PasswordAuthentication`.
    pub password: bool,
    /// `PubkeyAuthentication`.
    pub pubkey: bool,
    /// `AuthenticationMethods`, lower case (`any` when unset).
    pub methods: String,
    /// `PermitRootLogin`, lower case.
    pub permit_root_login: String,
}

impl SshdSettings {
    /// Reads `key value` lines (sshd -T output, or a config file where the first value
    /// wins and `Match` blocks are not evaluated), starting from OpenSSH's defaults.
    pub fn parse(text: &str) -> Self {
        let mut s = Self {
            use_pam: false,
            kbd_interactive: true,
            password: true,
            pubkey: true,
            methods: "any".into(),
            permit_root_login: "prohibit-password".into(),
        };
        let mut seen = std::collections::HashSet::new();
        for raw in text.lines() {
            let line = raw.split('#').next().unwrap_or("").trim();
            let (key, value) = split_word(line);
            let key = key.to_ascii_lowercase();
            if key == "match" {
                break;
            }
            if key.is_empty() || !seen.insert(key.clone()) {
                continue;
            }
            let value = value.trim().trim_matches('"').to_ascii_lowercase();
            let yes = value == "yes";
            match key.as_str() {
                "usepam" => s.use_pam = yes,
                "kbdinteractiveauthentication" | "challengeresponseauthentication" => {
                    s.kbd_interactive = yes
                }
                "passwordauthentication" => s.password = yes,
                "pubkeyauthentication" => s.pubkey = yes,
                "authenticationmethods" => s.methods = value,
                "permitrootlogin" => s.permit_root_login = value,
                _ => {}
            }
        }
        s
    }

    /// Every `AuthenticationMethods` list checks a public key before keyboard-interactive,
    /// so the key is a first factor before PAM runs.
    pub fn requires_key_first(&self) -> bool {
        self.methods != "any"
            && self.methods.split_whitespace().all(|list| {
                let methods: Vec<&str> = list.split(',').collect();
                let key = methods.iter().position(|m| *m == "publickey");
                let kbd = methods
                    .iter()
                    .position(|m| m.starts_with("keyboard-interactive"));
                matches!((key, kbd), (Some(k), Some(i)) if k < i)
            })
    }

    fn methods_require_kbd(&self) -> bool {
        self.methods != "any"
            && self.methods.split_whitespace().all(|list| {
                list.split(',')
                    .any(|m| m.starts_with("keyboard-interactive"))
            })
    }
}

/// What the policy says about the accounts sshd cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SshdPolicy {
    /// Some rule requires 2FA for someone.
    pub anyone_required: bool,
    /// A rule requires 2FA for root, and root has no authenticator yet.
    pub root_unenrolled: bool,
    /// sshd's auth stack has the one-prompt layout (`pam_twofactor.so split`): the
    /// password method carries the code after the password.
    pub one_prompt: bool,
}

/// Findings for sshd; `origin` says where the settings came from.
pub fn check_sshd(s: &SshdSettings, policy: SshdPolicy, origin: &str) -> Vec<Finding> {
    let mut f = Vec::new();
    let at = |k: &str| format!("{origin}: {k}");
    if !s.use_pam {
        f.push(Finding::new(
            Level::Error,
            "sshd-usepam",
            at("UsePAM no"),
            "sshd does not use PAM, so pam_twofactor never runs for SSH",
            "set UsePAM yes",
        ));
    }
    // The one-prompt layout needs no conversation: the password method carries the code.
    let reaches_pam = s.kbd_interactive || (policy.one_prompt && s.password);
    if !reaches_pam {
        f.push(Finding::new(
            Level::Error,
            "sshd-kbdint",
            at("KbdInteractiveAuthentication no"),
            "sshd cannot ask PAM's questions, so the code prompt never reaches the user and enrolment at login cannot work; with PasswordAuthentication yes, sshd answers the prompt with the password and users who must give a code are refused",
            "set KbdInteractiveAuthentication yes",
        ));
    }
    if s.password && !s.methods_require_kbd() && !policy.one_prompt {
        f.push(Finding::new(
            Level::Warning,
            "sshd-password",
            at("PasswordAuthentication yes"),
            "sshd's password method answers every PAM prompt with the password, so over it users who must give a code are refused (pam_twofactor logs \"the code prompt was answered with the password\") and nobody can enrol at login; a client that tries it first may fail where keyboard-interactive would work",
            "set PasswordAuthentication no and AuthenticationMethods keyboard-interactive (or publickey,keyboard-interactive)",
        ));
    }
    if s.pubkey && !s.methods_require_kbd() {
        f.push(Finding::new(
            if policy.anyone_required { Level::Warning } else { Level::Info },
            "sshd-pubkey",
            at("PubkeyAuthentication yes"),
            "public-key logins skip PAM's auth stack, and so the second factor",
            "set AuthenticationMethods publickey,keyboard-interactive to ask for the code after the key",
        ));
    }
    let root_allowed = s.permit_root_login != "no" && s.permit_root_login != "forced-commands-only";
    if root_allowed && policy.root_unenrolled {
        f.push(Finding::new(
            Level::Warning,
            "sshd-root",
            at(&format!("PermitRootLogin {}", s.permit_root_login)),
            "root must use 2FA and may log in over SSH, but has no authenticator: the first SSH login as root sets one up for whoever has root's password (or is refused, with enrolment at login off)",
            "enrol root now (twofactor enroll --user root), or set PermitRootLogin no",
        ));
    }
    f
}

/// What running `sshd -T -f CONFIG` gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshdTest {
    /// The effective settings it printed.
    Ran(String),
    /// sshd refused the config; its first line of complaint.
    Refused(String),
    /// sshd could not be run.
    Unavailable,
}

/// What an `sshd -T` that did not run means: an error when sshd refuses the config (it
/// will not start or reload), a note when the file itself had to be read.
/// `[ssh_factor]` on while sshd never passes a key before PAM: no certificate reaches
/// `SSH_AUTH_INFO_0`, so the policy never applies and every login gets the code prompt.
pub fn check_ssh_factor(s: &SshdSettings, enabled: bool, origin: &str) -> Option<Finding> {
    (enabled && !s.requires_key_first()).then(|| {
        Finding::new(
            Level::Warning,
            "ssh-factor-no-key-first",
            format!("{origin}: AuthenticationMethods {}", s.methods),
            "[ssh_factor] lists CAs, but sshd does not check a public key before keyboard-interactive, so no certificate reaches PAM and the code is always asked",
            "set AuthenticationMethods publickey,keyboard-interactive",
        )
    })
}

pub fn check_sshd_test(config: &str, test: &SshdTest) -> Option<Finding> {
    let (level, message, fix) = match test {
        SshdTest::Ran(_) => return None,
        SshdTest::Refused(said) => (
            Level::Error,
            format!("sshd refuses this config: {said}; sshd will not start (or reload) with it"),
            format!("fix it and check with: sshd -t -f {config}"),
        ),
        SshdTest::Unavailable => (
            Level::Info,
            "could not run /usr/sbin/sshd -T; read the file itself (Include and Match are not evaluated)".to_string(),
            "install openssh-server to have the effective settings checked".to_string(),
        ),
    };
    Some(Finding::new(level, "sshd-T", config, message, fix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::ids;

    const OK: SshdPolicy = SshdPolicy {
        anyone_required: true,
        root_unenrolled: false,
        one_prompt: false,
    };

    #[test]
    fn ssh_factor_needs_a_key_before_pam() {
        let key_first =
            SshdSettings::parse("authenticationmethods publickey,keyboard-interactive\n");
        let kbd_only = SshdSettings::parse("authenticationmethods keyboard-interactive\n");
        assert!(check_ssh_factor(&key_first, true, "sshd -T").is_none());
        assert!(check_ssh_factor(&kbd_only, false, "sshd -T").is_none());
        let found = check_ssh_factor(&kbd_only, true, "sshd -T").unwrap();
        assert_eq!(found.id, "ssh-factor-no-key-first");
    }

    #[test]
    fn sshd_findings() {
        let good = SshdSettings::parse(
            "usepam yes\nkbdinteractiveauthentication yes\npasswordauthentication no\npubkeyauthentication yes\nauthenticationmethods publickey,keyboard-interactive\npermitrootlogin no\n",
        );
        assert!(check_sshd(&good, OK, "sshd -T").is_empty());
        let debian = SshdSettings::parse(
            "Include /etc/ssh/sshd_config.d/*.conf\nKbdInteractiveAuthentication no\nUsePAM yes\n",
        );
        let found = ids(&check_sshd(
            &debian,
            SshdPolicy {
                anyone_required: true,
                root_unenrolled: true,
                one_prompt: false,
            },
            "f",
        ));
        assert_eq!(
            found,
            ["sshd-kbdint", "sshd-password", "sshd-pubkey", "sshd-root"]
        );
        let nopam = SshdSettings::parse("UsePAM no\nUsePAM yes\n");
        assert!(
            ids(&check_sshd(&nopam, OK, "f")).contains(&"sshd-usepam"),
            "the first value wins"
        );
        let matched = SshdSettings::parse("UsePAM yes\nMatch User bob\n  UsePAM no\n");
        assert!(matched.use_pam);
        let info = check_sshd(
            &SshdSettings {
                pubkey: true,
                ..good.clone()
            }
            .with_methods("any"),
            SshdPolicy {
                anyone_required: false,
                root_unenrolled: false,
                one_prompt: false,
            },
            "f",
        );
        assert!(
            info.iter()
                .any(|x| x.id == "sshd-pubkey" && x.severity == Level::Info)
        );
    }

    /// With the one-prompt layout in sshd's stack, the password method carries the code:
    /// keyboard-interactive may be off, and password logins are what is meant.
    #[test]
    fn the_one_prompt_layout_takes_password_logins() {
        let password_only = SshdSettings::parse(
            "UsePAM yes\nKbdInteractiveAuthentication no\nPasswordAuthentication yes\nPubkeyAuthentication no\nPermitRootLogin no\n",
        );
        let one_prompt = SshdPolicy {
            one_prompt: true,
            ..OK
        };
        assert_eq!(
            ids(&check_sshd(&password_only, one_prompt, "f")),
            Vec::<&str>::new()
        );
        assert_eq!(
            ids(&check_sshd(&password_only, OK, "f")),
            ["sshd-kbdint", "sshd-password"]
        );
        // Neither method on: no login reaches the stack, split or not.
        let neither = SshdSettings::parse(
            "UsePAM yes\nKbdInteractiveAuthentication no\nPasswordAuthentication no\nPubkeyAuthentication no\nPermitRootLogin no\n",
        );
        assert!(ids(&check_sshd(&neither, one_prompt, "f")).contains(&"sshd-kbdint"));
    }

    impl SshdSettings {
        fn with_methods(mut self, m: &str) -> Self {
            self.methods = m.into();
            self.password = false;
            self
        }
    }

    #[test]
    fn sshd_refusing_its_config_is_an_error_and_no_sshd_a_note() {
        let ran = SshdTest::Ran("usepam yes\n".into());
        assert_eq!(check_sshd_test("/etc/ssh/sshd_config", &ran), None);
        let refused = SshdTest::Refused("Bad configuration option: UsePam2".into());
        let f = check_sshd_test("/etc/ssh/sshd_config", &refused).unwrap();
        assert_eq!((f.severity, f.id), (Level::Error, "sshd-T"));
        assert!(f.message.contains("UsePam2") && f.fix.contains("sshd -t -f /etc/ssh/sshd_config"));
        let f = check_sshd_test("/etc/ssh/sshd_config", &SshdTest::Unavailable).unwrap();
        assert_eq!(f.severity, Level::Info);
    }
}
