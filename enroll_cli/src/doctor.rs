//! `twofactor doctor`: gathers the PAM stacks, sshd's effective settings, the policy and
//! the clock, and prints what core's analysis finds, with fixes.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::unistd::{Group, User};
use serde_json::json;
use twofactor_core::backend::Backend;
use twofactor_core::clock::{Clock, SystemClock, format_utc};
use twofactor_core::config::Config;
use twofactor_core::doctor::{
    self, Finding, FirstFactor, PamFiles, Severity, SshdPolicy, SshdSettings,
};
use twofactor_core::last_good::{self, Loaded};
use twofactor_core::login::{self, LoginFacts, Step};
use twofactor_core::policy::{Directory, Nss, Policy};
use twofactor_core::store::{FileError, Store, StoreError};
use twofactor_core::text::printable;

use crate::cli::{Cli, DoctorArgs};
use crate::context::{self, Error, print_json};
use crate::sys;

/// PAM service files in a directory.
struct Dir(PathBuf);

impl PamFiles for Dir {
    fn read(&self, name: &str) -> Option<String> {
        if name.contains('/') {
            return fs::read_to_string(name).ok();
        }
        fs::read_to_string(self.0.join(name)).ok()
    }
}

pub fn run(cli: &Cli, args: &DoctorArgs, env_config: Option<OsString>) -> Result<(), Error> {
    let caller = context::caller()?;
    if !caller.is_root() {
        return Err("doctor is for root only".into());
    }
    let mut findings = Vec::new();
    let config_path = context::config_path(cli, &caller, env_config)?;
    let loaded = last_good::load(&config_path, 0);
    findings.extend(broken_config(&config_path, &loaded));
    let config = match loaded {
        Loaded::Good { config, .. } => Some(*config),
        // Go on with what logins enforce now.
        Loaded::Broken(fallback) => Some(fallback.config),
        Loaded::Unusable { .. } => None,
    };
    let policy = config
        .as_ref()
        .map(|c| c.policy.clone())
        .unwrap_or_default();
    let store = config.as_ref().and_then(|c| match Store::open(&c.storage.state_dir) {
        Ok(s) => Some(s),
        Err(e) => {
            let dir = c.storage.state_dir.display();
            let fix = match &e {
                StoreError::MissingDir(_) => format!("create it: install -d -m 0700 -o root -g root {dir}"),
                StoreError::File(FileError::BadMode { .. }) => format!("make it private: chmod 0700 {dir}"),
                StoreError::File(FileError::WrongOwner { .. }) => format!("give it to root: chown root:root {dir}"),
                StoreError::File(FileError::Symlink(_)) => "replace the symbolic link with a real directory (mode 0700, owned by root), or point storage.state_dir at the real one".to_string(),
                _ => format!("check {dir}: a directory owned by root with mode 0700"),
            };
            findings.push(Finding::new(Severity::Error, "state-dir", dir.to_string(), format!("the state directory is refused, so logins of enrolled or required users fail: {e}"), fix));
            None
        }
    });

    let sshd_config = args
        .sshd_config
        .clone()
        .unwrap_or_else(|| PathBuf::from("/etc/ssh/sshd_config"));
    let sshd = (sshd_config.exists() && policy.applies_to_service("sshd")).then(|| {
        let (text, origin) = sshd_settings(&sshd_config, &mut findings);
        (SshdSettings::parse(&text), origin)
    });
    let key_first = sshd.as_ref().is_some_and(|(s, _)| s.requires_key_first());
    check_pam(
        args.pam_dir.as_deref().unwrap_or(Path::new("/etc/pam.d")),
        &policy,
        key_first,
        &mut findings,
    );

    let anyone_required = policy.all_users || !policy.groups.is_empty() || !policy.users.is_empty();
    // Only what is risky: root required by a rule and not enrolled yet.
    let root_required = policy.requires("root", &Nss).is_ok_and(|r| r.required);
    let root_enrolled = store
        .as_ref()
        .and_then(|s| s.load("root").ok())
        .is_some_and(|s| s.is_enrolled());
    let root_unenrolled = root_required && !root_enrolled;
    if let Some((settings, origin)) = &sshd {
        findings.extend(doctor::check_sshd(
            settings,
            SshdPolicy {
                anyone_required,
                root_unenrolled,
            },
            origin,
        ));
    }

    if let Some(c) = &config {
        check_policy(c, store.as_ref(), &mut findings);
    }
    match sys::clock_synchronised() {
        Some(true) => {}
        Some(false) => findings.push(Finding::new(
            Severity::Warning,
            "clock",
            "system clock",
            "the clock is not synchronised: the top cause of \"codes not accepted\"",
            "enable NTP (timedatectl set-ntp true, or chrony/systemd-timesyncd)",
        )),
        None => findings.push(Finding::new(
            Severity::Info,
            "clock",
            "system clock",
            "cannot tell whether the clock is synchronised",
            "make sure NTP runs",
        )),
    }

    findings.sort_by_key(|f| f.severity);
    let count = |s| findings.iter().filter(|f| f.severity == s).count();
    let (errors, warnings, infos) = (
        count(Severity::Error),
        count(Severity::Warning),
        count(Severity::Info),
    );
    if cli.json {
        print_json(
            &json!({"errors": errors, "warnings": warnings, "infos": infos, "findings": findings}),
        )?;
    } else {
        println!(
            "twofactor doctor: {errors} error{}, {warnings} warning{}, {infos} note{}",
            plural(errors),
            plural(warnings),
            plural(infos)
        );
        for f in &findings {
            println!(
                "\n{:<8} {}\n         {}\n         fix: {}",
                f.severity.to_string(),
                f.location,
                f.message,
                f.fix
            );
        }
    }
    if errors > 0 {
        Err(Error(format!("{errors} error{} found", plural(errors))))
    } else {
        Ok(())
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Every service file's auth stack: where the module is, and what can skip it.
fn check_pam(dir: &Path, policy: &Policy, key_first: bool, findings: &mut Vec<Finding>) {
    let files = Dir(dir.to_path_buf());
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect(),
        Err(e) => {
            findings.push(Finding::new(
                Severity::Error,
                "pam-dir",
                dir.display().to_string(),
                format!("cannot read the PAM directory: {e}"),
                "check the path",
            ));
            return;
        }
    };
    names.sort();
    let mut with_module = Vec::new();
    for name in names
        .iter()
        .filter(|n| !n.starts_with("common-") && !n.starts_with('.') && !n.ends_with(".dpkg-dist"))
    {
        let tree = doctor::auth_tree(&files, name);
        match doctor::auth_stack(&files, name).and_then(|s| Ok((s, tree?))) {
            Ok((stack, tree)) => {
                if stack.iter().any(|l| l.module == doctor::MODULE) {
                    with_module.push(name.clone());
                    findings.extend(doctor::check_module_args(&stack));
                    if policy.applies_to_service(name) {
                        let first = if name == "sshd" && key_first {
                            FirstFactor::SshKey
                        } else {
                            FirstFactor::Stack
                        };
                        findings.extend(doctor::check_stack(name, &tree, first));
                    }
                }
            }
            Err(e) => findings.push(Finding::new(
                Severity::Info,
                "pam-parse",
                format!("{}/{name}", dir.display()),
                format!("could not follow this stack: {e}"),
                "check the file",
            )),
        }
    }
    if with_module.is_empty() {
        findings.push(Finding::new(Severity::Error, "module-missing", dir.display().to_string(), "pam_twofactor.so is in no PAM stack: 2FA does nothing", "Debian: pam-auth-update --enable twofactor; elsewhere add \"auth required pam_twofactor.so\" after \"auth requisite pam_unix.so\""));
        return;
    }
    for service in &policy.services {
        if !with_module.contains(service) {
            let location = format!("{}/{service}", dir.display());
            let finding = if names.contains(service) {
                Finding::new(
                    Severity::Error,
                    "service-missing",
                    location,
                    format!(
                        "enforce.services names {service}, but its auth stack does not include pam_twofactor.so: 2FA does nothing there"
                    ),
                    format!(
                        "add \"auth required pam_twofactor.so\" to {}/{service} after its password line (or to common-auth)",
                        dir.display()
                    ),
                )
            } else {
                let fix = match doctor::nearest(service, &names) {
                    Some(near) => format!("did you mean {near:?}? A PAM service is named after its program (sshd, login, sudo, su)"),
                    None => "name an existing PAM service (a file in the PAM directory), such as sshd or login".to_string(),
                };
                Finding::new(
                    Severity::Error,
                    "service-unknown",
                    location,
                    format!(
                        "enforce.services names {service}, but there is no PAM service {service} in {}: no login ever uses that name, so 2FA is asked nowhere for it",
                        dir.display()
                    ),
                    fix,
                )
            };
            findings.push(finding);
        }
    }
    findings.push(Finding::new(
        Severity::Info,
        "active",
        dir.display().to_string(),
        format!(
            "pam_twofactor.so is in the auth stacks of: {}",
            with_module.join(", ")
        ),
        "list the ones that should ask for codes in enforce.services",
    ));
}

/// sshd's effective settings: `sshd -T` where possible (Include and Match evaluated),
/// the file itself otherwise. A config sshd refuses is an error quoting sshd.
fn sshd_settings(config: &Path, findings: &mut Vec<Finding>) -> (String, String) {
    let mut refusal = None;
    for extra in [
        &[][..],
        &["-C", "user=root,host=localhost,addr=127.0.0.1"][..],
    ] {
        match Command::new("/usr/sbin/sshd")
            .arg("-T")
            .arg("-f")
            .arg(config)
            .args(extra)
            .output()
        {
            Ok(out) if out.status.success() => {
                return (
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                    format!("sshd -T -f {}", config.display()),
                );
            }
            Ok(out) => {
                // sshd's own words, one line, never its raw stderr.
                let said = String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .map(|l| printable(l).into_owned())
                    .unwrap_or_else(|| format!("exit status {}", out.status));
                refusal.get_or_insert(said);
            }
            Err(_) => {}
        }
    }
    let (severity, message, fix) = match refusal {
        Some(said) => (
            Severity::Error,
            format!("sshd refuses this config: {said}; sshd will not start (or reload) with it"),
            format!("fix it and check with: sshd -t -f {}", config.display()),
        ),
        None => (
            Severity::Info,
            "could not run /usr/sbin/sshd -T; read the file itself (Include and Match are not evaluated)".to_string(),
            "install openssh-server to have the effective settings checked".to_string(),
        ),
    };
    findings.push(Finding::new(
        severity,
        "sshd-T",
        config.display().to_string(),
        message,
        fix,
    ));
    (
        fs::read_to_string(config).unwrap_or_default(),
        config.display().to_string(),
    )
}

/// Accounts the policy may require: listed users, group members, and for all_users every
/// local account with a login shell.
fn candidates(policy: &Policy) -> Vec<String> {
    let mut users: Vec<String> = policy.users.clone();
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect())
        .filter(|f: &Vec<&str>| f.len() >= 7)
        .collect();
    for g in &policy.groups {
        if let Ok(Some(group)) = Group::from_name(g) {
            users.extend(group.mem.iter().cloned());
            let gid = group.gid.as_raw().to_string();
            users.extend(
                entries
                    .iter()
                    .filter(|f| f[3] == gid)
                    .map(|f| f[0].to_string()),
            );
        }
    }
    if policy.all_users {
        users.extend(
            entries
                .iter()
                .filter(|f| {
                    f[2].parse::<u32>().is_ok_and(|uid| uid == 0 || uid >= 1000)
                        && !f[6].ends_with("nologin")
                        && !f[6].ends_with("false")
                })
                .map(|f| f[0].to_string()),
        );
    }
    users.sort();
    users.dedup();
    users
}

