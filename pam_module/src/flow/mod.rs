//! The login flow: who is asked, what they see, and what is decided. Generic over
//! [`Conversation`], so every prompt and message is unit-tested without libpam.

use std::fmt::Write as _;

use twofactor_core::audit::Reason;
use twofactor_core::auth::{self, CodeResult};
use twofactor_core::backup_codes::HashCost;
use twofactor_core::clock::Clock;
use twofactor_core::config::Config;
use twofactor_core::enroll::Enrollment;
use twofactor_core::login::{self, LoginFacts, Step};
use twofactor_core::policy::{self, Directory};
use twofactor_core::random::Random;
use twofactor_core::store::{Store, StoreError, UserState};
use twofactor_core::trusted::RemoteHost;

use subtle::ConstantTimeEq;

use crate::conversation::{ConvError, Conversation};
use crate::decision::{Decision, ErrorKind};

mod enrol;

/// The prompt for a code at login.
pub const CODE_PROMPT: &str = "Authentication code: ";
/// The prompt for the first code when enrolling.
pub const ENROLL_PROMPT: &str = "Code from the app to finish setup: ";
/// Shown when the answer to the code prompt was the password.
pub const PASSWORD_AT_CODE_PROMPT: &str = "The code prompt was answered with your password, so no code was checked.\nIf you use ssh, this server must allow keyboard-interactive login for the code prompt\nto reach you; ask an administrator (twofactor doctor explains).";
/// Tries per login, for codes and for enrolment.
pub const MAX_TRIES: usize = 3;
/// When this few backup codes are left, the user is told how to make more.
pub const FEW_BACKUP_CODES: usize = 3;

/// Who is logging in, from where.
#[derive(Debug, Clone, Copy)]
pub struct Login<'a> {
    /// PAM_USER.
    pub user: &'a str,
    /// PAM_SERVICE.
    pub service: &'a str,
    /// PAM_RHOST, if set and not empty.
    pub rhost: Option<&'a str>,
    /// PAM_SILENT: show no information or error messages.
    pub silent: bool,
    /// PAM_AUTHTOK, the password an earlier module checked, if any: an answer equal to
    /// it is the password fed to the code prompt, not a code guess.
    pub password: Option<&'a [u8]>,
}

/// Everything the flow uses from the outside world.
pub struct Env<'a> {
    /// The validated config.
    pub config: &'a Config,
    /// Group membership.
    pub directory: &'a dyn Directory,
    /// Time.
    pub clock: &'a dyn Clock,
    /// Randomness for secrets and backup codes.
    pub rng: &'a mut dyn Random,
    /// This machine's name, for the account label.
    pub host: String,
    /// Owner required of the state directory and files (root in production).
    pub store_owner: u32,
    /// Cost of backup-code hashes made at enrolment.
    pub hash_cost: HashCost,
    /// Receives each decision as it is made, with the account's canonical name: every
    /// recorded failure at once (a disconnect after it must not lose the audit line),
    /// and the final decision.
    pub audit: &'a mut dyn FnMut(&Decision, Option<&str>),
}

impl std::fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

/// Messages to the user, quiet under PAM_SILENT.
struct Ui<'c> {
    conv: &'c mut dyn Conversation,
    silent: bool,
    /// The decision last sent to the audit log, so the final one is not logged twice.
    logged: Option<Decision>,
}

impl Ui<'_> {
    fn info(&mut self, text: &str) -> Result<(), ConvError> {
        if self.silent {
            Ok(())
        } else {
            self.conv.info(text)
        }
    }
    fn error(&mut self, text: &str) -> Result<(), ConvError> {
        if self.silent {
            Ok(())
        } else {
            self.conv.error(text)
        }
    }
}

/// An early end of the flow.
enum Stop {
    Conv(ConvError),
    Store(String),
}

impl From<ConvError> for Stop {
    fn from(e: ConvError) -> Self {
        Self::Conv(e)
    }
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Self::Store(e.to_string())
    }
}

impl From<Stop> for Decision {
    fn from(s: Stop) -> Self {
        match s {
            Stop::Conv(e) => Decision::Error(
                ErrorKind::Conversation,
                format!("conversation failed: {}", e.0),
            ),
            Stop::Store(e) => Decision::Error(ErrorKind::Unavailable, e),
        }
    }
}

fn minutes(seconds: u64) -> String {
    let m = seconds.div_ceil(60);
    if m == 1 {
        "1 minute".into()
    } else {
        format!("{m} minutes")
    }
}

