//! The flow's unit tests: every prompt, message and decision through a scripted
//! conversation, a real file store in a temp dir and a manual clock.

use super::script::{Answer, Script, Step, eof, say};
use super::*;
use std::collections::HashMap;
use std::fs;
use std::sync::Arc;

use twofactor_core::backend::{Authority, Opening};
use twofactor_core::backup_codes::HashCost;
use twofactor_core::clock::{Clock, ManualClock};
use twofactor_core::enroll::Enrollment;
use twofactor_core::policy;
use twofactor_core::policy::LookupError;
use twofactor_core::random::SeededRandom;
use twofactor_core::store::Store;
use twofactor_core::totp::{SecretKey, TotpParams};
use twofactor_testkit::me;

const NOW: u64 = 1_750_000_000;
const CHEAP: HashCost = twofactor_testkit::CHEAP_HASH;

/// Users in groups: "admin" is in wheel, "rescue" in breakglass, others in users.
struct Groups;
impl Directory for Groups {
    /// "ghost" has no account; "ADMIN" is another name of "admin".
    fn account(&self, typed: &str) -> Result<Option<String>, LookupError> {
        Ok(match typed {
            "ghost" => None,
            "ADMIN" => Some("admin".into()),
            other => Some(other.to_string()),
        })
    }
    fn user_gids(&self, user: &str) -> Result<Vec<u32>, LookupError> {
        Ok(match user {
            "admin" => vec![100, 10],
            "rescue" => vec![100, 20],
            _ => vec![100],
        })
    }
    fn group_gid(&self, group: &str) -> Result<Option<u32>, LookupError> {
        Ok(
            HashMap::from([("wheel", 10), ("users", 100), ("breakglass", 20)])
                .get(group)
                .copied(),
        )
    }
}

struct World {
    _dir: tempfile::TempDir,
    config: Config,
    clock: Arc<ManualClock>,
    rng: SeededRandom,
    /// PAM_AUTHTOK as an earlier password module left it.
    password: Option<String>,
    /// What a split line kept aside for the checking line, if one ran.
    kept: Option<Option<String>>,
    /// Every decision sent to the audit log, in order.
    logged: Vec<Decision>,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.storage.state_dir = dir.path().join("state");
        Store::create(&config.storage.state_dir, me()).unwrap();
        config.policy.groups = vec!["wheel".into()];
        config.policy.exempt_groups = vec!["breakglass".into()];
        Self {
            _dir: dir,
            config,
            clock: Arc::new(ManualClock::new(NOW)),
            rng: SeededRandom::new(42),
            password: None,
            kept: None,
            logged: Vec::new(),
        }
    }

    fn store(&self) -> Store {
        Store::open_owned_by(&self.config.storage.state_dir, me()).unwrap()
    }

    fn login(
        &mut self,
        user: &str,
        rhost: Option<&str>,
        silent: bool,
        steps: Vec<Step>,
    ) -> Decision {
        let mut script = Script::new(steps);
        let (password, kept) = (self.password.clone(), self.kept.clone());
        let login = Login {
            user,
            service: "sshd",
            rhost,
            silent,
            password: password.as_deref().map(str::as_bytes),
            code_from: match &kept {
                Some(code) => CodeFrom::OnePrompt(code.as_deref()),
                None => CodeFrom::Prompt,
            },
            ssh_auth_info: None,
            after_login: None,
        };
        self.with_env(|env| authenticate(&mut script, &login, env).0)
    }

    /// Runs `f` with the world as the flow sees it; decisions go to `logged`.
    fn with_env<R>(&mut self, f: impl FnOnce(&mut Env<'_>) -> R) -> R {
        let logged = &mut self.logged;
        let mut audit = |d: &Decision, _: Option<&str>, _: Option<&str>| logged.push(d.clone());
        let mut env = Env {
            config: &self.config,
            directory: &Groups,
            store: Opening {
                owner: me(),
                clock: self.clock.clone(),
                hash_cost: CHEAP,
            },
            rng: &mut self.rng,
            host: "testhost".into(),
            audit: &mut audit,
            served_by: None,
        };
        f(&mut env)
    }

    /// The split line for `typed`, read from the one prompt: `(password, code)` when a
    /// code is split off.
    fn split(
        &mut self,
        user: &str,
        typed: &str,
        steps: Vec<Step>,
    ) -> Result<Option<(String, String)>, Decision> {
        let mut script = Script::new(steps);
        let login = Login {
            user,
            service: "sshd",
            rhost: None,
            silent: false,
            password: None,
            code_from: CodeFrom::Prompt,
            ssh_auth_info: None,
            after_login: None,
        };
        self.with_env(|env| split(&mut script, &login, env, typed))
            .map(|s| s.map(|s| (s.password.to_string(), s.code.to_string())))
    }

    /// Enrolls `user` directly in the store with 3 backup codes; returns the key and codes.
    fn enroll(&mut self, user: &str) -> (SecretKey, Vec<String>) {
        twofactor_testkit::enroll(&self.store(), user, &mut self.rng)
    }

    fn code(&self, key: &SecretKey) -> String {
        let p = TotpParams::default();
        key.code_at_step(&p, p.step_at(self.clock.now()))
            .to_string()
    }
}

