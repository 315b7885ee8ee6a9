//! Audit events: one typed record per decision, sent to journald with a field for each
//! part (so `journalctl TWOFACTOR_USER=alice` finds them) where journald runs, and as one
//! syslog line otherwise.
//!
//! The types hold no code, secret or hash, so no rendering of an event can leak one.

use std::fmt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use crate::policy;
use crate::text::is_unsafe;

/// journald's native socket: present only where journald runs.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// The syslog socket.
const SYSLOG_SOCKET: &str = "/dev/log";
/// syslog facility LOG_AUTHPRIV, unshifted, as journald's SYSLOG_FACILITY has it.
const AUTHPRIV: u8 = 10;

/// syslog severities twofactor uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// LOG_ERR: something broke.
    Error = 3,
    /// LOG_WARNING: a refused login.
    Warning = 4,
    /// LOG_NOTICE: a change of state (enrollment, admin action).
    Notice = 5,
    /// LOG_INFO: a normal success or a skip.
    Info = 6,
    /// LOG_DEBUG: only with the module's `debug` argument.
    Debug = 7,
}

/// Sends one line to the local syslog daemon through `/dev/log`, facility authpriv.
/// A missing or full log socket is not an error: logging never changes a decision.
pub fn syslog(ident: &str, severity: Severity, line: &str) {
    send_to(Path::new(SYSLOG_SOCKET), ident, severity, line);
}

fn send_to(socket: &Path, ident: &str, severity: Severity, line: &str) {
    let clean: String = line
        .chars()
        .map(|c| if is_unsafe(c) { '?' } else { c })
        .collect();
    let formatter = syslog::Formatter3164 {
        facility: syslog::Facility::LOG_AUTHPRIV,
        hostname: None,
        process: ident.to_string(),
        pid: std::process::id(),
    };
    let Ok(mut logger) = syslog::unix_custom(formatter, socket) else {
        return;
    };
    let _ = match severity {
        Severity::Error => logger.err(clean),
        Severity::Warning => logger.warning(clean),
        Severity::Notice => logger.notice(clean),
        Severity::Info => logger.info(clean),
        Severity::Debug => logger.debug(clean),
    };
}

/// Sends `fields` to journald over its native protocol, as one datagram: `KEY=value`
/// lines (a value holding a newline goes as `KEY`, newline, its length as 64-bit little
/// endian, the bytes, newline). False when journald is not there to take it.
fn send_journal(socket: &Path, fields: &[(&str, String)]) -> bool {
    let is_socket = std::fs::symlink_metadata(socket).is_ok_and(|m| m.file_type().is_socket());
    if !is_socket {
        return false;
    }
    let mut datagram = Vec::new();
    for (key, value) in fields {
        datagram.extend_from_slice(key.as_bytes());
        if value.contains('\n') {
            datagram.push(b'\n');
            datagram.extend_from_slice(&(value.len() as u64).to_le_bytes());
        } else {
            datagram.push(b'=');
        }
        datagram.extend_from_slice(value.as_bytes());
        datagram.push(b'\n');
    }
    UnixDatagram::unbound().is_ok_and(|s| s.send_to(&datagram, socket).is_ok())
}

/// The MESSAGE_ID of each outcome, fixed for good: `journalctl MESSAGE_ID=...` finds
/// every refusal on any host and release.
pub mod message_id {
    /// A login or change that proved the second factor (or was let in by grace).
    pub const SUCCESS: &str = "5872c903741b451188fdaf2c7b64dadd";
    /// A refused login.
    pub const FAILURE: &str = "a262449abef9481d877f28eea7b9839f";
    /// twofactor did not apply.
    pub const IGNORE: &str = "79502d0a010f414c931158257ba3d293";
    /// Something broke and the login was refused.
    pub const ERROR: &str = "f25113c7a98b4ba38cf9cda9abc2359f";
}

/// How a decision ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The second factor was proven (or trusted, or a grace login was used).
    Success,
    /// The user was refused.
    Failure,
    /// twofactor does not apply to this user (`PAM_IGNORE`).
    Ignore,
    /// Something broke; the login was refused (fail closed).
    Error,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Ignore => "ignore",
            Self::Error => "error",
        }
    }
}