/// Runs the whole second-factor step for one login. Returns the decision and, once it
/// was resolved, the account's canonical name (for the audit line).
pub fn authenticate(
    conv: &mut dyn Conversation,
    login: &Login<'_>,
    env: &mut Env<'_>,
) -> (Decision, Option<String>) {
    let mut ui = Ui {
        conv,
        silent: login.silent,
        logged: None,
    };
    let mut account = None;
    let decision = match run(&mut ui, login, env, &mut account) {
        Ok(d) => d,
        Err(stop) => stop.into(),
    };
    if let Decision::Error(ErrorKind::Unavailable | ErrorKind::Config, _) = decision {
        // The user cannot fix it, but must learn that it was not their code. A failing
        // conversation cannot change the decision.
        let _ = ui.error(UNAVAILABLE_MESSAGE);
    }
    if ui.logged.as_ref() != Some(&decision) {
        (env.audit)(&decision, account.as_deref());
    }
    (decision, account)
}

fn run(
    ui: &mut Ui<'_>,
    typed: &Login<'_>,
    env: &mut Env<'_>,
    account: &mut Option<String>,
) -> Result<Decision, Stop> {
    let config = env.config;
    // The decisions are core's (`login::next_step`); this renders them, asking in stages
    // so that nothing is looked up or read that the answer does not need.
    if let Some(step) = login::scope_step(config, Some(typed.service)) {
        return render(ui, typed, env, None, step);
    }
    // Break-glass accounts are decided by the name as typed, with no lookup, so they
    // still work when a remote directory is down.
    if config.policy.exempts_name(typed.user) {
        return render(
            ui,
            typed,
            env,
            None,
            Step::Exempt(policy::Reason::ExemptUser),
        );
    }
    // Everything else is keyed by the account's one canonical name, so an alias
    // (ALICE, alice@corp.example) gets neither other rules nor other state.
    let name = match env.directory.account(typed.user) {
        Ok(Some(name)) => name,
        Ok(None) => return Ok(Decision::Deny(Reason::UnknownAccount)),
        Err(e) => return Ok(Decision::Error(ErrorKind::Unavailable, e.to_string())),
    };
    let login = &Login {
        user: &name,
        ..*typed
    };
    *account = Some(name.clone());
    let requirement = match config.policy.requires(login.user, env.directory) {
        Ok(r) => r,
        Err(e) => return Ok(Decision::Error(ErrorKind::Unavailable, e.to_string())),
    };
    // Decided before touching the store, so break-glass accounts work on a full or
    // broken disk.
    if let Some(step) = login::exempt_step(&requirement) {
        return render(ui, login, env, None, step);
    }
    let store = Store::open_owned_by(&config.storage.state_dir, env.store_owner)?;
    let state = store.load(login.user)?;
    let facts = LoginFacts {
        service: Some(login.service),
        rhost: login.rhost,
        silent: login.silent,
    };
    let step = login::next_step(config, &requirement, &state, &facts, env.clock.now());
    render(ui, login, env, Some((&store, &state)), step)
}

/// Carries out `step`: the prompts and messages it needs, and the state it changes.
fn render(
    ui: &mut Ui<'_>,
    login: &Login<'_>,
    env: &mut Env<'_>,
    store: Option<(&Store, &UserState)>,
    step: Step,
) -> Result<Decision, Stop> {
    let decision = match step {
        Step::OutOfScope => Decision::NotApplicable(Reason::OutOfScope {
            service: login.service.to_string(),
        }),
        Step::Exempt(r) => Decision::NotApplicable(Reason::Exempt(r)),
        Step::NotRequired(r) => Decision::NotApplicable(Reason::NotRequired(r)),
        Step::Disabled => Decision::NotApplicable(Reason::Disabled),
        Step::Locked { seconds } => {
            ui.error(&locked_message(login.user, seconds))?;
            Decision::Deny(Reason::Locked { seconds })
        }
        Step::Trusted => Decision::Allow(Reason::Trusted),
        Step::AskCode { period } => {
            let (store, _) = store.ok_or_else(no_store)?;
            return ask_for_code(ui, login, env, store, period);
        }
        Step::Enrol => {
            let (store, state) = store.ok_or_else(no_store)?;
            return enrol::at_login(ui, login, env, store, state);
        }
        Step::Grace { .. } => {
            let (store, _) = store.ok_or_else(no_store)?;
            return enrol::grace(ui, login, env, store);
        }
        Step::NoGraceLeft { enrol_elsewhere } => {
            return enrol::refuse_unenrolled(ui, enrol_elsewhere);
        }
    };
    Ok(decision)
}

fn no_store() -> Stop {
    Stop::Store("internal error: a step that needs the state came without it".into())
}