#[test]
fn not_required_and_not_enrolled_is_ignored_without_a_prompt() {
    let mut w = World::new();
    assert_eq!(
        w.login("bob", None, false, vec![]),
        Decision::NotApplicable(Reason::NotRequired(policy::Reason::NoRule))
    );
}

#[test]
fn services_outside_enforce_services_are_ignored() {
    let mut w = World::new();
    w.config.policy.services = vec!["login".into()];
    let (_, _) = w.enroll("admin");
    // The World logs in as service "sshd": out of scope, so no prompt at all.
    assert_eq!(
        w.login("admin", None, false, vec![]),
        Decision::NotApplicable(Reason::OutOfScope {
            service: "sshd".into()
        })
    );
    w.config.policy.services = vec!["sshd".into()];
    assert!(matches!(
        w.login("admin", None, false, vec![Step::Hidden(CODE_PROMPT, eof())]),
        Decision::Deny(_)
    ));
}

#[test]
fn exempt_users_are_ignored_even_with_a_broken_store() {
    let mut w = World::new();
    fs::remove_dir(&w.config.storage.state_dir).unwrap();
    assert_eq!(
        w.login("rescue", None, false, vec![]),
        Decision::NotApplicable(Reason::Exempt(policy::Reason::ExemptGroup(
            "breakglass".into()
        )))
    );
    assert!(matches!(
        w.login(
            "bob",
            None,
            false,
            vec![Step::Error("unavailable on this server")]
        ),
        Decision::Error(ErrorKind::Unavailable, _)
    ));
}

#[test]
fn enrolled_user_is_asked_even_when_not_required() {
    let mut w = World::new();
    let (key, _) = w.enroll("bob");
    let code = w.code(&key);
    assert_eq!(
        w.login(
            "bob",
            None,
            false,
            vec![Step::Hidden(CODE_PROMPT, say(&code))]
        ),
        Decision::Allow(Reason::Totp)
    );
}

#[test]
fn wrong_codes_get_three_tries_and_count_toward_lockout() {
    let mut w = World::new();
    w.enroll("admin");
    let wrong = || Step::Hidden(CODE_PROMPT, say("000000"));
    let d = w.login(
        "admin",
        None,
        false,
        vec![
            wrong(),
            Step::Error("Wrong code"),
            wrong(),
            Step::Error("Wrong code"),
            wrong(),
            Step::Error("check that the phone"),
        ],
    );
    assert_eq!(d, Decision::Deny(Reason::WrongCode { locked_for: None }));
    assert_eq!(w.store().load("admin").unwrap().lockout.failures, 3);
    // Two more wrong codes reach max_failures (5) and lock.
    let d = w.login(
        "admin",
        None,
        false,
        vec![
            wrong(),
            Step::Error("Wrong code"),
            wrong(),
            Step::Error("locked for 5 minutes"),
        ],
    );
    assert_eq!(
        d,
        Decision::Deny(Reason::WrongCode {
            locked_for: Some(300)
        })
    );
    // Locked: refused with no prompt at all, saying for how long and what to do.
    w.clock.advance(60);
    let d = w.login(
        "admin",
        None,
        false,
        vec![Step::Error("twofactor unlock admin")],
    );
    assert_eq!(d, Decision::Deny(Reason::Locked { seconds: 240 }));
}