/// Why a decision was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// A correct TOTP code.
    Totp,
    /// A backup code was spent; this many are left.
    BackupCode { left: usize },
    /// The user enrolled an authenticator.
    Enrolled,
    /// A required, unenrolled user skipped enrollment; this many grace logins are left.
    Grace { left: u32 },
    /// No grace logins left and enrollment is not possible here.
    NoGraceLeft,
    /// The remote host is trusted.
    Trusted,
    /// A code typed at the session's login covers this service still (`[after_login]`).
    AfterLogin {
        /// The audit session id.
        session: u32,
        /// Seconds since that code.
        age: u64,
    },
    /// The ssh login's certificate was the second factor (`[ssh_factor]`).
    SshCertificate {
        /// Its key id.
        key_id: String,
        /// Its serial number.
        serial: u64,
        /// The CA's fingerprint.
        ca: String,
    },
    /// The user is locked for this many more seconds.
    Locked { seconds: u64 },
    /// A code that was already used.
    Replay,
    /// A backup code typed while the user's backup codes are void; not counted.
    VoidedBackupCode,
    /// A wrong code; `locked_for` is set when it started a lock.
    WrongCode { locked_for: Option<u64> },
    /// The user gave up (no code entered, conversation ended).
    NoCode,
    /// The code prompt was answered with the password just checked (sshd's password
    /// method does that); not counted as a wrong code.
    PasswordAtCodePrompt,
    /// The name service knows no account by the name given.
    UnknownAccount,
    /// Not applicable: no rule requires the user and they have not enrolled.
    NotRequired(policy::Reason),
    /// Not applicable: an exemption rule.
    Exempt(policy::Reason),
    /// The authenticator is temporarily disabled.
    Disabled,
    /// Not applicable: the PAM service is not in `enforce.services`.
    OutOfScope { service: String },
    /// An administrator or the user changed the state through the CLI.
    Admin { action: &'static str, by: String },
    /// An internal error; the text comes from twofactor's own error types.
    Error(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Totp => f.write_str("totp"),
            Self::BackupCode { left } => write!(f, "backup code ({left} left)"),
            Self::Enrolled => f.write_str("enrolled"),
            Self::Grace { left } => write!(f, "grace ({left} left)"),
            Self::NoGraceLeft => f.write_str("not enrolled, no grace logins left"),
            Self::Trusted => f.write_str("trusted"),
            Self::AfterLogin { session, age } => {
                write!(f, "code typed at this session's login (session {session}, {age} s ago)")
            }
            Self::SshCertificate { key_id, serial, ca } => {
                write!(f, "ssh certificate (key id {key_id:?}, serial {serial}, CA {ca})")
            }
            Self::Locked { seconds } => write!(f, "locked ({seconds}s left)"),
            Self::Replay => f.write_str("replay"),
            Self::VoidedBackupCode => {
                f.write_str("backup code typed, but the backup codes are void; not counted")
            }
            Self::WrongCode { locked_for: None } => f.write_str("wrong code"),
            Self::WrongCode {
                locked_for: Some(s),
            } => write!(f, "wrong code, now locked for {s}s"),
            Self::NoCode => f.write_str("no code entered"),
            Self::PasswordAtCodePrompt => f.write_str(
                "the code prompt was answered with the password, not counted as a wrong code: sshd's password authentication answers every prompt with the password; set KbdInteractiveAuthentication yes with AuthenticationMethods keyboard-interactive",
            ),
            Self::UnknownAccount => f.write_str("no such account"),
            Self::NotRequired(r) => write!(f, "not required: {r}"),
            Self::Exempt(r) => write!(f, "{r}"),
            Self::Disabled => f.write_str("authenticator temporarily disabled"),
            Self::OutOfScope { service } => {
                write!(f, "service {service} is not in enforce.services")
            }
            Self::Admin { action, by } => write!(f, "{action} by {by}"),
            Self::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// One decision about one login or one CLI change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The user the decision is about, as the application named them.
    pub user: String,
    /// The account's canonical name, where it differs from `user`.
    pub account: Option<String>,
    /// PAM service (`sshd`, `sudo`, ...) or `twofactor` for the CLI.
    pub service: String,
    /// PAM_RHOST, when there is one.
    pub rhost: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// Why.
    pub reason: Reason,
    /// The fleet database server that decided it, where one did (`db2:5432 (10.0.0.2)`).
    pub server: Option<String>,
}

/// Writes `value` so one field can never spill into another or onto a new line.
fn field(f: &mut fmt::Formatter<'_>, name: &str, value: &str) -> fmt::Result {
    f.write_str(&kv(name, value))
}

/// `name=value` for a log line, the one encoder of every field: control, format and
/// separator characters become `?`, and values with spaces, quotes, `=` or a backslash
/// are quoted, so a name such as `a b reason=ok` stays one field.
pub fn kv(name: &str, value: &str) -> String {
    let clean: String = value
        .chars()
        .map(|c| if is_unsafe(c) { '?' } else { c })
        .collect();
    if clean.is_empty() || clean.contains([' ', '"', '=', '\\']) {
        let escaped = clean.replace('\\', "\\\\").replace('"', "\\\"");
        format!("{name}=\"{escaped}\"")
    } else {
        format!("{name}={clean}")
    }
}

impl Event {
    /// The same event, naming the database server that decided it.
    #[must_use]
    pub fn with_server(mut self, server: Option<&str>) -> Self {
        self.server = server.map(str::to_string);
        self
    }

    /// The syslog severity that fits the outcome.
    pub fn severity(&self) -> Severity {
        match (self.outcome, &self.reason) {
            (Outcome::Error, _) => Severity::Error,
            (Outcome::Failure, _) => Severity::Warning,
            (_, Reason::Enrolled | Reason::Admin { .. }) => Severity::Notice,
            _ => Severity::Info,
        }
    }

    /// Sends the event to journald with its fields, or to syslog as one line where
    /// journald does not run.
    pub fn log(&self, ident: &str) {
        self.log_to(ident, Path::new(JOURNAL_SOCKET), Path::new(SYSLOG_SOCKET));
    }

    fn log_to(&self, ident: &str, journal: &Path, syslog: &Path) {
        if !send_journal(journal, &self.journal_fields(ident)) {
            send_to(syslog, ident, self.severity(), &self.to_string());
        }
    }

    /// The fields journald stores: the syslog line as MESSAGE, and each part of it on
    /// its own (`TWOFACTOR_USER`, `TWOFACTOR_OUTCOME`...), cleaned as the line is.
    pub fn journal_fields(&self, ident: &str) -> Vec<(&'static str, String)> {
        let clean = |v: &str| -> String {
            v.chars()
                .map(|c| if is_unsafe(c) { '?' } else { c })
                .collect()
        };
        let id = match self.outcome {
            Outcome::Success => message_id::SUCCESS,
            Outcome::Failure => message_id::FAILURE,
            Outcome::Ignore => message_id::IGNORE,
            Outcome::Error => message_id::ERROR,
        };
        let mut fields = vec![
            ("MESSAGE", clean(&self.to_string())),
            ("MESSAGE_ID", id.to_string()),
            ("PRIORITY", (self.severity() as u8).to_string()),
            ("SYSLOG_FACILITY", AUTHPRIV.to_string()),
            ("SYSLOG_IDENTIFIER", clean(ident)),
            ("SYSLOG_PID", std::process::id().to_string()),
            ("TWOFACTOR_USER", clean(&self.user)),
            ("TWOFACTOR_SERVICE", clean(&self.service)),
            ("TWOFACTOR_OUTCOME", self.outcome.as_str().to_string()),
            ("TWOFACTOR_REASON", clean(&self.reason.to_string())),
        ];
        if let Some(a) = self.account.as_deref().filter(|a| *a != self.user) {
            fields.push(("TWOFACTOR_ACCOUNT", clean(a)));
        }
        if let Some(r) = &self.rhost {
            fields.push(("TWOFACTOR_RHOST", clean(r)));
        }
        if let Some(s) = &self.server {
            fields.push(("TWOFACTOR_SERVER", clean(s)));
        }
        fields
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        field(f, "user", &self.user)?;
        f.write_str(" ")?;
        if let Some(account) = self.account.as_deref().filter(|a| *a != self.user) {
            field(f, "account", account)?;
            f.write_str(" ")?;
        }
        field(f, "service", &self.service)?;
        f.write_str(" ")?;
        field(f, "rhost", self.rhost.as_deref().unwrap_or("-"))?;
        write!(f, " outcome={} ", self.outcome.as_str())?;
        field(f, "reason", &self.reason.to_string())?;
        if let Some(server) = &self.server {
            f.write_str(" ")?;
            field(f, "server", server)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(reason: Reason) -> Event {
        Event {
            user: "alice".into(),
            account: None,
            service: "sshd".into(),
            rhost: Some("192.0.2.7".into()),
            outcome: Outcome::Success,
            reason,
            server: None,
        }
    }

    #[test]
    fn renders_one_line_with_every_field() {
        assert_eq!(
            event(Reason::BackupCode { left: 3 }).to_string(),
            r#"user=alice service=sshd rhost=192.0.2.7 outcome=success reason="backup code (3 left)""#
        );
        let e = Event {
            rhost: None,
            outcome: Outcome::Ignore,
            ..event(Reason::Exempt(policy::Reason::ExemptUser))
        };
        assert_eq!(
            e.to_string(),
            r#"user=alice service=sshd rhost=- outcome=ignore reason="exempt by enforce.exempt_users""#
        );
    }

    #[test]
    fn hostile_fields_cannot_forge_or_split_lines() {
        let e = Event {
            user: "eve\nuser=root outcome=success".into(),
            account: None,
            rhost: Some("a\" outcome=success".into()),
            ..event(Reason::Totp)
        };
        let line = e.to_string();
        assert!(!line.contains('\n'));
        let fields = parse(&line);
        let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["user", "service", "rhost", "outcome", "reason"],
            "{line}"
        );
        assert_eq!(fields[0].1, "eve?user=root outcome=success");
        assert_eq!(fields[2].1, "a\" outcome=success");
        assert_eq!(fields[3].1, "success");
    }

    #[test]
    fn free_form_lines_quote_names_through_the_one_encoder() {
        // A name with spaces (LDAP, SSSD) stays one field; a bidi override cannot reorder
        // what a reader sees after it.
        let line = format!("{} session 7 recorded", kv("user", "domain user reason=ok"));
        let fields = parse(&line);
        assert_eq!(
            fields[0],
            ("user".into(), "domain user reason=ok".into()),
            "{line}"
        );
        assert!(!fields.iter().any(|(k, _)| k == "reason"), "{line}");
        assert_eq!(kv("user", "alice\u{202e}nimda"), "user=alice?nimda");
        assert_eq!(kv("user", "a\u{2028}b"), "user=a?b");
        assert_eq!(kv("user", "alice"), "user=alice");
        let e = Event {
            user: "eve\u{202e}toor".into(),
            ..event(Reason::Totp)
        };
        assert!(e.to_string().starts_with("user=eve?toor "), "{e}");
    }

    /// Splits `k=v k="quoted \" value"` the way a log parser would.
    fn parse(line: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut chars = line.chars().peekable();
        while chars.peek().is_some() {
            let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
            let mut value = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next()),
                        '"' => break,
                        c => value.push(c),
                    }
                }
                chars.next(); // the space after the closing quote
            } else {
                value = chars.by_ref().take_while(|&c| c != ' ').collect();
            }
            out.push((key, value));
        }
        out
    }

    #[test]
    fn syslog_lines_are_authpriv_with_ident_and_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        let e = Event {
            outcome: Outcome::Failure,
            ..event(Reason::Replay)
        };
        // No journald socket: the event goes to syslog as one line.
        e.log_to("pam_twofactor", &dir.path().join("no-journal"), &path);
        let mut buf = [0u8; 512];
        let n = server.recv(&mut buf).unwrap();
        let got = std::str::from_utf8(&buf[..n]).unwrap();
        // authpriv (10) * 8 + warning (4) = 84, then RFC 3164's timestamp.
        assert!(got.starts_with("<84>"), "{got}");
        let tail = format!(" pam_twofactor[{}]: {e}", std::process::id());
        assert!(got.ends_with(&tail), "{got}");
        // No socket at all is silently fine.
        send_to(&dir.path().join("none"), "x", Severity::Info, "dropped");
    }

    /// Reads one native-protocol datagram back into fields.
    fn journal_datagram(mut d: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while !d.is_empty() {
            let end = d.iter().position(|&b| b == b'\n').unwrap();
            let line = &d[..end];
            if let Some(eq) = line.iter().position(|&b| b == b'=') {
                let k = String::from_utf8(line[..eq].to_vec()).unwrap();
                out.push((k, String::from_utf8(line[eq + 1..].to_vec()).unwrap()));
                d = &d[end + 1..];
            } else {
                let k = String::from_utf8(line.to_vec()).unwrap();
                let len = u64::from_le_bytes(d[end + 1..end + 9].try_into().unwrap()) as usize;
                let v = &d[end + 9..end + 9 + len];
                out.push((k, String::from_utf8(v.to_vec()).unwrap()));
                d = &d[end + 9 + len + 1..];
            }
        }
        out
    }

    #[test]
    fn journald_gets_one_field_per_part_and_syslog_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("journal");
        let syslog = dir.path().join("log");
        let j = UnixDatagram::bind(&journal).unwrap();
        let s = UnixDatagram::bind(&syslog).unwrap();
        s.set_nonblocking(true).unwrap();
        let e = Event {
            user: "ALICE\nforged=1".into(),
            account: Some("alice".into()),
            outcome: Outcome::Failure,
            server: Some("db1:5432".into()),
            ..event(Reason::WrongCode { locked_for: None })
        };
        e.log_to("pam_twofactor", &journal, &syslog);
        let mut buf = [0u8; 4096];
        let n = j.recv(&mut buf).unwrap();
        let fields = journal_datagram(&buf[..n]);
        let get = |k: &str| {
            fields
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("{k} missing from {fields:?}"))
        };
        assert_eq!(get("MESSAGE_ID"), message_id::FAILURE);
        assert_eq!(get("PRIORITY"), "4");
        assert_eq!(get("SYSLOG_FACILITY"), "10");
        assert_eq!(get("SYSLOG_IDENTIFIER"), "pam_twofactor");
        assert_eq!(get("TWOFACTOR_USER"), "ALICE?forged=1");
        assert_eq!(get("TWOFACTOR_ACCOUNT"), "alice");
        assert_eq!(get("TWOFACTOR_OUTCOME"), "failure");
        assert_eq!(get("TWOFACTOR_REASON"), "wrong code");
        assert_eq!(get("TWOFACTOR_SERVICE"), e.service);
        assert_eq!(get("TWOFACTOR_SERVER"), "db1:5432");
        assert_eq!(get("MESSAGE"), e.to_string());
        // One datagram, and nothing went to syslog too.
        assert!(s.recv(&mut buf).is_err());
        // A value with a newline goes in the binary form, and reads back whole.
        assert!(send_journal(
            &journal,
            &[("MESSAGE", "two\nlines".to_string())]
        ));
        let n = j.recv(&mut buf).unwrap();
        assert_eq!(
            journal_datagram(&buf[..n]),
            [("MESSAGE".to_string(), "two\nlines".to_string())]
        );
        // A path that is not a socket is not journald.
        std::fs::write(dir.path().join("file"), "").unwrap();
        assert!(!send_journal(&dir.path().join("file"), &[]));
    }

    #[test]
    fn every_reason_renders_without_placeholders() {
        let reasons = [
            Reason::Totp,
            Reason::BackupCode { left: 0 },
            Reason::Enrolled,
            Reason::Grace { left: 2 },
            Reason::NoGraceLeft,
            Reason::Trusted,
            Reason::Locked { seconds: 60 },
            Reason::Replay,
            Reason::WrongCode { locked_for: None },
            Reason::WrongCode {
                locked_for: Some(300),
            },
            Reason::NoCode,
            Reason::NotRequired(policy::Reason::NoRule),
            Reason::Exempt(policy::Reason::ExemptGroup("ops".into())),
            Reason::Disabled,
            Reason::OutOfScope {
                service: "sudo".into(),
            },
            Reason::Admin {
                action: "reset",
                by: "root".into(),
            },
            Reason::Error("state file corrupt".into()),
        ];
        for r in reasons {
            let text = event(r.clone()).to_string();
            assert!(
                !text.contains("{}") && !text.ends_with("reason=\"\""),
                "{r:?} -> {text}"
            );
        }
    }
}