/// Findings for names in the rules that mean nobody or an alias (shared with
/// check-config).
/// What a broken config means for logins right now, as a finding.
pub fn broken_config(path: &Path, loaded: &Loaded) -> Option<Finding> {
    let fix = "fix it with: twofactor edit-config (it installs only a valid file)";
    match loaded {
        Loaded::Good { .. } => None,
        Loaded::Broken(f) => {
            let none = |v: Vec<&str>| {
                if v.is_empty() {
                    "none".to_string()
                } else {
                    v.join(", ")
                }
            };
            let mut message = format!(
                "the config is broken: {}. Until it is fixed, logins enforce the last good copy {} (saved {}), joined by the rules still readable in the broken file: a user is required if either requires them, and exempt only if both exempt them. Exempt while broken: users {}; groups {}.",
                f.error,
                f.copy.display(),
                format_utc(f.saved),
                none(f.exempt_users()),
                none(f.exempt_groups()),
            );
            if !f.unreadable.is_empty() {
                message.push_str(&format!(
                    " Unreadable in the broken file, so taken from the copy: {}.",
                    f.unreadable.join(", ")
                ));
            }
            Some(Finding::new(
                Severity::Error,
                "config",
                path.display().to_string(),
                message,
                fix,
            ))
        }
        Loaded::Unusable { error, looked } => Some(Finding::new(
            Severity::Error,
            "config",
            path.display().to_string(),
            format!(
                "the config is broken: {error}. No last good copy was found ({}), so every login through pam_twofactor is refused, exempt accounts included.",
                looked.join("; ")
            ),
            fix,
        )),
    }
}