#[test]
fn each_recorded_failure_is_logged_at_once_and_the_last_not_twice() {
    let mut w = World::new();
    w.enroll("admin");
    let wrong = || Step::Hidden(CODE_PROMPT, say("000000"));
    // One wrong code, then the user hangs up.
    let d = w.login(
        "admin",
        None,
        false,
        vec![wrong(), Step::Error("Wrong code"), Step::Fail],
    );
    assert!(matches!(d, Decision::Error(ErrorKind::Conversation, _)));
    let wrong_once = Decision::Deny(Reason::WrongCode { locked_for: None });
    assert_eq!(w.logged, [wrong_once.clone(), d]);
    assert_eq!(w.store().load("admin").unwrap().lockout.failures, 1);

    w.logged.clear();
    let d = w.login(
        "admin",
        None,
        false,
        vec![
            wrong(),
            Step::Error("Wrong code"),
            wrong(),
            Step::Error("Wrong code"),
            wrong(),
            Step::Error("Wrong code"),
        ],
    );
    assert_eq!(d, wrong_once);
    assert_eq!(w.logged, vec![wrong_once; 3], "one line per failure");
}

#[test]
fn the_password_at_the_code_prompt_is_refused_and_not_counted() {
    let mut w = World::new();
    let (key, _) = w.enroll("admin");
    w.password = Some("Correct-Horse-42".into());
    let d = w.login(
        "admin",
        None,
        false,
        vec![
            Step::Hidden(CODE_PROMPT, say("Correct-Horse-42")),
            Step::Error("answered with your password"),
        ],
    );
    assert_eq!(d, Decision::Deny(Reason::PasswordAtCodePrompt));
    assert_eq!(w.logged, [d]);
    let state = w.store().load("admin").unwrap();
    assert_eq!(state.lockout.failures, 0, "not a code guess");
    // A real code still works, and so does a wrong one count.
    let code = w.code(&key);
    let d = w.login(
        "admin",
        None,
        false,
        vec![Step::Hidden(CODE_PROMPT, say(&code))],
    );
    assert_eq!(d, Decision::Allow(Reason::Totp));

    // At the enrollment prompt too: nothing is saved.
    w.config.policy.users = vec!["carol".into()];
    let d = w.login(
        "carol",
        None,
        false,
        vec![
            Step::Info("Set it up now"),
            Step::Hidden(ENROLL_PROMPT, say("Correct-Horse-42")),
            Step::Error("answered with your password"),
        ],
    );
    assert_eq!(d, Decision::Deny(Reason::PasswordAtCodePrompt));
    assert!(!w.store().load("carol").unwrap().is_enrolled());
}

#[test]
fn a_replayed_code_is_refused_with_advice_to_wait() {
    let mut w = World::new();
    let (key, _) = w.enroll("admin");
    let code = w.code(&key);
    assert_eq!(
        w.login(
            "admin",
            None,
            false,
            vec![Step::Hidden(CODE_PROMPT, say(&code))]
        ),
        Decision::Allow(Reason::Totp)
    );
    w.clock.advance(10);
    let d = w.login(
        "admin",
        None,
        false,
        vec![
            Step::Hidden(CODE_PROMPT, say(&code)),
            Step::Error("already used.\nWait for the next code"),
            Step::Hidden(CODE_PROMPT, eof()),
        ],
    );
    assert_eq!(d, Decision::Deny(Reason::NoCode));
    w.clock.advance(30);
    let next = w.code(&key);
    assert_eq!(
        w.login(
            "admin",
            None,
            false,
            vec![Step::Hidden(CODE_PROMPT, say(&next))]
        ),
        Decision::Allow(Reason::Totp)
    );
}