/// Whether `answer` is the password the stack already checked (in constant time).
fn is_the_password(login: &Login<'_>, answer: &str) -> bool {
    login
        .password
        .filter(|p| !p.is_empty())
        .is_some_and(|p| bool::from(p.ct_eq(answer.as_bytes())))
}

/// The password came back at the code prompt: sshd's password method answers every
/// prompt with it. Not a code guess, so not counted, but no code will ever come.
fn refuse_password(ui: &mut Ui<'_>) -> Result<Decision, Stop> {
    ui.error(PASSWORD_AT_CODE_PROMPT)?;
    Ok(Decision::Deny(Reason::PasswordAtCodePrompt))
}

fn locked_message(user: &str, seconds: u64) -> String {
    format!(
        "Too many wrong codes.\nTwo-factor login is locked for {}. Try again later, or ask an\nadministrator to run: twofactor unlock {user}",
        minutes(seconds)
    )
}

fn ask_for_code(
    ui: &mut Ui<'_>,
    login: &Login<'_>,
    env: &mut Env<'_>,
    store: &Store,
    period: u64,
) -> Result<Decision, Stop> {
    let config = env.config;
    let mut last = Reason::NoCode;
    for _ in 0..MAX_TRIES {
        let Some(code) = ui.conv.ask_hidden(CODE_PROMPT)? else {
            return Ok(Decision::Deny(Reason::NoCode));
        };
        if code.trim().is_empty() {
            ui.error("No code entered.\nEnter the code shown in your authenticator app.")?;
            last = Reason::NoCode;
            continue;
        }
        if is_the_password(login, &code) {
            return refuse_password(ui);
        }
        let result = match auth::verify_code(store, login.user, &code, config, env.clock) {
            Ok(r) => r,
            Err(e) => return Ok(Decision::Error(ErrorKind::Unavailable, e.to_string())),
        };
        match result {
            CodeResult::Totp => {
                offer_trust(ui, login, env, store)?;
                return Ok(Decision::Allow(Reason::Totp));
            }
            CodeResult::BackupCode { left } => {
                let mut text = format!(
                    "Backup code accepted.\n{left} backup code{} left.",
                    if left == 1 { "" } else { "s" }
                );
                if left == 0 {
                    text.push_str("\nMake new ones now with: twofactor backup-codes");
                } else if left <= FEW_BACKUP_CODES {
                    text.push_str("\nMake new ones soon with: twofactor backup-codes");
                }
                ui.info(&text)?;
                offer_trust(ui, login, env, store)?;
                return Ok(Decision::Allow(Reason::BackupCode { left }));
            }
            CodeResult::Wrong { locked_for } | CodeResult::Replayed { locked_for } => {
                let replay = matches!(result, CodeResult::Replayed { .. });
                // Logged now: the failure is recorded, and the user may hang up next.
                let recorded = Decision::Deny(if replay {
                    Reason::Replay
                } else {
                    Reason::WrongCode { locked_for }
                });
                (env.audit)(&recorded, Some(login.user));
                ui.logged = Some(recorded);
                if let Some(seconds) = locked_for {
                    ui.error(&locked_message(login.user, seconds))?;
                    return Ok(Decision::Deny(Reason::WrongCode { locked_for }));
                }
                if replay {
                    ui.error(&format!(
                        "That code was already used.\nWait for the next code (up to {period} seconds) and enter it."
                    ))?;
                    last = Reason::Replay;
                } else {
                    ui.error(
                        "Wrong code.\nEnter the current code from your authenticator app, or a backup code.\nIf codes keep failing, check that the phone sets its time automatically.",
                    )?;
                    last = Reason::WrongCode { locked_for: None };
                }
            }
            CodeResult::Locked { seconds_left } => {
                ui.error(&locked_message(login.user, seconds_left))?;
                return Ok(Decision::Deny(Reason::Locked {
                    seconds: seconds_left,
                }));
            }
            CodeResult::NotEnrolled => {
                // Reset or disabled by an admin while this login was in progress.
                return Ok(Decision::Deny(Reason::Disabled));
            }
        }
    }
    Ok(Decision::Deny(last))
}

