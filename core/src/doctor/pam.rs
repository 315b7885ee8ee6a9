//! PAM stacks: where the module sits in each service's auth stack, and what can skip it.

use super::{Finding, Level, nearest};
use crate::policy::Policy;

/// The module's file name in PAM stacks.
pub const MODULE: &str = "pam_twofactor.so";
/// The same module under the name cargo gives it (`target/release/libpam_twofactor.so`).
const BUILT_MODULE: &str = "libpam_twofactor.so";
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

/// One `auth` line of a stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthLine {
    /// `file:line`.
    pub location: String,
    /// Its control.
    pub control: Control,
    /// Module file name (path stripped).
    pub module: String,
    /// Its arguments.
    pub args: Vec<String>,
}

/// An entry of an `auth` stack: a module line, or a substack, which Linux-PAM runs as
/// one module whose `die` and `done` end only the substack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A module line (`include` and `@include` are already expanded in place).
    Line(AuthLine),
    /// `auth substack NAME` at `location`.
    Substack {
        /// `file:line` of the substack line.
        location: String,
        /// The substack's own entries.
        items: Vec<Item>,
    },
}

/// Reads PAM service files: `service name -> text`.
pub trait PamFiles {
    /// The text of service `name`, if the file exists.
    fn read(&self, name: &str) -> Option<String>;
}

/// The `auth` stack of `service` as Linux-PAM runs it: includes expanded, substacks kept
/// as nested entries.
pub fn auth_tree(files: &dyn PamFiles, service: &str) -> Result<Vec<Item>, String> {
    let mut out = Vec::new();
    read_stack(files, service, &mut out, 0)?;
    Ok(out)
}

/// Every module line of `service`'s `auth` stack in order, substacks included.
pub fn auth_stack(files: &dyn PamFiles, service: &str) -> Result<Vec<AuthLine>, String> {
    fn walk(items: &[Item], out: &mut Vec<AuthLine>) {
        for item in items {
            match item {
                Item::Line(l) => out.push(l.clone()),
                Item::Substack { items, .. } => walk(items, out),
            }
        }
    }
    let mut out = Vec::new();
    walk(&auth_tree(files, service)?, &mut out);
    Ok(out)
}

fn read_stack(
    files: &dyn PamFiles,
    service: &str,
    out: &mut Vec<Item>,
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
            read_stack(files, name.trim(), out, depth + 1)?;
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
        let (module, args) = split_word(rest);
        if control == "include" {
            read_stack(files, module, out, depth + 1)?;
            continue;
        }
        if control == "substack" {
            let mut items = Vec::new();
            read_stack(files, module, &mut items, depth + 1)?;
            out.push(Item::Substack { location, items });
            continue;
        }
        let control = Control::parse(control)
            .ok_or_else(|| format!("{location}: unknown control {control:?}"))?;
        let module = module.rsplit('/').next().unwrap_or(module);
        // cargo names the module it builds libpam_twofactor.so; a stack may load that.
        let module = if module == BUILT_MODULE {
            MODULE
        } else {
            module
        }
        .to_string();
        out.push(Item::Line(AuthLine {
            location,
            control,
            module,
            args: args.split_whitespace().map(str::to_string).collect(),
        }));
    }
    Ok(())
}

pub(super) fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

/// What a module can return, as far as the stack's flow is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ret {
    Success,
    /// PAM_AUTH_ERR: a wrong password, pam_deny.
    AuthErr,
    /// PAM_IGNORE.
    Ignore,
}

/// What a control does with a return value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// ok, bad, ignore, reset: carry on with the next line.
    Next,
    /// End the (sub)stack in failure.
    Die,
    /// End the (sub)stack; with a success before, in success.
    Done,
    /// Skip this many lines.
    Jump(usize),
}

impl Control {
    fn action(&self, ret: Ret) -> Action {
        let key = match ret {
            Ret::Success => "success",
            Ret::AuthErr => "auth_err",
            Ret::Ignore => "ignore",
        };
        match self {
            Self::Required | Self::Optional => Action::Next,
            Self::Requisite if ret == Ret::AuthErr => Action::Die,
            Self::Requisite => Action::Next,
            Self::Sufficient if ret == Ret::Success => Action::Done,
            Self::Sufficient => Action::Next,
            Self::Brackets(kv) => {
                let value = kv
                    .iter()
                    .find(|(k, _)| k == key)
                    .or_else(|| kv.iter().find(|(k, _)| k == "default"))
                    .map(|(_, v)| v.as_str());
                match value {
                    Some("die") => Action::Die,
                    Some("done") => Action::Done,
                    Some(n) => match n.parse::<usize>() {
                        Ok(n) if n > 0 => Action::Jump(n),
                        _ => Action::Next,
                    },
                    // Linux-PAM's default for a value not listed is bad: carry on.
                    None => Action::Next,
                }
            }
        }
    }
}

/// How a run through a stack can end, seen from pam_twofactor.so.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Exit {
    /// The first pam_twofactor.so line runs.
    Reached,
    /// The stack ends in success before it, by `done` at this line.
    Done(String),
    /// The stack ends in failure before it.
    Died,
    /// The stack runs out without reaching it; a jump at this line passed over it.
    RanOut(Option<String>),
}