#[test]
fn backup_codes_work_once_and_report_what_is_left() {
    let mut w = World::new();
    let (_, codes) = w.enroll("admin");
    let d = w.login(
        "admin",
        None,
        false,
        vec![
            Step::Hidden(CODE_PROMPT, say(&codes[0])),
            Step::Info("Backup code accepted.\n2 backup codes left.\nMake new ones soon with: twofactor backup-codes"),
        ],
    );
    assert_eq!(d, Decision::Allow(Reason::BackupCode { left: 2 }));
    let d = w.login(
        "admin",
        None,
        false,
        vec![
            Step::Hidden(CODE_PROMPT, say(&codes[0])),
            Step::Error("Wrong code"),
            Step::Hidden(CODE_PROMPT, say(&codes[1].to_uppercase())),
            Step::Info("1 backup code left"),
        ],
    );
    assert_eq!(d, Decision::Allow(Reason::BackupCode { left: 1 }));
    let d = w.login(
        "admin",
        None,
        false,
        vec![
            Step::Hidden(CODE_PROMPT, say(&codes[2])),
            Step::Info("0 backup codes left.\nMake new ones now"),
        ],
    );
    assert_eq!(d, Decision::Allow(Reason::BackupCode { left: 0 }));
}

fn key_from(shown: &[String]) -> SecretKey {
    let text = shown
        .iter()
        .find(|t| t.contains("Key:"))
        .expect("key shown");
    let line = text.lines().find(|l| l.starts_with("Key:")).unwrap();
    SecretKey::from_base32(line.trim_start_matches("Key:")).unwrap()
}

fn code_from_shown(now: u64) -> Answer {
    Box::new(move |shown| {
        let p = TotpParams::default();
        Some(key_from(shown).code_at_step(&p, p.step_at(now)).to_string())
    })
}

#[test]
fn required_user_enrolls_at_login() {
    let mut w = World::new();
    let d = w.login(
        "admin",
        Some("10.1.2.3"),
        false,
        vec![
            Step::Info("otpauth://totp/testhost:admin?secret="),
            Step::Hidden(ENROLL_PROMPT, say("123")),
            Step::Error("does not match"),
            Step::Hidden(ENROLL_PROMPT, code_from_shown(NOW)),
            Step::Info("backup codes"),
            Step::Visible("Press Enter", say("")),
        ],
    );
    assert_eq!(d, Decision::Allow(Reason::Enrolled));
    let state = w.store().load("admin").unwrap();
    let auth = state.authenticator.unwrap();
    assert_eq!(
        auth.last_step,
        Some(NOW / 30),
        "the enrolment code counts as used"
    );
    assert_eq!(state.backup_codes.unwrap().remaining(), 10);
    // The same code cannot log in again.
    let code = w.code(&auth.secret);
    let d = w.login(
        "admin",
        None,
        false,
        vec![
            Step::Hidden(CODE_PROMPT, say(&code)),
            Step::Error("already used"),
            Step::Hidden(CODE_PROMPT, eof()),
        ],
    );
    assert_eq!(d, Decision::Deny(Reason::NoCode));
}

#[test]
fn enrollment_text_fits_80_columns() {
    let w = World::new();
    let e = Enrollment::new(
        &w.config,
        "a-rather-long-user-name",
        "build-server-01.example.com",
        &mut SeededRandom::new(1),
    )
    .unwrap();
    let text = enrollment_text(&w.config, &e);
    assert!(
        text.lines().next().unwrap().len() <= 40,
        "room for ssh's (user@host) prefix"
    );
    // The URI and account label are data to copy whole, so only they may run long.
    for line in text
        .lines()
        .filter(|l| !l.starts_with("URI:") && !l.starts_with("Account:"))
    {
        assert!(
            line.chars().count() <= 80,
            "{} columns: {line}",
            line.chars().count()
        );
    }
    assert!(text.contains("Account: build-server-01.example.com:a-rather-long-user-name\n"));
    assert!(!text.contains("algorithm="), "defaults are left out");
}

/// The part the user acts on comes last: the QR code, then the key, and nothing after
/// them but the prompt. For the demo's account that is 22 rows, so with the prompt it
/// fits a 24-row screen while the explanations above scroll away.
#[test]
fn the_qr_code_and_key_come_last_and_fit_24_rows() {
    let mut w = World::new();
    w.config.enroll.issuer = Some("twofactor demo".into());
    let e = Enrollment::new(&w.config, "demo", "vm", &mut SeededRandom::new(1)).unwrap();
    let text = enrollment_text(&w.config, &e);
    let lines: Vec<&str> = text.lines().collect();
    let first_qr = lines
        .iter()
        .position(|l| l.contains('█') || l.contains('▀'))
        .unwrap();
    let tail = &lines[first_qr..];
    assert!(tail.last().unwrap().starts_with("Key:     "), "{text}");
    assert!(
        tail[..tail.len() - 1]
            .iter()
            .all(|l| l.chars().all(|c| " █▀▄".contains(c))),
        "only the QR code between its top row and the key:\n{text}"
    );
    let with_prompt = tail.len() + 1;
    assert!(with_prompt <= 24, "{with_prompt} rows with the prompt");
    assert!(!text.ends_with('\n'), "a trailing newline would cost a row");
}