pub fn name_findings(c: &Config) -> Vec<Finding> {
    c.policy
        .check_names(&Nss)
        .into_iter()
        .map(|n| {
            Finding::new(
                if n.is_error() {
                    Severity::Error
                } else {
                    Severity::Warning
                },
                "rule-name",
                c.path.display().to_string(),
                n.to_string(),
                "correct the name in the config, then run twofactor check-config",
            )
        })
        .collect()
}

/// State kept under another name of an account, under a name no account has, and
/// leftover files.
fn check_store(store: &Store, findings: &mut Vec<Finding>) {
    let scan = match store.scan() {
        Ok(s) => s,
        Err(e) => {
            findings.push(Finding::new(
                Severity::Error,
                "state-dir",
                store.dir().display().to_string(),
                format!("cannot list the state directory: {e}"),
                "check its owner and mode (root, 0700)",
            ));
            return;
        }
    };
    let dir = store.dir().display().to_string();
    for user in &scan.users {
        match Nss.account(user) {
            Ok(Some(c)) if &c == user => {}
            Ok(Some(c)) => findings.push(Finding::new(
                Severity::Error,
                "alias-state",
                format!("{dir}/{user}.json"),
                format!("state kept under {user:?}, another name of the account {c:?}: logins use {c}.json, so this account can look unenrolled and be enrolled at login by whoever has the password"),
                "merge it into the canonical file: twofactor tidy",
            )),
            Ok(None) => findings.push(Finding::new(
                Severity::Warning,
                "orphan-state",
                format!("{dir}/{user}.json"),
                format!("no account is named {user:?} (deleted or renamed?)"),
                format!("if it is no longer needed: twofactor reset {user}"),
            )),
            Err(e) => findings.push(Finding::new(
                Severity::Warning,
                "orphan-state",
                format!("{dir}/{user}.json"),
                format!("cannot look up {user:?}: {e}"),
                "check the name service",
            )),
        }
    }
    let leftovers = scan.stale_temps.len() + scan.orphan_locks.len();
    if leftovers > 0 {
        findings.push(Finding::new(
            Severity::Info,
            "leftovers",
            dir,
            format!("{} leftover temp file(s) from interrupted writes and {} lock file(s) of users with no state", scan.stale_temps.len(), scan.orphan_locks.len()),
            "remove them: twofactor tidy",
        ));
    }
}

