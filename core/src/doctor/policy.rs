//! The policy and what it meets: a broken config, names in the rules that mean nobody,
//! no break-glass account, users who can never log in, the state directory and its
//! files, and the clock.

use std::path::Path;

use super::{Finding, Level, SshdPolicy};
use crate::backend::UserFacts;
use crate::clock::format_utc;
use crate::config::Config;
use crate::last_good::Loaded;
use crate::login::{self, LoginFacts, Step};
use crate::policy::{Directory, Policy, Requirement};
use crate::store::{FileError, Scan, StoreError};

/// What a broken config means for logins right now.
pub fn broken_config(path: &Path, loaded: &Loaded) -> Option<Finding> {
    let fix = "fix it with: twofactor edit-config (it installs only a valid file)";
    let path = path.display().to_string();
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
            Some(Finding::new(Level::Error, "config", path, message, fix))
        }
        Loaded::Unusable { error, looked } => Some(Finding::new(
            Level::Error,
            "config",
            path,
            format!(
                "the config is broken: {error}. No last good copy was found ({}), so every login through pam_twofactor is refused, exempt accounts included.",
                looked.join("; ")
            ),
            fix,
        )),
    }
}

/// Names in the rules that the name service does not know, or knows under another name.
pub fn rule_names(c: &Config, dir: &dyn Directory) -> Vec<Finding> {
    c.policy
        .check_names(dir)
        .into_iter()
        .map(|n| {
            Finding::new(
                if n.is_error() {
                    Level::Error
                } else {
                    Level::Warning
                },
                "rule-name",
                c.path.display().to_string(),
                n.to_string(),
                "correct the name in the config, then run twofactor check-config",
            )
        })
        .collect()
}

/// `all_users` with nobody exempt: one broken phone, disk or config away from locking
/// every administrator out.
pub fn break_glass(c: &Config) -> Option<Finding> {
    let p = &c.policy;
    (p.all_users && p.exempt_users.is_empty() && p.exempt_groups.is_empty()).then(|| {
        Finding::new(
            Level::Warning,
            "no-breakglass",
            c.path.display().to_string(),
            "all_users = true with no exempt account: a broken phone, a full disk or a bad config can lock every admin out",
            "add a break-glass account to enforce.exempt_users and keep its password offline",
        )
    })
}

/// A group as the name service gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    /// Its gid (members by primary group have it in `/etc/passwd`).
    pub gid: u32,
    /// Its supplementary members.
    pub members: Vec<String>,
}