#[test]
fn failed_enrollment_saves_nothing() {
    let mut w = World::new();
    let bad = || Step::Hidden(ENROLL_PROMPT, say("000000"));
    let d = w.login(
        "admin",
        None,
        false,
        vec![
            Step::Info("Key:"),
            bad(),
            Step::Error("does not match"),
            bad(),
            Step::Error("does not match"),
            bad(),
            Step::Error("does not match"),
            Step::Error("not finished"),
        ],
    );
    assert!(matches!(d, Decision::Deny(_)));
    assert!(!w.store().load("admin").unwrap().is_enrolled());
}

#[test]
fn grace_logins_count_down_then_refuse() {
    let mut w = World::new();
    w.config.enroll.at_login = false;
    w.config.enroll.grace_logins = 2;
    assert_eq!(
        w.login(
            "admin",
            None,
            false,
            vec![Step::Info("1 more login will be allowed")]
        ),
        Decision::Allow(Reason::Grace { left: 1 })
    );
    assert_eq!(
        w.login("admin", None, false, vec![Step::Info("0 more logins")]),
        Decision::Allow(Reason::Grace { left: 0 })
    );
    assert_eq!(
        w.login(
            "admin",
            None,
            false,
            vec![Step::Error("Ask an administrator")]
        ),
        Decision::Deny(Reason::NoGraceLeft)
    );
}

#[test]
fn enrollment_only_from_allowed_networks() {
    let mut w = World::new();
    w.config.enroll.at_login_networks = vec!["10.0.0.0/8".parse().unwrap()];
    let d = w.login(
        "admin",
        Some("192.0.2.9"),
        false,
        vec![Step::Error("from an allowed network")],
    );
    assert_eq!(d, Decision::Deny(Reason::NoGraceLeft));
    let d = w.login(
        "admin",
        None,
        false,
        vec![Step::Error("from an allowed network")],
    );
    assert_eq!(d, Decision::Deny(Reason::NoGraceLeft));
    let d = w.login(
        "admin",
        Some("10.9.9.9"),
        false,
        vec![Step::Info("Key:"), Step::Hidden(ENROLL_PROMPT, eof())],
    );
    assert_eq!(d, Decision::Deny(Reason::NoCode));
}

#[test]
fn trusted_host_skips_the_prompt_until_expiry() {
    let mut w = World::new();
    w.config.trusted_devices.enabled = true;
    w.config.trusted_devices.days = 2;
    let (key, _) = w.enroll("admin");
    let code = w.code(&key);
    let d = w.login(
        "admin",
        Some("10.0.0.7"),
        false,
        vec![
            Step::Hidden(CODE_PROMPT, say(&code)),
            Step::Visible("from 10.0.0.7 for 2 days? [y/N]", say("y")),
            Step::Info("will not ask"),
        ],
    );
    assert_eq!(d, Decision::Allow(Reason::Totp));
    w.clock.advance(86_400);
    assert_eq!(
        w.login("admin", Some("10.0.0.7"), false, vec![]),
        Decision::Allow(Reason::Trusted)
    );
    // Another host is still asked, and declining stores nothing.
    let code = w.code(&key);
    let d = w.login(
        "admin",
        Some("10.0.0.8"),
        false,
        vec![
            Step::Hidden(CODE_PROMPT, say(&code)),
            Step::Visible("[y/N]", say("n")),
        ],
    );
    assert_eq!(d, Decision::Allow(Reason::Totp));
    w.clock.advance(86_400);
    let code = w.code(&key);
    let d = w.login(
        "admin",
        Some("10.0.0.7"),
        false,
        vec![
            Step::Hidden(CODE_PROMPT, say(&code)),
            Step::Visible("[y/N]", say("")),
        ],
    );
    assert_eq!(
        d,
        Decision::Allow(Reason::Totp),
        "trust expired after 2 days"
    );
}