fn offer_trust(
    ui: &mut Ui<'_>,
    login: &Login<'_>,
    env: &mut Env<'_>,
    store: &Store,
) -> Result<(), Stop> {
    let settings = env.config.trusted_devices;
    let Some(host) = login
        .rhost
        .filter(|_| settings.enabled)
        .and_then(RemoteHost::parse)
        .filter(|h| h.may_be_trusted(settings.allow_host_names))
    else {
        return Ok(());
    };
    let question = format!(
        "Skip the code for {} logins from {} for {} days? [y/N]: ",
        login.service, host.host, settings.days
    );
    let answer = ui.conv.ask_visible(&question)?.unwrap_or_default();
    if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        return Ok(());
    }
    auth::trust_host(
        store,
        login.user,
        login.service,
        &host,
        settings.days,
        env.clock.now(),
        &mut *env.rng,
    )
    .map_err(|e| Stop::Store(e.to_string()))?;
    ui.info(&format!(
        "{} logins from {} will not ask for a code until {} days from now.",
        login.service, host.host, settings.days
    ))?;
    Ok(())
}

/// The text shown before the first code when enrolling at login.
pub fn enrollment_text(config: &Config, e: &Enrollment) -> String {
    let mut t = String::new();
    // OpenSSH's client puts "(user@host) " before the first line, so it stays short.
    t.push_str("Two-factor authentication is required.\nSet it up now for this account:\n");
    t.push_str(" 1. Open an authenticator app (Google Authenticator, Microsoft Authenticator,\n    FreeOTP, ...) and add an account.\n");
    t.push_str(" 2. Scan this QR code, or type the key below into the app.\n");
    t.push_str(" 3. Enter the code the app shows.\n\n");
    t.push_str(&e.scan_or_type(config.enroll.qr, false));
    t.push_str("If the picture looks garbled, type the key into the app instead.");
    t
}

/// The text that shows freshly made backup codes, two per line.
pub fn backup_codes_text(codes: &[zeroize::Zeroizing<String>]) -> String {
    let mut t = String::from(
        "Your authenticator is set up.\nIf you lose your phone, each of these backup codes lets you log in once.\nSave them somewhere safe now; they are not shown again.\n",
    );
    for pair in codes.chunks(2) {
        let line: Vec<&str> = pair.iter().map(|c| c.as_str()).collect();
        let _ = writeln!(t, "    {}", line.join("    "));
    }
    t.truncate(t.trim_end().len());
    t
}

/// What the user is told when the config is broken and no good copy stands in.
pub const BROKEN_CONFIG_MESSAGE: &str = "Login refused: the two-factor configuration on this server is broken.\nAsk an administrator to run: twofactor check-config";