/// Every way a run through `items` from entry `start` can end, when `returns` says what
/// each module may return. Jumps only go forward, so each position is worked out once.
fn exits(
    items: &[Item],
    start: usize,
    returns: &dyn Fn(&AuthLine) -> &'static [Ret],
    memo: &mut std::collections::HashMap<(usize, usize), Vec<Exit>>,
) -> Vec<Exit> {
    let key = (items.as_ptr() as usize, start);
    if let Some(known) = memo.get(&key) {
        return known.clone();
    }
    let mut out = Vec::new();
    match items.get(start) {
        None => out.push(Exit::RanOut(None)),
        Some(Item::Substack { items: inner, .. }) => {
            for exit in exits(inner, 0, returns, memo) {
                match exit {
                    Exit::Reached => out.push(Exit::Reached),
                    // die and done end only the substack: the parent carries on.
                    _ => out.extend(exits(items, start + 1, returns, memo)),
                }
            }
        }
        Some(Item::Line(line)) if is_checking_line(line) => out.push(Exit::Reached),
        Some(Item::Line(line)) => {
            for &ret in returns(line) {
                match line.control.action(ret) {
                    Action::Next => out.extend(exits(items, start + 1, returns, memo)),
                    Action::Die => out.push(Exit::Died),
                    Action::Done => out.push(Exit::Done(line.location.clone())),
                    Action::Jump(n) => {
                        for exit in exits(items, start + 1 + n, returns, memo) {
                            out.push(match exit {
                                Exit::RanOut(None) => Exit::RanOut(Some(line.location.clone())),
                                other => other,
                            });
                        }
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    memo.insert(key, out.clone());
    out
}

fn is_password_module(module: &str) -> bool {
    PASSWORD_MODULES.contains(&module)
}

/// The first line of the one-prompt layout: it splits the code off and keeps it aside,
/// and checks nothing itself.
fn is_split_line(line: &AuthLine) -> bool {
    line.module == MODULE && line.args.iter().any(|a| a == "split")
}

/// Whether a stack uses the one-prompt layout.
pub fn has_split_line(stack: &[AuthLine]) -> bool {
    stack.iter().any(is_split_line)
}

/// Whether a stack runs the module at all.
pub fn runs_module(stack: &[AuthLine]) -> bool {
    stack.iter().any(|l| l.module == MODULE)
}

/// A line that checks a code: the module without `split`.
fn is_checking_line(line: &AuthLine) -> bool {
    line.module == MODULE && !is_split_line(line)
}

/// With `[ssh_factor]` on: a `pam_env` that reads the user's own file (`user_readenv=1`)
/// before the module in the `auth` stack of a service whose `SSH_AUTH_INFO_0` is trusted.
/// The variable is trusted because only sshd sets it in the PAM environment; such a line
/// lets the user set it too.
pub fn check_user_env_before_module(files: &dyn PamFiles, services: &[String]) -> Vec<Finding> {
    let mut out = Vec::new();
    for service in services {
        let Ok(stack) = auth_stack(files, service) else {
            continue;
        };
        let Some(module_at) = stack.iter().position(is_checking_line) else {
            continue;
        };
        for line in &stack[..module_at] {
            if line.module == "pam_env.so" && line.args.iter().any(|a| a == "user_readenv=1") {
                out.push(Finding::new(
                    Level::Error,
                    "ssh-factor-user-env",
                    &line.location,
                    format!(
                        "pam_env with user_readenv=1 runs before pam_twofactor in {service}'s auth stack, while [ssh_factor] trusts SSH_AUTH_INFO_0 there: a user's own environment file could claim an ssh certificate and skip the code"
                    ),
                    "remove user_readenv=1 from this line, or move it after pam_twofactor.so",
                ));
            }
        }
    }
    out
}

/// One line of a `session` stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionLine {
    /// `file:line`.
    pub location: String,
    /// The module's file name (`pam_twofactor.so` for any path to it).
    pub module: String,
    /// Its arguments.
    pub args: Vec<String>,
}

/// The `session` stack of `service`, includes expanded.
pub fn session_modules(files: &dyn PamFiles, service: &str) -> Vec<SessionLine> {
    fn walk(files: &dyn PamFiles, service: &str, out: &mut Vec<SessionLine>, depth: usize) {
        let Some(text) = files.read(service).filter(|_| depth <= 16) else {
            return;
        };
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if let Some(name) = line.strip_prefix("@include") {
                walk(files, name.trim(), out, depth + 1);
                continue;
            }
            let (kind, rest) = split_word(line);
            if kind.trim_start_matches('-') != "session" {
                continue;
            }
            let (control, rest) = if rest.starts_with('[') {
                match rest.find(']') {
                    Some(end) => (&rest[..=end], rest[end + 1..].trim()),
                    None => continue,
                }
            } else {
                split_word(rest)
            };
            let (module, args) = split_word(rest);
            if matches!(control, "include" | "substack") {
                walk(files, module, out, depth + 1);
            } else {
                let name = module.rsplit('/').next().unwrap_or(module);
                let name = if name.ends_with(MODULE) { MODULE } else { name };
                out.push(SessionLine {
                    location: format!("{service}:{}", i + 1),
                    module: name.to_string(),
                    args: args.split_whitespace().map(str::to_string).collect(),
                });
            }
        }
    }
    let mut out = Vec::new();
    walk(files, service, &mut out, 0);
    out
}

/// Whether a session line lets the user set PAM environment variables: `pam_env` that
/// reads the user's own file.
fn lets_users_set_env(line: &SessionLine) -> bool {
    line.module == "pam_env.so" && line.args.iter().any(|a| a == "user_readenv=1")
}

/// With `[after_login]` on: the module's session line must run after `pam_loginuid` in
/// the services that start logins, or the login's own audit session does not exist yet
/// and nothing is recorded; and some login service must have such a line at all.
pub fn check_after_login_sessions(
    dir: &PamDir,
    files: &dyn PamFiles,
    covered: &[String],
) -> Vec<Finding> {
    let mut out = Vec::new();
    let Ok(names) = &dir.names else {
        return out;
    };
    // A service that starts logins authenticates outside any session of the user's: its
    // process carries whatever session its daemon was started from (an admin's shell, if
    // they restarted sshd by hand), so it must never be covered.
    for service in covered {
        if session_modules(files, service)
            .iter()
            .any(|l| l.module == "pam_loginuid.so")
        {
            out.push(Finding::new(
                Level::Error,
                "after-login-covers-a-login",
                format!("[after_login] services: {service}"),
                format!(
                    "{service} starts login sessions (pam_loginuid), so its logins run outside the session a record covers: a daemon started from someone's login session would let that user's new logins skip the code"
                ),
                format!("remove {service} from after_login.services; list only what runs inside a login (sudo, sudo-i)"),
            ));
        }
    }
    let mut recorded = false;
    let mut names = names.clone();
    names.sort();
    for name in names.iter().filter(|n| !n.starts_with('.')) {
        let stack = session_modules(files, name);
        let Some(ours) = stack.iter().position(|l| l.module == MODULE) else {
            continue;
        };
        // A user who can set PAM variables before the module's session line can copy the
        // ticket into the shell and keep it from being spent.
        for line in stack[..ours].iter().filter(|l| lets_users_set_env(l)) {
            out.push(Finding::new(
                Level::Error,
                "after-login-user-env",
                &line.location,
                format!(
                    "pam_env with user_readenv=1 runs before pam_twofactor's session line in {name}: a user's ~/.pam_environment can copy the [after_login] ticket into the shell before the module spends it"
                ),
                format!(
                    "move the pam_twofactor.so session line right after pam_loginuid.so in {name}, before this line"
                ),
            ));
        }
        match stack.iter().position(|l| l.module == "pam_loginuid.so") {
            Some(loginuid) if loginuid < ours => recorded = true,
            Some(_) => out.push(Finding::new(
                Level::Warning,
                "after-login-order",
                &stack[ours].location,
                format!(
                    "pam_twofactor's session line runs before pam_loginuid in {name}: the login's audit session is not new yet, so its code is never recorded for sudo"
                ),
                "move the pam_twofactor.so session line right after pam_loginuid.so",
            )),
            None => {}
        }
    }
    if !recorded {
        out.push(Finding::new(
            Level::Warning,
            "after-login-no-session-line",
            &dir.path,
            "[after_login] lists services, but no PAM stack runs pam_twofactor in its session phase after pam_loginuid, so no login is recorded and sudo always asks for the code",
            "in /etc/pam.d/sshd (and login), right after \"session required pam_loginuid.so\", add \"session optional pam_twofactor.so\"",
        ));
    }
    out
}

/// Yama's ptrace policy.
pub const PTRACE_SCOPE: &str = "/proc/sys/kernel/yama/ptrace_scope";

/// With `[after_login]` on: where any process may trace any other of the same uid (Yama's
/// `ptrace_scope` 0, or no Yama), any program the user runs, from any login, can attach
/// to a shell of a login that typed a code and run sudo there. `scope`: the file's text.
pub fn check_ptrace_scope(scope: Option<&str>) -> Vec<Finding> {
    let value = scope.map(str::trim);
    if matches!(value, Some(v) if v != "0") {
        return Vec::new();
    }
    let what = match value {
        Some(_) => "kernel.yama.ptrace_scope is 0",
        None => "this kernel has no Yama ptrace_scope",
    };
    vec![Finding::new(
        Level::Warning,
        "after-login-ptrace",
        PTRACE_SCOPE,
        format!(
            "{what}: any process of a user may trace the user's other processes, so a program run from a login that typed no code can act in the shell of one that did, and use its [after_login] pass"
        ),
        "set kernel.yama.ptrace_scope = 1 (Debian's default) in /etc/sysctl.d/, then run: sysctl --system",
    )]
}

/// What modules return when the user typed a wrong password (`wrong`) or the right one.
fn returns_for(wrong: bool) -> impl Fn(&AuthLine) -> &'static [Ret] {
    const ANY: &[Ret] = &[Ret::Success, Ret::AuthErr, Ret::Ignore];
    move |line: &AuthLine| match line.module.as_str() {
        m if is_password_module(m) => {
            if wrong {
                &[Ret::AuthErr]
            } else {
                &[Ret::Success]
            }
        }
        "pam_deny.so" => &[Ret::AuthErr],
        // The split line stands aside, or refuses when the check could not be made.
        _ if is_split_line(line) => &[Ret::Ignore, Ret::AuthErr],
        "pam_permit.so" => &[Ret::Success],
        // Lets only root through, and root is not whom a bypass is for.
        "pam_rootok.so" => &[Ret::AuthErr],
        _ => ANY,
    }
}

/// Where the first factor of a stack comes from, besides the stack's own password module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstFactor {
    /// Only from the stack.
    Stack,
    /// sshd checks a public key before it runs the stack (every `AuthenticationMethods`
    /// list starts with publickey and includes keyboard-interactive).
    SshKey,
}

/// Module lines whose arguments the module refuses: it then refuses every login through
/// that stack, whatever `enforce.services` says, since it reads its arguments first.
pub fn check_module_args(stack: &[AuthLine]) -> Vec<Finding> {
    stack
        .iter()
        .filter(|l| l.module == MODULE)
        .filter_map(|line| {
            let e = crate::module_args::ModuleArgs::parse(line.args.iter().map(String::as_str))
                .err()?;
            Some(Finding::new(
                Level::Error,
                "module-args",
                &line.location,
                format!("{MODULE} refuses every login through this stack: {e}"),
                "fix the arguments: only config=/ABSOLUTE/PATH, debug and split are known",
            ))
        })
        .collect()
}

/// Findings for one service's auth stack.
pub fn check_stack(service: &str, items: &[Item], first: FirstFactor) -> Vec<Finding> {
    let mut f = Vec::new();
    let mut flat = Vec::new();
    let mut substacks = Vec::new();
    fn walk<'a>(items: &'a [Item], flat: &mut Vec<&'a AuthLine>, subs: &mut Vec<(&'a str, usize)>) {
        for item in items {
            match item {
                Item::Line(l) => flat.push(l),
                Item::Substack { location, items } => {
                    let at = flat.len();
                    walk(items, flat, subs);
                    subs.push((location, at));
                }
            }
        }
    }
    walk(items, &mut flat, &mut substacks);
    f.extend(check_split_layout(&flat));
    let Some(ours) = flat.iter().position(|l| is_checking_line(l)) else {
        return f;
    };
    let here = flat[ours].location.clone();
    let password_after = flat[ours + 1..]
        .iter()
        .any(|l| is_password_module(&l.module));
    if flat[ours].control.on_success().is_some() {
        f.push(Finding::new(
            Level::Error,
            "bypass",
            &here,
            format!("{MODULE} can end authentication by itself on success{}: a code alone lets users in", if password_after { ", before the password is checked" } else { "" }),
            "use \"auth required pam_twofactor.so\" after a password line that ends the stack on failure (requisite)",
        ));
    }

    let mut memo = std::collections::HashMap::new();
    let right = exits(items, 0, &returns_for(false), &mut memo);
    for exit in &right {
        match exit {
            Exit::Done(at) => f.push(Finding::new(
                Level::Error,
                "skippable",
                at,
                format!("this line ends authentication on success before {MODULE} ({here}) runs: 2FA is skipped"),
                "make that line requisite (or [success=ok default=die]), or move pam_twofactor.so before it",
            )),
            Exit::RanOut(Some(at)) => f.push(Finding::new(
                Level::Error,
                "skippable",
                at,
                format!("this line jumps over {MODULE} ({here}) on success: 2FA is skipped"),
                "change the jump so it lands before pam_twofactor.so",
            )),
            _ => {}
        }
    }

    memo.clear();
    let wrong = exits(items, 0, &returns_for(true), &mut memo);
    if wrong.contains(&Exit::Reached) {
        let before: Vec<&&AuthLine> = flat[..ours]
            .iter()
            .filter(|l| is_password_module(&l.module))
            .collect();
        let substack = substacks.iter().find(|(_, at)| {
            *at < ours
                && flat[*at..ours]
                    .iter()
                    .any(|l| is_password_module(&l.module))
        });
        let finding = if before.is_empty() {
            let (severity, fix) = match first {
                // Only a pure key-and-code stack: a password after the module means a
                // password was meant to come first.
                FirstFactor::SshKey if !password_after => (
                    Level::Info,
                    "sshd checks a public key first (AuthenticationMethods publickey,keyboard-interactive): the key is the first factor",
                ),
                _ => (
                    Level::Error,
                    "put a password line that ends the stack on failure before it: auth requisite pam_unix.so",
                ),
            };
            Finding::new(
                severity,
                "no-password",
                &here,
                format!(
                    "no password module runs before {MODULE} in the {service} auth stack{}: it asks anyone who types a user name for a code, and enrols them at login",
                    if password_after {
                        " (the password is checked after it)"
                    } else {
                        ""
                    }
                ),
                fix,
            )
        } else if let Some((at, _)) = substack {
            Finding::new(
                Level::Error,
                "after-substack",
                &here,
                format!(
                    "{MODULE} runs after the substack at {at}: die and done inside a substack end only the substack, so a wrong password never stops the stack before the module, which then asks for a code or enrols whoever typed the user name"
                ),
                "put pam_twofactor.so inside the password stack itself, after a password line that dies on failure (RHEL/Fedora: a custom authselect profile's password-auth and system-auth; see the README)",
            )
        } else {
            let names: Vec<String> = before
                .iter()
                .map(|l| format!("{} ({})", l.module, l.location))
                .collect();
            Finding::new(
                Level::Error,
                "password-not-requisite",
                &here,
                format!(
                    "a wrong password does not end the stack before {MODULE}: {} carries on after a failure, so the module asks for a code or enrols whoever typed the user name",
                    names.join(", ")
                ),
                "make the password line requisite (auth requisite pam_unix.so), or [success=ok default=die], or Debian's [success=1 default=ignore] followed by auth requisite pam_deny.so",
            )
        };
        f.push(finding);
    }
    f
}