#[test]
fn no_trust_offered_without_a_remote_host() {
    let mut w = World::new();
    w.config.trusted_devices.enabled = true;
    let (key, _) = w.enroll("admin");
    let code = w.code(&key);
    assert_eq!(
        w.login(
            "admin",
            None,
            false,
            vec![Step::Hidden(CODE_PROMPT, say(&code))]
        ),
        Decision::Allow(Reason::Totp)
    );
    assert!(
        w.store()
            .load("admin")
            .unwrap()
            .trusted_devices
            .0
            .is_empty()
    );
}

#[test]
fn disabled_authenticator_is_ignored_unless_required() {
    let mut w = World::new();
    w.enroll("bob");
    w.enroll("admin");
    for user in ["bob", "admin"] {
        assert!(
            w.store()
                .set_enabled(user, Authority::Admin, false)
                .unwrap()
        );
    }
    assert_eq!(
        w.login("bob", None, false, vec![]),
        Decision::NotApplicable(Reason::Disabled)
    );
    // Required: treated as not enrolled, so enrollment starts.
    let d = w.login(
        "admin",
        None,
        false,
        vec![Step::Info("Key:"), Step::Hidden(ENROLL_PROMPT, eof())],
    );
    assert_eq!(d, Decision::Deny(Reason::NoCode));
}

#[test]
fn silent_hides_messages_and_enrollment() {
    let mut w = World::new();
    let (_, codes) = w.enroll("bob");
    assert_eq!(
        w.login(
            "bob",
            None,
            true,
            vec![Step::Hidden(CODE_PROMPT, say(&codes[0]))]
        ),
        Decision::Allow(Reason::BackupCode { left: 2 })
    );
    assert_eq!(
        w.login("admin", None, true, vec![]),
        Decision::Deny(Reason::NoGraceLeft)
    );
}

#[test]
fn empty_eof_junk_and_huge_input_are_handled() {
    let mut w = World::new();
    w.enroll("bob");
    let huge = "9".repeat(100_000);
    let d = w.login(
        "bob",
        None,
        false,
        vec![
            Step::Hidden(CODE_PROMPT, say("")),
            Step::Error("No code entered"),
            Step::Hidden(CODE_PROMPT, say("abc!é\u{0}")),
            Step::Error("Wrong code"),
            Step::Hidden(CODE_PROMPT, say(&huge)),
            Step::Error("Wrong code"),
        ],
    );
    assert_eq!(d, Decision::Deny(Reason::WrongCode { locked_for: None }));
    assert_eq!(
        w.login("bob", None, false, vec![Step::Hidden(CODE_PROMPT, eof())]),
        Decision::Deny(Reason::NoCode)
    );
}

#[test]
fn conversation_failure_and_corrupt_state_fail_closed() {
    let mut w = World::new();
    w.enroll("bob");
    assert!(matches!(
        w.login("bob", None, false, vec![Step::Fail]),
        Decision::Error(ErrorKind::Conversation, _)
    ));
    fs::write(w.config.storage.state_dir.join("bob.json"), b"{ broken").unwrap();
    let d = w.login(
        "bob",
        None,
        false,
        vec![Step::Error("unavailable on this server")],
    );
    assert!(
        matches!(&d, Decision::Error(ErrorKind::Unavailable, e) if e.contains("corrupt")),
        "{d:?}"
    );
}