fn check_policy(c: &Config, store: Option<&Store>, findings: &mut Vec<Finding>) {
    let p = &c.policy;
    findings.extend(name_findings(c));
    if let Some(store) = store {
        check_store(store, findings);
    }
    if p.all_users && p.exempt_users.is_empty() && p.exempt_groups.is_empty() {
        findings.push(Finding::new(Severity::Warning, "no-breakglass", c.path.display().to_string(), "all_users = true with no exempt account: a broken phone, a full disk or a bad config can lock every admin out", "add a break-glass account to enforce.exempt_users and keep its password offline"));
    }
    let Some(store) = store else { return };
    // Stranded: the login step core decides is a refusal that only an admin can lift.
    let now = SystemClock.now();
    let facts = LoginFacts {
        service: None,
        rhost: None,
        silent: false,
    };
    let stranded: Vec<String> = candidates(p)
        .into_iter()
        .filter(|u| User::from_name(u).ok().flatten().is_some())
        .filter(|u| {
            let (Ok(req), Ok(state)) = (p.requires(u, &Nss), Backend::facts(store, u)) else {
                return false;
            };
            login::next_step(c, &req, &state, &facts, now)
                == Step::NoGraceLeft {
                    enrol_elsewhere: false,
                }
        })
        .collect();
    if !stranded.is_empty() {
        findings.push(Finding::new(
            Severity::Error,
            "stranded",
            c.path.display().to_string(),
            format!("required but not enrolled, with enrolment at login off and no grace logins left, so they cannot log in: {}", stranded.join(", ")),
            "enrol them (twofactor enroll --user U --no-verify), give grace logins, or turn enroll.at_login on",
        ));
    }
}