/// The one-prompt layout: a split line needs a checking line after it, or the code it
/// keeps aside is never checked; the password module between them should take the
/// password the split line hands on.
fn check_split_layout(flat: &[&AuthLine]) -> Vec<Finding> {
    let mut f = Vec::new();
    let Some(split) = flat.iter().position(|l| is_split_line(l)) else {
        return f;
    };
    let here = &flat[split].location;
    let Some(check) = flat[split..].iter().position(|l| is_checking_line(l)) else {
        f.push(Finding::new(
            Level::Error,
            "split-unchecked",
            here,
            format!("{MODULE} split keeps the code aside, but no {MODULE} line after it checks it: the password alone logs in"),
            "add \"auth required pam_twofactor.so\" (no split) after the password line",
        ));
        return f;
    };
    let between = &flat[split + 1..split + check];
    for line in between.iter().filter(|l| is_password_module(&l.module)) {
        if !line
            .args
            .iter()
            .any(|a| a == "use_first_pass" || a == "try_first_pass")
        {
            f.push(Finding::new(
                Level::Warning,
                "split-password-prompts",
                &line.location,
                format!("{} after {MODULE} split has no use_first_pass: it takes the password the split line hands on only because PAM_AUTHTOK is set, and would ask again otherwise", line.module),
                format!("add use_first_pass: auth requisite {} use_first_pass", line.module),
            ));
        }
    }
    // No password module at all is the checking line's "no-password" finding.
    if flat[..split].iter().any(|l| is_password_module(&l.module)) {
        f.push(Finding::new(
            Level::Warning,
            "split-after-password",
            here,
            format!("a password module runs before {MODULE} split: it checks the password with the code still appended, so one-prompt logins fail"),
            "put the split line first in the auth stack, before the password line",
        ));
    }
    f
}