/// What the user is told when an error stops the login (state, name service or
/// randomness unavailable), so they know it is not their code.
pub const UNAVAILABLE_MESSAGE: &str = "Login refused: two-factor login is unavailable on this server right now.\nTry again later, or ask an administrator to check the system log (pam_twofactor).";

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, VecDeque};
    use std::fs;
    use twofactor_core::clock::ManualClock;
    use twofactor_core::policy::LookupError;
    use twofactor_core::random::SeededRandom;
    use twofactor_core::totp::{SecretKey, TotpParams};
    use zeroize::Zeroizing;

    const NOW: u64 = 1_750_000_000;
    const CHEAP: HashCost = HashCost {
        m_kib: 64,
        t: 1,
        p: 1,
    };

    type Answer = Box<dyn FnOnce(&[String]) -> Option<String>>;

    /// One expected call: its kind, text it must contain, and for prompts the answer,
    /// computed from everything shown so far.
    enum Step {
        Hidden(&'static str, Answer),
        Visible(&'static str, Answer),
        Info(&'static str),
        Error(&'static str),
        Fail,
    }

    /// A conversation that checks every prompt and message in order, and on drop that
    /// none is left over.
    struct Script {
        steps: VecDeque<Step>,
        shown: Vec<String>,
    }

    impl Script {
        fn new(steps: Vec<Step>) -> Self {
            Self {
                steps: steps.into(),
                shown: Vec::new(),
            }
        }
        fn next(&mut self, kind: &str, text: &str) -> Step {
            self.shown.push(text.to_string());
            self.steps
                .pop_front()
                .unwrap_or_else(|| panic!("unexpected {kind}: {text:?}"))
        }
    }

    impl Drop for Script {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                assert!(
                    self.steps.is_empty(),
                    "{} expected steps never happened",
                    self.steps.len()
                );
            }
        }
    }

    impl Conversation for Script {
        fn ask_hidden(&mut self, prompt: &str) -> Result<Option<Zeroizing<String>>, ConvError> {
            match self.next("hidden prompt", prompt) {
                Step::Hidden(p, answer) => {
                    assert_eq!(prompt, p);
                    Ok(answer(&self.shown).map(Zeroizing::new))
                }
                Step::Fail => Err(ConvError("hung up".into())),
                _ => panic!("unexpected hidden prompt {prompt:?}"),
            }
        }
        fn ask_visible(&mut self, prompt: &str) -> Result<Option<String>, ConvError> {
            match self.next("visible prompt", prompt) {
                Step::Visible(p, answer) => {
                    assert!(prompt.contains(p), "{prompt:?} lacks {p:?}");
                    Ok(answer(&self.shown))
                }
                _ => panic!("unexpected visible prompt {prompt:?}"),
            }
        }
        fn info(&mut self, text: &str) -> Result<(), ConvError> {
            match self.next("info", text) {
                Step::Info(want) => assert!(text.contains(want), "info {text:?} lacks {want:?}"),
                _ => panic!("unexpected info {text:?}"),
            }
            Ok(())
        }
        fn error(&mut self, text: &str) -> Result<(), ConvError> {
            match self.next("error", text) {
                Step::Error(want) => assert!(text.contains(want), "error {text:?} lacks {want:?}"),
                _ => panic!("unexpected error {text:?}"),
            }
            Ok(())
        }
    }

    fn say(s: &str) -> Answer {
        let s = s.to_string();
        Box::new(move |_| Some(s))
    }

    fn eof() -> Answer {
        Box::new(|_| None)
    }

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
        clock: ManualClock,
        rng: SeededRandom,
        /// PAM_AUTHTOK as an earlier password module left it.
        password: Option<String>,
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
                clock: ManualClock::new(NOW),
                rng: SeededRandom::new(42),
                password: None,
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
            let login = Login {
                user,
                service: "sshd",
                rhost,
                silent,
                password: self.password.as_deref().map(str::as_bytes),
            };
            let logged = &mut self.logged;
            let mut audit = |d: &Decision, _: Option<&str>| logged.push(d.clone());
            let mut env = Env {
                config: &self.config,
                directory: &Groups,
                clock: &self.clock,
                rng: &mut self.rng,
                host: "testhost".into(),
                store_owner: me(),
                hash_cost: CHEAP,
                audit: &mut audit,
            };
            authenticate(&mut script, &login, &mut env).0
        }

        /// Enrols `user` directly in the store with 3 backup codes; returns the key and codes.
        fn enrol(&mut self, user: &str) -> (SecretKey, Vec<String>) {
            twofactor_testkit::enrol(&self.store(), user, &mut self.rng)
        }

        fn code(&self, key: &SecretKey) -> String {
            let p = TotpParams::default();
            key.code_at_step(&p, p.step_at(self.clock.now()))
                .to_string()
        }
    }

    fn me() -> u32 {
        nix::unistd::geteuid().as_raw()
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
        let (_, _) = w.enrol("admin");
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
        let (key, _) = w.enrol("bob");
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
        w.enrol("admin");
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
        w.enrol("admin");
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
        let (key, _) = w.enrol("admin");
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

        // At the enrolment prompt too: nothing is saved.
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
        let (key, _) = w.enrol("admin");
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
        let (_, codes) = w.enrol("admin");
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
    fn required_user_enrols_at_login() {
        let mut w = World::new();
        let d = w.login(
            "admin",
            Some("10.1.2.3"),
            false,
            vec![
                Step::Info("otpauth://totp/testhost:admin%40testhost?secret="),
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
    fn enrolment_text_fits_80_columns() {
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
        assert!(text.contains("Key:     ") && text.contains("Account: build-server-01.example.com:a-rather-long-user-name@build-server-01.example.com"));
        assert!(text.contains("algorithm=SHA1&digits=6&period=30"));
    }

    #[test]
    fn failed_enrolment_saves_nothing() {
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
    fn enrolment_only_from_allowed_networks() {
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
        let (key, _) = w.enrol("admin");
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
        let (key, _) = w.enrol("admin");
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
        w.enrol("bob");
        w.enrol("admin");
        for user in ["bob", "admin"] {
            w.store()
                .update(user, |s| -> Result<(), StoreError> {
                    s.authenticator.as_mut().unwrap().enabled = false;
                    Ok(())
                })
                .unwrap();
        }
        assert_eq!(
            w.login("bob", None, false, vec![]),
            Decision::NotApplicable(Reason::Disabled)
        );
        // Required: treated as not enrolled, so enrolment starts.
        let d = w.login(
            "admin",
            None,
            false,
            vec![Step::Info("Key:"), Step::Hidden(ENROLL_PROMPT, eof())],
        );
        assert_eq!(d, Decision::Deny(Reason::NoCode));
    }

    #[test]
    fn silent_hides_messages_and_enrolment() {
        let mut w = World::new();
        let (_, codes) = w.enrol("bob");
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
        w.enrol("bob");
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
        w.enrol("bob");
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
}
