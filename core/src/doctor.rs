//! `twofactor doctor`'s analysis: PAM stacks, sshd settings and policy risks that make
//! the second factor silently skipped, or lock everyone out. Pure functions over text
//! the caller reads, so every finding is unit-tested on fixtures.

use std::fmt;

use serde::Serialize;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// 2FA is bypassed or logins break.
    Error,
    /// Probably not what the admin wants.
    Warning,
    /// Worth knowing.
    Info,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Info => "info",
        })
    }
}

/// One problem, where it is, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How bad.
    pub severity: Severity,
    /// Short stable identifier, for scripts and tests.
    pub id: &'static str,
    /// File and line, or the setting.
    pub location: String,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub fix: String,
}

impl Finding {
    /// A finding.
    pub fn new(
        severity: Severity,
        id: &'static str,
        location: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            severity,
            id,
            location: location.into(),
            message: message.into(),
            fix: fix.into(),
        }
    }
}

/// The module's file name in PAM stacks.
pub const MODULE: &str = "pam_twofactor.so";
/// Modules that check a password (or equivalent first factor).
const PASSWORD_MODULES: &[&str] = &[
    "pam_unix.so",
    "pam_sss.so",
    "pam_ldap.so",
    "pam_krb5.so",
    "pam_winbind.so",
    "pam_userdb.so",
    "pam_pwdb.so",
];

/// The control field of a PAM line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// `required`
    Required,
    /// `requisite`
    Requisite,
    /// `sufficient`
    Sufficient,
    /// `optional`
    Optional,
    /// `[value=action ...]`
    Brackets(Vec<(String, String)>),
}

impl Control {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "required" => Self::Required,
            "requisite" => Self::Requisite,
            "sufficient" => Self::Sufficient,
            "optional" => Self::Optional,
            b if b.starts_with('[') && b.ends_with(']') => Self::Brackets(
                b[1..b.len() - 1]
                    .split_whitespace()
                    .filter_map(|kv| {
                        kv.split_once('=')
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                    })
                    .collect(),
            ),
            _ => return None,
        })
    }

    /// What happens when the module succeeds: `Some(None)` ends the stack with success,
    /// `Some(Some(n))` jumps over the next `n` lines, `None` carries on.
    fn on_success(&self) -> Option<Option<usize>> {
        match self {
            Self::Sufficient => Some(None),
            Self::Brackets(kv) => {
                let action = kv
                    .iter()
                    .find(|(k, _)| k == "success")
                    .or_else(|| kv.iter().find(|(k, _)| k == "default"))?;
                match action.1.as_str() {
                    "done" => Some(None),
                    n => n.parse::<usize>().ok().filter(|n| *n > 0).map(Some),
                }
            }
            _ => None,
        }
    }
}

/// One `auth` line of a flattened stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthLine {
    /// `file:line`.
    pub location: String,
    /// Its control.
    pub control: Control,
    /// Module file name (path stripped).
    pub module: String,
}

/// Reads PAM service files: `service name -> text`.
pub trait PamFiles {
    /// The text of service `name`, if the file exists.
    fn read(&self, name: &str) -> Option<String>;
}

/// The `auth` stack of `service`, with `@include`, `include` and `substack` followed.
pub fn auth_stack(files: &dyn PamFiles, service: &str) -> Result<Vec<AuthLine>, String> {
    let mut out = Vec::new();
    flatten(files, service, &mut out, 0)?;
    Ok(out)
}

fn flatten(
    files: &dyn PamFiles,
    service: &str,
    out: &mut Vec<AuthLine>,
    depth: usize,
) -> Result<(), String> {
    if depth > 16 {
        return Err(format!("includes nested too deeply at {service} (a loop?)"));
    }
    let text = files
        .read(service)
        .ok_or_else(|| format!("PAM service file {service} not found"))?;
    let mut pending = String::new();
    for (i, raw) in text.lines().enumerate() {
        let mut line = raw.split('#').next().unwrap_or("").trim().to_string();
        if line.ends_with('\\') {
            line.pop();
            pending.push_str(&line);
            pending.push(' ');
            continue;
        }
        let line = std::mem::take(&mut pending) + &line;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let location = format!("{service}:{}", i + 1);
        if let Some(name) = line.strip_prefix("@include") {
            flatten(files, name.trim(), out, depth + 1)?;
            continue;
        }
        let (kind, rest) = split_word(line);
        if kind.trim_start_matches('-') != "auth" {
            continue;
        }
        // Controls in brackets may contain spaces.
        let (control, rest) = if rest.starts_with('[') {
            match rest.find(']') {
                Some(end) => (&rest[..=end], rest[end + 1..].trim()),
                None => return Err(format!("{location}: unterminated [ in control")),
            }
        } else {
            split_word(rest)
        };
        let (module, _args) = split_word(rest);
        if control == "include" || control == "substack" {
            flatten(files, module, out, depth + 1)?;
            continue;
        }
        let control = Control::parse(control)
            .ok_or_else(|| format!("{location}: unknown control {control:?}"))?;
        let module = module.rsplit('/').next().unwrap_or(module).to_string();
        out.push(AuthLine {
            location,
            control,
            module,
        });
    }
    Ok(())
}

fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

/// Findings for one service's auth stack.
pub fn check_stack(service: &str, stack: &[AuthLine]) -> Vec<Finding> {
    let mut f = Vec::new();
    let Some(ours) = stack.iter().position(|l| l.module == MODULE) else {
        return f;
    };
    let here = &stack[ours].location;
    for (i, line) in stack[..ours].iter().enumerate() {
        // pam_rootok only lets root through, and root needs no bypass.
        if line.module == "pam_rootok.so" {
            continue;
        }
        match line.control.on_success() {
            Some(None) => f.push(Finding::new(
                Severity::Error,
                "skippable",
                &line.location,
                format!("{} ends authentication on success before {MODULE} ({here}) runs: 2FA is skipped", line.module),
                "make that line required/requisite, or move pam_twofactor.so before it",
            )),
            Some(Some(n)) if i + 1 + n > ours => f.push(Finding::new(
                Severity::Error,
                "skippable",
                &line.location,
                format!("{} jumps over {MODULE} ({here}) on success: 2FA is skipped", line.module),
                "change the jump so it lands before pam_twofactor.so",
            )),
            _ => {}
        }
    }
    let password_before = stack[..ours]
        .iter()
        .any(|l| PASSWORD_MODULES.contains(&l.module.as_str()));
    let password_after = stack[ours + 1..]
        .iter()
        .any(|l| PASSWORD_MODULES.contains(&l.module.as_str()));
    match stack[ours].control.on_success() {
        Some(_) => f.push(Finding::new(
            Severity::Error,
            "bypass",
            here,
            format!("{MODULE} can end authentication by itself on success{}: a code alone lets users in", if password_after { ", before the password is checked" } else { "" }),
            "use \"auth required pam_twofactor.so\" after the password module",
        )),
        None if !password_before && password_after => f.push(Finding::new(
            Severity::Warning,
            "order",
            here,
            format!("{MODULE} runs before the password module: the code is asked first, which tells anyone which accounts use 2FA"),
            "move pam_twofactor.so after pam_unix.so (use requisite on the password line to stop at a wrong password)",
        )),
        None if !password_before && !password_after => f.push(Finding::new(
            Severity::Warning,
            "no-password",
            here,
            format!("no password module in the {service} auth stack: only the code is checked"),
            "intended only with sshd AuthenticationMethods publickey,keyboard-interactive; otherwise add pam_unix.so before it",
        )),
        None => {}
    }
    f
}

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
    /// root is exempt or enrolled.
    pub root_covered: bool,
}