/// Every file in the state dir with its bytes, to show that nothing was written.
fn state_files(w: &World) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(&w.config.storage.state_dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let bytes = fs::read(&path).unwrap_or_default();
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn the_split_line_splits_only_for_an_enabled_authenticator_and_writes_nothing() {
    let mut w = World::new();
    w.enroll("admin");
    w.enroll("bob");
    w.enroll("rescue");
    let before = state_files(&w);
    // An enabled authenticator: the code comes off, directly or after one space.
    for typed in ["hunter2123456", "hunter2 123456"] {
        assert_eq!(
            w.split("admin", typed, vec![]).unwrap(),
            Some(("hunter2".into(), "123456".into())),
            "{typed}"
        );
    }
    // Not required but enrolled: asked for a code at the check, so split as well.
    assert!(w.split("bob", "pw654321", vec![]).unwrap().is_some());
    // An alias splits for its account.
    assert!(w.split("ADMIN", "pw 123456", vec![]).unwrap().is_some());
    // A password that ends in digits stays whole for everyone without an enabled
    // authenticator: not enrolled, exempt, unknown, out of scope.
    for user in ["carol", "rescue", "ghost"] {
        assert_eq!(
            w.split(user, "summer2024123456", vec![]).unwrap(),
            None,
            "{user}"
        );
    }
    w.config.policy.services = vec!["login".into()];
    assert_eq!(w.split("admin", "hunter2123456", vec![]).unwrap(), None);
    assert_eq!(state_files(&w), before, "the split line wrote state");
    assert!(w.logged.is_empty(), "{:?}", w.logged);
}

#[test]
fn the_split_line_refuses_when_the_check_could_not_be_made() {
    let mut w = World::new();
    w.enroll("admin");
    fs::write(w.config.storage.state_dir.join("admin.json"), b"{ broken").unwrap();
    let refused = w
        .split(
            "admin",
            "hunter2123456",
            vec![Step::Error("unavailable on this server")],
        )
        .unwrap_err();
    assert!(
        matches!(&refused, Decision::Error(ErrorKind::Unavailable, e) if e.contains("corrupt")),
        "{refused:?}"
    );
    assert_eq!(w.logged, vec![refused]);
    // A break-glass account needs no state: its password goes through whole.
    assert_eq!(w.split("rescue", "pw123456", vec![]).unwrap(), None);
}

#[test]
fn the_checking_line_uses_the_kept_code_once_and_asks_nothing() {
    let mut w = World::new();
    let (key, _) = w.enroll("admin");
    w.kept = Some(Some(w.code(&key)));
    // No code prompt, and no trust question even from a trustable host.
    w.config.trusted_devices.enabled = true;
    assert_eq!(
        w.login("admin", Some("10.0.0.7"), false, vec![]),
        Decision::Allow(Reason::Totp)
    );
    // The same code again is a replay: one try, refused, not counted.
    assert_eq!(
        w.login("admin", None, false, vec![Step::Error("already used")]),
        Decision::Deny(Reason::Replay)
    );
    w.kept = Some(Some("000000".into()));
    assert_eq!(
        w.login("admin", None, false, vec![Step::Error("Wrong code")]),
        Decision::Deny(Reason::WrongCode { locked_for: None })
    );
    assert_eq!(w.store().load("admin").unwrap().lockout.failures, 1);
    // Nothing after the password: told how to type it, and nothing is counted.
    w.kept = Some(None);
    assert_eq!(
        w.login(
            "admin",
            None,
            false,
            vec![Step::Error("followed by the current code")]
        ),
        Decision::Deny(Reason::NoCode)
    );
    assert_eq!(w.store().load("admin").unwrap().lockout.failures, 1);
}

#[test]
fn a_backup_code_after_the_password_is_spent_once() {
    let mut w = World::new();
    let (_, codes) = w.enroll("admin");
    let typed = format!("hunter2 {}", codes[0]);
    let (password, code) = w.split("admin", &typed, vec![]).unwrap().unwrap();
    assert_eq!(password, "hunter2");
    w.kept = Some(Some(code.clone()));
    assert_eq!(
        w.login(
            "admin",
            None,
            false,
            vec![Step::Info("Backup code accepted")]
        ),
        Decision::Allow(Reason::BackupCode { left: 2 })
    );
    w.kept = Some(Some(code));
    assert!(matches!(
        w.login("admin", None, false, vec![Step::Error("Wrong code")]),
        Decision::Deny(Reason::WrongCode { .. })
    ));
}

#[test]
fn one_prompt_cannot_enroll_but_says_how() {
    let mut w = World::new();
    w.kept = Some(None);
    // Enrollment at login is on, but no QR code can be shown after one prompt.
    assert_eq!(
        w.login("admin", None, false, vec![Step::Error("twofactor enroll")]),
        Decision::Deny(Reason::NoGraceLeft)
    );
    assert!(w.store().load("admin").unwrap().authenticator.is_none());
    w.config.enroll.grace_logins = 1;
    assert_eq!(
        w.login("admin", None, false, vec![Step::Info("twofactor enroll")]),
        Decision::Allow(Reason::Grace { left: 0 })
    );
}