/// A PAM directory as the command found it: its service file names (or why it could not
/// be listed), and a reader for the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PamDir {
    /// The directory, for locations.
    pub path: String,
    /// The file names in it, or the error listing it.
    pub names: Result<Vec<String>, String>,
}

/// Every service's auth stack in `dir`: where the module is, what can skip it, and
/// whether each service `policy` names has it. `key_first` says sshd asks for a key
/// before PAM (so its stack needs no password module).
pub fn check_pam(
    dir: &PamDir,
    files: &dyn PamFiles,
    policy: &Policy,
    key_first: bool,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut names = match &dir.names {
        Ok(names) => names.clone(),
        Err(e) => {
            findings.push(Finding::new(
                Level::Error,
                "pam-dir",
                &dir.path,
                format!("cannot read the PAM directory: {e}"),
                "check the path",
            ));
            return findings;
        }
    };
    names.sort();
    let mut with_module = Vec::new();
    for name in names
        .iter()
        .filter(|n| !n.starts_with("common-") && !n.starts_with('.') && !n.ends_with(".dpkg-dist"))
    {
        let tree = auth_tree(files, name);
        match auth_stack(files, name).and_then(|s| Ok((s, tree?))) {
            Ok((stack, tree)) => {
                if stack.iter().any(|l| l.module == MODULE) {
                    with_module.push(name.clone());
                    findings.extend(check_module_args(&stack));
                    if policy.applies_to_service(name) {
                        let first = if name == "sshd" && key_first {
                            FirstFactor::SshKey
                        } else {
                            FirstFactor::Stack
                        };
                        findings.extend(check_stack(name, &tree, first));
                    }
                }
            }
            Err(e) => findings.push(Finding::new(
                Level::Info,
                "pam-parse",
                format!("{}/{name}", dir.path),
                format!("could not follow this stack: {e}"),
                "check the file",
            )),
        }
    }
    if with_module.is_empty() {
        findings.push(Finding::new(Level::Error, "module-missing", &dir.path, "pam_twofactor.so is in no PAM stack: 2FA does nothing", "Debian: pam-auth-update --enable twofactor; elsewhere add \"auth required pam_twofactor.so\" after \"auth requisite pam_unix.so\""));
        return findings;
    }
    for service in policy.services.iter().filter(|s| !with_module.contains(s)) {
        let location = format!("{}/{service}", dir.path);
        let finding = if names.contains(service) {
            Finding::new(
                Level::Error,
                "service-missing",
                location,
                format!(
                    "enforce.services names {service}, but its auth stack does not include pam_twofactor.so: 2FA does nothing there"
                ),
                format!(
                    "add \"auth required pam_twofactor.so\" to {}/{service} after its password line (or to common-auth)",
                    dir.path
                ),
            )
        } else {
            let fix = match nearest(service, &names) {
                Some(near) => format!("did you mean {near:?}? A PAM service is named after its program (sshd, login, sudo, su)"),
                None => "name an existing PAM service (a file in the PAM directory), such as sshd or login".to_string(),
            };
            Finding::new(
                Level::Error,
                "service-unknown",
                location,
                format!(
                    "enforce.services names {service}, but there is no PAM service {service} in {}: no login ever uses that name, so 2FA is asked nowhere for it",
                    dir.path
                ),
                fix,
            )
        };
        findings.push(finding);
    }
    findings.push(Finding::new(
        Level::Info,
        "active",
        &dir.path,
        format!(
            "pam_twofactor.so is in the auth stacks of: {}",
            with_module.join(", ")
        ),
        "list the ones that should ask for codes in enforce.services",
    ));
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::ids;
    use std::collections::HashMap;

    struct Files(HashMap<&'static str, &'static str>);
    impl PamFiles for Files {
        fn read(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|s| s.to_string())
        }
    }

    /// Debian 12's common-auth after `pam-auth-update --enable twofactor`.
    const DEBIAN_ENABLED: &str = "auth\t[success=1 default=ignore]\tpam_unix.so nullok\nauth\trequisite\t\t\tpam_deny.so\nauth\trequired\t\t\tpam_permit.so\nauth\trequired\t\t\tpam_twofactor.so \nauth\toptional\t\t\tpam_cap.so \n";

    fn check(files: &Files, service: &str) -> Vec<Finding> {
        let mut f = check_module_args(&auth_stack(files, service).unwrap());
        f.extend(check_stack(
            service,
            &auth_tree(files, service).unwrap(),
            FirstFactor::Stack,
        ));
        f
    }

    fn one(text: &'static str) -> Vec<&'static str> {
        ids(&check(&Files(HashMap::from([("svc", text)])), "svc"))
    }

    #[test]
    fn a_user_environment_file_before_the_module_is_flagged_where_ssh_factor_trusts() {
        let files = Files(HashMap::from([
            (
                "sshd",
                "auth required pam_env.so user_readenv=1\n@include common-auth\n",
            ),
            ("common-auth", DEBIAN_ENABLED),
            (
                "after",
                "@include common-auth\nauth optional pam_env.so user_readenv=1\n",
            ),
        ]));
        let found = check_user_env_before_module(&files, &["sshd".into()]);
        assert_eq!(ids(&found), ["ssh-factor-user-env"]);
        assert_eq!(found[0].location, "sshd:1");
        // After the module, or in a service whose variable is not trusted: nothing.
        assert!(check_user_env_before_module(&files, &["after".into()]).is_empty());
        assert!(check_user_env_before_module(&files, &[]).is_empty());
    }

    #[test]
    fn after_login_wants_the_session_line_after_pam_loginuid() {
        let dir = |names: &[&str]| PamDir {
            path: "/etc/pam.d".into(),
            names: Ok(names.iter().map(|n| n.to_string()).collect()),
        };
        let good = Files(HashMap::from([
            (
                "sshd",
                "session required pam_loginuid.so\n@include common-session\n",
            ),
            ("common-session", "session optional pam_twofactor.so\n"),
        ]));
        let sudo = ["sudo".to_string()];
        assert!(
            check_after_login_sessions(&dir(&["sshd", "common-session"]), &good, &sudo).is_empty()
        );
        assert_eq!(
            ids(&check_after_login_sessions(
                &dir(&["sshd", "common-session"]),
                &good,
                &["sshd".into()]
            )),
            ["after-login-covers-a-login"]
        );
        let early = Files(HashMap::from([(
            "sshd",
            "session optional /lib/security/pam_twofactor.so\nsession required pam_loginuid.so\n",
        )]));
        assert_eq!(
            ids(&check_after_login_sessions(&dir(&["sshd"]), &early, &sudo)),
            ["after-login-order", "after-login-no-session-line"]
        );
        // Debian's stock sshd stack reads ~/.pam_environment in its session phase: the
        // module's line after it is an error, right after pam_loginuid it is fine.
        let stock = |ours_first: bool| {
            let ours = "session optional pam_twofactor.so\n";
            let env = "session required pam_env.so readenv=1\n\
                       session required pam_env.so user_readenv=1 envfile=/etc/default/locale\n";
            Files(HashMap::from([(
                "sshd",
                format!(
                    "session required pam_loginuid.so\n{}",
                    if ours_first {
                        format!("{ours}{env}")
                    } else {
                        format!("{env}{ours}")
                    }
                )
                .leak() as &str,
            )]))
        };
        let found = check_after_login_sessions(&dir(&["sshd"]), &stock(false), &sudo);
        assert_eq!(ids(&found), ["after-login-user-env"]);
        assert_eq!(found[0].location, "sshd:3");
        assert!(check_after_login_sessions(&dir(&["sshd"]), &stock(true), &sudo).is_empty());
        let none = Files(HashMap::from([(
            "sshd",
            "session required pam_loginuid.so\n",
        )]));
        assert_eq!(
            ids(&check_after_login_sessions(&dir(&["sshd"]), &none, &sudo)),
            ["after-login-no-session-line"]
        );
    }

    #[test]
    fn after_login_wants_ptrace_limited_to_descendants() {
        assert!(check_ptrace_scope(Some("1\n")).is_empty());
        assert!(check_ptrace_scope(Some("2")).is_empty());
        assert_eq!(
            ids(&check_ptrace_scope(Some("0\n"))),
            ["after-login-ptrace"]
        );
        let none = check_ptrace_scope(None);
        assert_eq!(ids(&none), ["after-login-ptrace"]);
        assert!(none[0].message.contains("no Yama"), "{}", none[0].message);
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
            check(&files, "sshd").is_empty(),
            "{:?}",
            check(&files, "sshd")
        );
    }

    #[test]
    fn the_shipped_example_stacks_are_clean() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/pam.d/examples");
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert!(names.len() >= 4, "{names:?}");
        let texts: HashMap<&'static str, &'static str> = names
            .iter()
            .map(|n| {
                let text = std::fs::read_to_string(format!("{dir}/{n}")).unwrap();
                (&*n.clone().leak(), &*text.leak())
            })
            .collect();
        let files = Files(texts);
        for name in &names {
            let found = check(&files, name);
            assert!(
                found.iter().all(|f| f.severity != Level::Error),
                "{name}: {found:?}"
            );
        }
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
                "auth requisite pam_unix.so\nauth sufficient pam_twofactor.so\n",
                "bypass",
            ),
            (
                "auth sufficient pam_twofactor.so\nauth required pam_unix.so\n",
                "bypass",
            ),
        ] {
            let found = one(text);
            assert!(found.contains(&id), "{text:?} -> {found:?}");
        }
    }

    #[test]
    fn a_wrong_password_must_end_the_stack_before_the_module() {
        for (text, id) in [
            (
                "auth required pam_unix.so\nauth required pam_twofactor.so\n",
                "password-not-requisite",
            ),
            (
                "auth optional pam_sss.so\nauth required pam_twofactor.so\n",
                "password-not-requisite",
            ),
            (
                "auth [success=ok default=bad] pam_unix.so\nauth required pam_twofactor.so\n",
                "password-not-requisite",
            ),
            (
                "auth [success=1 default=ignore] pam_unix.so\nauth required pam_permit.so\nauth required pam_twofactor.so\n",
                "password-not-requisite",
            ),
            (
                "auth required pam_twofactor.so\nauth requisite pam_unix.so\n",
                "no-password",
            ),
            ("auth required pam_twofactor.so\n", "no-password"),
        ] {
            let found = check(&Files(HashMap::from([("svc", text)])), "svc");
            let hit = found.iter().find(|f| f.id == id);
            assert!(
                hit.is_some_and(|f| f.severity == Level::Error),
                "{text:?} -> {found:?}"
            );
        }
        for good in [
            "auth requisite pam_unix.so\nauth required pam_twofactor.so\n",
            "auth [success=ok default=die] pam_unix.so nullok\nauth required pam_twofactor.so\n",
            "auth [success=1 default=ignore] pam_unix.so\nauth requisite pam_deny.so\nauth required pam_permit.so\nauth required pam_twofactor.so\n",
            "auth [success=2 default=ignore] pam_unix.so\nauth [success=1 default=ignore] pam_sss.so use_first_pass\nauth requisite pam_deny.so\nauth required pam_permit.so\nauth required pam_twofactor.so\n",
        ] {
            assert_eq!(one(good), Vec::<&str>::new(), "{good:?}");
        }
    }

    /// The one-prompt layout: clean as the README shows it, on its own or around
    /// Debian's common-auth; an error without a checking line; warnings for a password
    /// line without use_first_pass, or one before the split line.
    #[test]
    fn the_split_layout_is_recognised() {
        for good in [
            "auth requisite pam_twofactor.so split\nauth requisite pam_unix.so use_first_pass\nauth required pam_twofactor.so\n",
            "auth requisite pam_twofactor.so split config=/etc/tf.toml\nauth [success=ok default=die] pam_unix.so try_first_pass\nauth required pam_twofactor.so config=/etc/tf.toml\n",
        ] {
            assert_eq!(one(good), Vec::<&str>::new(), "{good:?}");
        }
        let cases: [(&'static str, &[&str]); 5] = [
            (
                "auth requisite pam_twofactor.so split\nauth requisite pam_unix.so use_first_pass\n",
                &["split-unchecked"],
            ),
            (
                "auth requisite pam_twofactor.so split\nauth requisite pam_unix.so\nauth required pam_twofactor.so\n",
                &["split-password-prompts"],
            ),
            (
                "auth requisite pam_twofactor.so split\nauth [success=1 default=ignore] pam_unix.so nullok\nauth requisite pam_deny.so\nauth required pam_permit.so\nauth required pam_twofactor.so\n",
                &["split-password-prompts"],
            ),
            (
                "auth requisite pam_unix.so\nauth requisite pam_twofactor.so split\nauth required pam_twofactor.so\n",
                &["split-after-password"],
            ),
            // The split line checks no password: a wrong one still reaches the check.
            (
                "auth requisite pam_twofactor.so split\nauth required pam_unix.so use_first_pass\nauth required pam_twofactor.so\n",
                &["password-not-requisite"],
            ),
        ];
        for (text, want) in cases {
            assert_eq!(one(text), want.to_vec(), "{text:?}");
        }
        let found = check(
            &Files(HashMap::from([(
                "svc",
                "auth requisite pam_twofactor.so split\nauth requisite pam_unix.so use_first_pass\n",
            )])),
            "svc",
        );
        assert_eq!(found[0].severity, Level::Error, "{found:?}");
    }

    /// RHEL and Fedora: `auth substack password-auth` then the module. A `sufficient`
    /// line inside the substack returns to the parent, which runs the module; a wrong
    /// password ends only the substack, and the module runs too.
    #[test]
    fn substacks_end_only_themselves() {
        let password_auth = "auth required pam_env.so\nauth required pam_faildelay.so delay=2000000\nauth sufficient pam_unix.so nullok\nauth required pam_deny.so\n";
        let files = Files(HashMap::from([
            (
                "sshd",
                "auth substack password-auth\nauth include postlogin\nauth required pam_twofactor.so\n",
            ),
            ("password-auth", password_auth),
            ("postlogin", "session optional pam_lastlog.so\n"),
        ]));
        let found = check(&files, "sshd");
        assert_eq!(ids(&found), ["after-substack"], "{found:?}");
        assert!(found[0].location == "sshd:3" && found[0].message.contains("sshd:1"));
        // Inside the substack, after a password line that dies on failure: clean.
        let files = Files(HashMap::from([
            (
                "sshd",
                "auth substack password-auth\nauth include postlogin\n",
            ),
            (
                "password-auth",
                "auth required pam_env.so\nauth requisite pam_unix.so nullok\nauth required pam_twofactor.so\n",
            ),
            ("postlogin", "session optional pam_lastlog.so\n"),
        ]));
        assert!(check(&files, "sshd").is_empty());
        // A password line that dies in the substack does not protect a module after it.
        let files = Files(HashMap::from([
            ("sshd", "auth substack pw\nauth required pam_twofactor.so\n"),
            ("pw", "auth requisite pam_unix.so\n"),
        ]));
        assert_eq!(ids(&check(&files, "sshd")), ["after-substack"]);
    }

    #[test]
    fn unknown_module_arguments_are_errors() {
        let found = check(
            &Files(HashMap::from([(
                "svc",
                "auth requisite pam_unix.so\nauth required pam_twofactor.so degub\n",
            )])),
            "svc",
        );
        assert_eq!(ids(&found), ["module-args"]);
        assert!(found[0].message.contains("\"degub\""), "{:?}", found[0]);
        assert_eq!(found[0].location, "svc:2");
        assert!(one("auth requisite pam_unix.so\nauth required pam_twofactor.so debug config=/etc/tf.toml\n").is_empty());
        assert_eq!(
            one(
                "auth requisite pam_unix.so\nauth required pam_twofactor.so config=relative.toml\n"
            ),
            ["module-args"]
        );
    }

    #[test]
    fn key_first_sshd_needs_no_password_in_the_stack() {
        let files = Files(HashMap::from([(
            "sshd",
            "auth required pam_twofactor.so\n",
        )]));
        let tree = auth_tree(&files, "sshd").unwrap();
        let found = check_stack("sshd", &tree, FirstFactor::SshKey);
        assert_eq!(ids(&found), ["no-password"]);
        assert_eq!(found[0].severity, Level::Info);
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
            (
                "built",
                "auth required /srv/twofactor/target/release/libpam_twofactor.so\n",
            ),
        ]));
        let stack = auth_stack(&files, "svc").unwrap();
        let modules: Vec<&str> = stack.iter().map(|l| l.module.as_str()).collect();
        assert_eq!(modules, ["pam_unix.so", "pam_twofactor.so", "pam_x.so"]);
        // The module by any path, under the name cargo builds it with too.
        let built = auth_stack(&files, "built").unwrap();
        assert_eq!(built[0].module, MODULE);
        assert!(
            auth_stack(&Files(HashMap::from([("a", "@include a\n")])), "a").is_err(),
            "loops are caught"
        );
        assert!(auth_stack(&Files(HashMap::new()), "missing").is_err());
    }

    fn dir(names: &[&str]) -> PamDir {
        PamDir {
            path: "/etc/pam.d".into(),
            names: Ok(names.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn a_directory_without_the_module_or_a_listing_is_an_error() {
        let files = Files(HashMap::from([("sshd", "auth required pam_unix.so\n")]));
        let policy = Policy::default();
        assert_eq!(
            ids(&check_pam(&dir(&["sshd"]), &files, &policy, false)),
            ["module-missing"]
        );
        let unreadable = PamDir {
            path: "/nowhere".into(),
            names: Err("No such file or directory".into()),
        };
        assert_eq!(
            ids(&check_pam(&unreadable, &files, &policy, false)),
            ["pam-dir"]
        );
    }

    #[test]
    fn services_the_policy_names_must_have_the_module() {
        let files = Files(HashMap::from([
            ("common-auth", DEBIAN_ENABLED),
            ("sshd", "@include common-auth\n"),
            ("sudo", "auth required pam_unix.so\n"),
            (
                "login",
                "auth [success=ok default=die] pam_unix.so\nauth sufficient pam_twofactor.so\n",
            ),
        ]));
        let policy = Policy {
            services: vec!["sshd".into(), "sudo".into(), "sshdd".into(), "login".into()],
            ..Policy::default()
        };
        let found = check_pam(
            &dir(&["common-auth", "sshd", "sudo", "login"]),
            &files,
            &policy,
            false,
        );
        assert_eq!(
            ids(&found),
            ["bypass", "service-missing", "service-unknown", "active"],
            "{found:#?}"
        );
        assert!(found[2].fix.contains("\"sshd\""), "{}", found[2].fix);
        assert!(
            found[3].message.ends_with("login, sshd"),
            "{}",
            found[3].message
        );
        // A stack that cannot be followed is a note, not a silent pass.
        let broken = Files(HashMap::from([
            ("sshd", "auth include nowhere\n"),
            ("login", DEBIAN_ENABLED),
        ]));
        let found = check_pam(&dir(&["sshd", "login"]), &broken, &Policy::default(), false);
        assert_eq!(ids(&found), ["pam-parse", "active"], "{found:#?}");
    }
}