/// Accounts the policy may require, from `/etc/passwd`'s text and `group` (a group's gid
/// and members): listed users, group members (primary or supplementary), and for
/// `all_users` every local account with a login shell (root, and uids from 1000).
pub fn candidates(
    policy: &Policy,
    passwd: &str,
    group: &dyn Fn(&str) -> Option<GroupEntry>,
) -> Vec<String> {
    let mut users: Vec<String> = policy.users.clone();
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect())
        .filter(|f: &Vec<&str>| f.len() >= 7)
        .collect();
    for GroupEntry { gid, members } in policy.groups.iter().filter_map(|g| group(g)) {
        users.extend(members);
        let gid = gid.to_string();
        users.extend(
            entries
                .iter()
                .filter(|f| f[3] == gid)
                .map(|f| f[0].to_string()),
        );
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

/// Users whose next login core would refuse in a way only an admin can lift: required,
/// no authenticator, enrollment at login off and no grace left.
pub fn stranded(
    c: &Config,
    users: &[(String, Requirement, UserFacts)],
    now: u64,
) -> Option<Finding> {
    let facts = LoginFacts {
        service: None,
        rhost: None,
        silent: false,
        one_prompt: false,
        ssh_factor: None,
        after_login: None,
    };
    let stranded: Vec<&str> = users
        .iter()
        .filter(|(_, req, state)| {
            login::next_step(c, req, state, &facts, now)
                == Step::NoGraceLeft {
                    enroll_elsewhere: false,
                }
        })
        .map(|(u, _, _)| u.as_str())
        .collect();
    (!stranded.is_empty()).then(|| {
        Finding::new(
            Level::Error,
            "stranded",
            c.path.display().to_string(),
            format!("required but not enrolled, with enrolment at login off and no grace logins left, so they cannot log in: {}", stranded.join(", ")),
            "enrol them (twofactor enroll --user U --no-verify), give grace logins, or turn enroll.at_login on",
        )
    })
}

/// What sshd's rules need to know of the policy: whether anyone is required, and whether
/// root is required without an authenticator (`root`: its requirement and state, when
/// they could be had).
pub fn sshd_policy(policy: &Policy, root: Option<(&Requirement, &UserFacts)>) -> SshdPolicy {
    SshdPolicy {
        anyone_required: policy.all_users || !policy.groups.is_empty() || !policy.users.is_empty(),
        root_unenrolled: root.is_some_and(|(req, state)| req.required && !state.is_enrolled()),
        one_prompt: false,
    }
}

/// The state directory the store refused: logins of enrolled or required users fail.
pub fn state_dir_refused(dir: &Path, e: &StoreError) -> Finding {
    let dir = dir.display();
    let fix = match e {
        StoreError::MissingDir(_) => format!("create it: install -d -m 0700 -o root -g root {dir}"),
        StoreError::File(FileError::BadMode { .. }) => format!("make it private: chmod 0700 {dir}"),
        StoreError::File(FileError::WrongOwner { .. }) => format!("give it to root: chown root:root {dir}"),
        StoreError::File(FileError::Symlink(_)) => "replace the symbolic link with a real directory (mode 0700, owned by root), or point storage.state_dir at the real one".to_string(),
        _ => format!("check {dir}: a directory owned by root with mode 0700"),
    };
    Finding::new(
        Level::Error,
        "state-dir",
        dir.to_string(),
        format!(
            "the state directory is refused, so logins of enrolled or required users fail: {e}"
        ),
        fix,
    )
}

/// What the state directory holds (`scan`, or why it could not be listed): state kept
/// under another name of an account, under a name no account has, and leftover files.
pub fn state_files(
    dir: &Path,
    scan: &Result<Scan, StoreError>,
    names: &dyn Directory,
) -> Vec<Finding> {
    let dir = dir.display().to_string();
    let scan = match scan {
        Ok(s) => s,
        Err(e) => {
            return vec![Finding::new(
                Level::Error,
                "state-dir",
                dir,
                format!("cannot list the state directory: {e}"),
                "check its owner and mode (root, 0700)",
            )];
        }
    };
    let mut findings = Vec::new();
    for user in &scan.users {
        let file = format!("{dir}/{user}.json");
        match names.account(user) {
            Ok(Some(c)) if &c == user => {}
            Ok(Some(c)) => findings.push(Finding::new(
                Level::Error,
                "alias-state",
                file,
                format!("state kept under {user:?}, another name of the account {c:?}: logins use {c}.json, so this account can look unenrolled and be enrolled at login by whoever has the password"),
                "merge it into the canonical file: twofactor tidy",
            )),
            Ok(None) => findings.push(Finding::new(
                Level::Warning,
                "orphan-state",
                file,
                format!("no account is named {user:?} (deleted or renamed?)"),
                format!("if it is no longer needed: twofactor reset {user}"),
            )),
            Err(e) => findings.push(Finding::new(
                Level::Warning,
                "orphan-state",
                file,
                format!("cannot look up {user:?}: {e}"),
                "check the name service",
            )),
        }
    }
    if !scan.stale_temps.is_empty() || !scan.orphan_locks.is_empty() {
        findings.push(Finding::new(
            Level::Info,
            "leftovers",
            dir,
            format!("{} leftover temp file(s) from interrupted writes and {} lock file(s) of users with no state", scan.stale_temps.len(), scan.orphan_locks.len()),
            "remove them: twofactor tidy",
        ));
    }
    findings
}

/// The clock's sync state (`None`: it could not be asked). A drifting clock is the top
/// cause of "codes not accepted".
pub fn clock(synchronised: Option<bool>) -> Option<Finding> {
    match synchronised {
        Some(true) => None,
        Some(false) => Some(Finding::new(
            Level::Warning,
            "clock",
            "system clock",
            "the clock is not synchronised: the top cause of \"codes not accepted\"",
            "enable NTP (timedatectl set-ntp true, or chrony/systemd-timesyncd)",
        )),
        None => Some(Finding::new(
            Level::Info,
            "clock",
            "system clock",
            "cannot tell whether the clock is synchronised",
            "make sure NTP runs",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::AuthenticatorFacts;
    use crate::config::ConfigError;
    use crate::doctor::ids;
    use crate::policy::{LookupError, Reason};
    use crate::store::FileError;
    use crate::totp::{SecretKey, TotpParams};
    use std::path::PathBuf;

    /// "alice" is an account also known as "ALICE"; "wheel" is group 10.
    struct Names;
    impl Directory for Names {
        fn account(&self, typed: &str) -> Result<Option<String>, LookupError> {
            Ok(match typed {
                "alice" | "ALICE" => Some("alice".into()),
                "root" => Some("root".into()),
                "ldapdown" => {
                    return Err(LookupError::Failed {
                        what: "user \"ldapdown\"".into(),
                        reason: "timed out".into(),
                    });
                }
                _ => None,
            })
        }
        fn user_gids(&self, _: &str) -> Result<Vec<u32>, LookupError> {
            Ok(vec![])
        }
        fn group_gid(&self, group: &str) -> Result<Option<u32>, LookupError> {
            Ok((group == "wheel").then_some(10))
        }
    }

    fn enrolled() -> UserFacts {
        let key = SecretKey::generate(&mut crate::random::SeededRandom::new(3)).unwrap();
        UserFacts {
            authenticator: Some(AuthenticatorFacts {
                id: crate::backend::AuthenticatorId::of(&key),
                params: TotpParams::default(),
                enabled: true,
                enrolled_at: 0,
                last_step: None,
                window: None,
            }),
            ..UserFacts::default()
        }
    }

    fn required() -> Requirement {
        Requirement {
            required: true,
            reason: Reason::AllUsers,
        }
    }

    #[test]
    fn a_config_with_no_last_good_copy_refuses_everyone() {
        let error = ConfigError::File(FileError::NotFound(PathBuf::from(
            "/etc/twofactor/config.toml",
        )));
        let loaded = Loaded::Unusable {
            error,
            looked: vec!["/var/lib/twofactor/last-good-config.toml: not found".into()],
        };
        let f = broken_config(Path::new("/etc/twofactor/config.toml"), &loaded).unwrap();
        assert_eq!((f.severity, f.id), (Level::Error, "config"));
        assert!(
            f.message
                .contains("every login through pam_twofactor is refused"),
            "{}",
            f.message
        );
        assert!(f.fix.contains("twofactor edit-config"));
        let good = Loaded::Good {
            config: Box::default(),
            text: String::new(),
        };
        assert_eq!(broken_config(Path::new("/x"), &good), None);
    }

    #[test]
    fn rule_names_and_break_glass() {
        let mut c = Config::default();
        c.policy.users = vec!["ALICE".into(), "bob".into()];
        c.policy.groups = vec!["wheel".into(), "sudoo".into()];
        let found = rule_names(&c, &Names);
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(found.iter().all(|f| f.id == "rule-name"));
        assert!(found.iter().any(|f| f.message.contains("sudoo")));
        assert_eq!(break_glass(&c), None);
        c.policy.all_users = true;
        assert_eq!(break_glass(&c).unwrap().id, "no-breakglass");
        c.policy.exempt_users = vec!["rescue".into()];
        assert_eq!(break_glass(&c), None);
    }

    #[test]
    fn candidates_are_listed_users_group_members_and_login_accounts() {
        let passwd = "root:x:0:0::/root:/bin/bash\n\
                      daemon:x:1:1::/:/usr/sbin/nologin\n\
                      carol:x:1001:10::/home/carol:/bin/bash\n\
                      dave:x:1002:1002::/home/dave:/bin/false\n\
                      erin:x:1003:1003::/home/erin:/bin/sh\n";
        let group = |g: &str| {
            (g == "wheel").then(|| GroupEntry {
                gid: 10,
                members: vec!["frank".to_string()],
            })
        };
        let mut p = Policy {
            users: vec!["zoe".into()],
            groups: vec!["wheel".into()],
            ..Policy::default()
        };
        assert_eq!(candidates(&p, passwd, &group), ["carol", "frank", "zoe"]);
        p.all_users = true;
        assert_eq!(
            candidates(&p, passwd, &group),
            ["carol", "erin", "frank", "root", "zoe"]
        );
    }

    #[test]
    fn only_users_no_login_can_help_are_stranded() {
        let mut c = Config::default();
        c.enroll.at_login = false;
        let users = vec![
            ("amy".to_string(), required(), UserFacts::default()),
            ("ben".to_string(), required(), enrolled()),
            (
                "cal".to_string(),
                Requirement {
                    required: false,
                    reason: Reason::NoRule,
                },
                UserFacts::default(),
            ),
        ];
        let f = stranded(&c, &users, 0).unwrap();
        assert_eq!((f.severity, f.id), (Level::Error, "stranded"));
        assert!(f.message.ends_with(": amy"), "{}", f.message);
        // Grace logins left, or enrollment at login: they can still get in.
        c.enroll.grace_logins = 1;
        assert_eq!(stranded(&c, &users, 0), None);
        c.enroll.grace_logins = 0;
        c.enroll.at_login = true;
        assert_eq!(stranded(&c, &users, 0), None);
    }

    #[test]
    fn root_matters_to_sshd_only_when_required_and_unenrolled() {
        let p = Policy::default();
        assert!(!sshd_policy(&p, None).anyone_required);
        let p = Policy {
            all_users: true,
            ..Policy::default()
        };
        let none = UserFacts::default();
        let s = sshd_policy(&p, Some((&required(), &none)));
        assert!(s.anyone_required && s.root_unenrolled);
        assert!(!sshd_policy(&p, Some((&required(), &enrolled()))).root_unenrolled);
    }

    #[test]
    fn the_state_directory_and_its_files() {
        let dir = Path::new("/var/lib/twofactor");
        let f = state_dir_refused(dir, &StoreError::MissingDir(dir.to_path_buf()));
        assert!(
            f.fix.starts_with("create it: install -d -m 0700"),
            "{}",
            f.fix
        );
        let scan = Scan {
            users: vec![
                "alice".into(),
                "ALICE".into(),
                "gone".into(),
                "ldapdown".into(),
            ],
            orphan_locks: vec!["x".into()],
            stale_temps: vec![],
        };
        let found = state_files(dir, &Ok(scan), &Names);
        assert_eq!(
            ids(&found),
            ["alias-state", "orphan-state", "orphan-state", "leftovers"],
            "{found:#?}"
        );
        assert_eq!(found[0].severity, Level::Error);
        let unlisted = state_files(dir, &Err(StoreError::MissingDir(dir.to_path_buf())), &Names);
        assert_eq!(ids(&unlisted), ["state-dir"]);
        assert!(state_files(dir, &Ok(Scan::default()), &Names).is_empty());
    }

    #[test]
    fn an_unsynchronised_clock_is_a_warning() {
        assert_eq!(clock(Some(true)), None);
        assert_eq!(clock(Some(false)).unwrap().severity, Level::Warning);
        assert_eq!(clock(None).unwrap().severity, Level::Info);
    }
}
