//! `twofactor doctor`'s rules: PAM stacks ([`pam`]), sshd's settings ([`sshd`]), the
//! fleet database ([`fleet`]) and the policy, state and clock ([`policy`]) that make the second factor silently skipped, or
//! lock everyone out. Every rule is a pure function over facts the command gathers (file
//! text, `sshd -T` output, account lookups, the clock's state), so each is unit-tested
//! without root; the command only gathers and prints.

use std::fmt;

use serde::Serialize;

pub mod fleet;
pub mod pam;
pub mod policy;
pub mod sshd;

pub use pam::{
    AuthLine, Control, FirstFactor, Item, MODULE, PamFiles, auth_stack, auth_tree,
    check_module_args, check_stack,
};
pub use sshd::{SshdPolicy, SshdSettings, check_sshd};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// 2FA is bypassed or logins break.
    Error,
    /// Probably not what the admin wants.
    Warning,
    /// Worth knowing.
    Info,
}

impl fmt::Display for Level {
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
    pub severity: Level,
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
        severity: Level,
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

/// The name in `candidates` closest to `name` by edit distance, if one is close enough to
/// be a likely typo (at most 2 edits, or a third of the name).
pub fn nearest<'a>(name: &str, candidates: &'a [String]) -> Option<&'a str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut diag = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let up = row[j + 1];
                row[j + 1] = (diag + usize::from(ca != *cb)).min(up + 1).min(row[j] + 1);
                diag = up;
            }
        }
        row[b.len()]
    }
    let limit = (name.chars().count() / 3).max(2);
    candidates
        .iter()
        .map(|c| (distance(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, c.len()))
        .map(|(_, c)| c.as_str())
}

/// The ids of `findings`, in order, for tests.
#[cfg(test)]
fn ids(findings: &[Finding]) -> Vec<&'static str> {
    findings.iter().map(|f| f.id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_service_names() {
        let names: Vec<String> = ["sshd", "login", "sudo", "su", "common-auth", "cron"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(nearest("ssh", &names), Some("sshd"));
        assert_eq!(nearest("logn", &names), Some("login"));
        assert_eq!(nearest("sudoo", &names), Some("sudo"));
        assert_eq!(nearest("xrdp", &names), None);
    }
}