/// Findings for sshd; `origin` says where the settings came from.
pub fn check_sshd(s: &SshdSettings, policy: SshdPolicy, origin: &str) -> Vec<Finding> {
    let mut f = Vec::new();
    let at = |k: &str| format!("{origin}: {k}");
    if !s.use_pam {
        f.push(Finding::new(
            Severity::Error,
            "sshd-usepam",
            at("UsePAM no"),
            "sshd does not use PAM, so pam_twofactor never runs for SSH",
            "set UsePAM yes",
        ));
    }
    if !s.kbd_interactive {
        f.push(Finding::new(
            Severity::Error,
            "sshd-kbdint",
            at("KbdInteractiveAuthentication no"),
            "sshd cannot ask PAM's questions, so the code prompt never appears (and enrolment at login cannot work)",
            "set KbdInteractiveAuthentication yes",
        ));
    }
    if s.password && !s.methods_require_kbd() {
        f.push(Finding::new(
            Severity::Warning,
            "sshd-password",
            at("PasswordAuthentication yes"),
            "sshd's own password method logs users in without ever showing the code prompt",
            "set PasswordAuthentication no and AuthenticationMethods keyboard-interactive (or publickey,keyboard-interactive)",
        ));
    }
    if s.pubkey && !s.methods_require_kbd() {
        f.push(Finding::new(
            if policy.anyone_required { Severity::Warning } else { Severity::Info },
            "sshd-pubkey",
            at("PubkeyAuthentication yes"),
            "public-key logins skip PAM's auth stack, and so the second factor",
            "set AuthenticationMethods publickey,keyboard-interactive to ask for the code after the key",
        ));
    }
    let root_allowed = s.permit_root_login != "no" && s.permit_root_login != "forced-commands-only";
    if root_allowed && !policy.root_covered {
        f.push(Finding::new(
            Severity::Warning,
            "sshd-root",
            at(&format!("PermitRootLogin {}", s.permit_root_login)),
            "root may log in over SSH but is neither exempt nor enrolled",
            "set PermitRootLogin no, or enrol root, or add root to enforce.exempt_users on purpose",
        ));
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Files(HashMap<&'static str, &'static str>);
    impl PamFiles for Files {
        fn read(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|s| s.to_string())
        }
    }

    /// Debian 12's common-auth after `pam-auth-update --enable twofactor`.
    const DEBIAN_ENABLED: &str = "auth\t[success=1 default=ignore]\tpam_unix.so nullok\nauth\trequisite\t\t\tpam_deny.so\nauth\trequired\t\t\tpam_permit.so\nauth\trequired\t\t\tpam_twofactor.so \nauth\toptional\t\t\tpam_cap.so \n";

    fn ids(f: &[Finding]) -> Vec<&'static str> {
        f.iter().map(|x| x.id).collect()
    }

    #[test]
    fn debian_common_auth_with_the_profile_is_clean() {
        let files = Files(HashMap::from([
            (
                "sshd",
                "@include common-auth\naccount required pam_unix.so\n",
            ),
            ("common-auth", DEBIAN_ENABLED),
        ]));
        let stack = auth_stack(&files, "sshd").unwrap();
        assert_eq!(stack.len(), 5);
        assert_eq!(stack[3].location, "common-auth:4");
        assert!(
            check_stack("sshd", &stack).is_empty(),
            "{:?}",
            check_stack("sshd", &stack)
        );
    }

    #[test]
    fn sufficient_or_jumps_over_the_module_are_errors() {
        for (text, id) in [
            (
                "auth sufficient pam_unix.so\nauth required pam_twofactor.so\n",
                "skippable",
            ),
            (
                "auth [success=done default=ignore] pam_unix.so\nauth required pam_twofactor.so\n",
                "skippable",
            ),
            (
                "auth [success=2 default=ignore] pam_unix.so\nauth requisite pam_deny.so\nauth required pam_twofactor.so\n",
                "skippable",
            ),
            (
                "auth required pam_unix.so\nauth sufficient pam_twofactor.so\n",
                "bypass",
            ),
            (
                "auth sufficient pam_twofactor.so\nauth required pam_unix.so\n",
                "bypass",
            ),
            (
                "auth required pam_twofactor.so\nauth required pam_unix.so\n",
                "order",
            ),
            ("auth required pam_twofactor.so\n", "no-password"),
        ] {
            let files = Files(HashMap::from([("svc", text)]));
            let found = check_stack("svc", &auth_stack(&files, "svc").unwrap());
            assert!(ids(&found).contains(&id), "{text:?} -> {found:?}");
        }
    }

    #[test]
    fn substack_include_continuations_and_paths() {
        let files = Files(HashMap::from([
            (
                "svc",
                "auth substack inner \\\n # a comment\nauth include other\n-auth optional /usr/lib/security/pam_x.so\n",
            ),
            (
                "inner",
                "auth required /lib/x86_64-linux-gnu/security/pam_unix.so\n",
            ),
            ("other", "auth required pam_twofactor.so debug\n"),
        ]));
        let stack = auth_stack(&files, "svc").unwrap();
        let modules: Vec<&str> = stack.iter().map(|l| l.module.as_str()).collect();
        assert_eq!(modules, ["pam_unix.so", "pam_twofactor.so", "pam_x.so"]);
        assert!(
            auth_stack(&Files(HashMap::from([("a", "@include a\n")])), "a").is_err(),
            "loops are caught"
        );
        assert!(auth_stack(&Files(HashMap::new()), "missing").is_err());
    }

    const OK: SshdPolicy = SshdPolicy {
        anyone_required: true,
        root_covered: true,
    };

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
                root_covered: false,
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
                root_covered: true,
            },
            "f",
        );
        assert!(
            info.iter()
                .any(|x| x.id == "sshd-pubkey" && x.severity == Severity::Info)
        );
    }

    impl SshdSettings {
        fn with_methods(mut self, m: &str) -> Self {
            self.methods = m.into();
            self.password = false;
            self
        }
    }
}
