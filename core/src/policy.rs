//! Who must use a second factor, and why: the `[enforce]` rules, with NSS group lookups.

use std::ffi::CString;
use std::fmt;

use nix::unistd::{Gid, Group, User};
use thiserror::Error;

/// The `[enforce]` section: rules that make a user need a second factor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Everyone must use it.
    pub all_users: bool,
    /// Members (primary or supplementary) of these groups must.
    pub groups: Vec<String>,
    /// These users must.
    pub users: Vec<String>,
    /// Never required for these users, whatever else says (break-glass accounts).
    pub exempt_users: Vec<String>,
    /// Never required for members of these groups.
    pub exempt_groups: Vec<String>,
    /// PAM services where 2FA applies; empty means every service.
    pub services: Vec<String>,
    /// While config.toml is broken: the rules still readable in it, beside the last good
    /// config's rules above. They only ever add requirements (see [`Policy::requires`]).
    pub broken_file: Option<Box<Policy>>,
}

/// Whether a user must use a second factor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The answer.
    pub required: bool,
    /// The rule that gave it.
    pub reason: Reason,
}

/// The rule behind a [`Requirement`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// `enforce.all_users = true`.
    AllUsers,
    /// Member of this group in `enforce.groups`.
    Group(String),
    /// Listed in `enforce.users`.
    UserList,
    /// Listed in `enforce.exempt_users`.
    ExemptUser,
    /// Member of this group in `enforce.exempt_groups`.
    ExemptGroup(String),
    /// No rule names the user.
    NoRule,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AllUsers => f.write_str("all users (enforce.all_users)"),
            Self::Group(g) => write!(f, "group {g} (enforce.groups)"),
            Self::UserList => f.write_str("user list (enforce.users)"),
            Self::ExemptUser => f.write_str("exempt by enforce.exempt_users"),
            Self::ExemptGroup(g) => write!(f, "exempt by group {g} (enforce.exempt_groups)"),
            Self::NoRule => f.write_str("no rule requires it"),
        }
    }
}

/// A name service lookup failed, so the answer is unknown (callers fail closed).
#[derive(Debug, Error)]
pub enum LookupError {
    /// The user is not known to NSS.
    #[error("user {0:?} is not known to the name service")]
    UnknownUser(String),
    /// NSS itself failed (for example an unreachable LDAP server).
    #[error("name service lookup of {what} failed: {reason}")]
    Failed { what: String, reason: String },
}

/// Accounts and group membership as the system sees them.
pub trait Directory {
    /// The canonical name of the account `typed` names, or `None` if there is no such
    /// account. One account can answer to several names (`alice`, `ALICE`,
    /// `alice@corp.example`); policy and state are keyed by the canonical one.
    fn account(&self, typed: &str) -> Result<Option<String>, LookupError>;
    /// Every gid the user belongs to, primary and supplementary.
    fn user_gids(&self, user: &str) -> Result<Vec<u32>, LookupError>;
    /// The gid of a group, or `None` if no such group exists.
    fn group_gid(&self, group: &str) -> Result<Option<u32>, LookupError>;
}

/// The system's NSS (`/etc/group`, LDAP, SSSD, ...), through getpwnam/getgrouplist.
#[derive(Debug, Default, Clone, Copy)]
pub struct Nss;

impl Directory for Nss {
    /// `getpwuid(getpwnam(typed).pw_uid).pw_name`: some NSS sources answer `getpwnam`
    /// with the name as typed, but the uid leads back to the one name of the account.
    fn account(&self, typed: &str) -> Result<Option<String>, LookupError> {
        let failed = |e: nix::Error| LookupError::Failed {
            what: format!("user {typed:?}"),
            reason: e.to_string(),
        };
        if typed.is_empty() || typed.contains('\0') {
            return Ok(None);
        }
        let Some(entry) = User::from_name(typed).map_err(failed)? else {
            return Ok(None);
        };
        match User::from_uid(entry.uid).map_err(failed)? {
            Some(owner) => Ok(Some(owner.name)),
            None => Err(LookupError::Failed {
                what: format!("uid {} of user {typed:?}", entry.uid),
                reason: "the uid has no name".into(),
            }),
        }
    }

    fn user_gids(&self, user: &str) -> Result<Vec<u32>, LookupError> {
        let failed = |e: nix::Error| LookupError::Failed {
            what: format!("user {user:?}"),
            reason: e.to_string(),
        };
        let entry = User::from_name(user)
            .map_err(failed)?
            .ok_or_else(|| LookupError::UnknownUser(user.to_string()))?;
        let name = CString::new(user).map_err(|_| LookupError::UnknownUser(user.to_string()))?;
        let gids = nix::unistd::getgrouplist(&name, entry.gid).map_err(failed)?;
        Ok(gids.into_iter().map(Gid::as_raw).collect())
    }

    fn group_gid(&self, group: &str) -> Result<Option<u32>, LookupError> {
        Group::from_name(group)
            .map(|g| g.map(|g| g.gid.as_raw()))
            .map_err(|e| LookupError::Failed {
                what: format!("group {group:?}"),
                reason: e.to_string(),
            })
    }
}

impl Policy {
    /// Whether the module applies to PAM service `service` at all (`enforce.services`).
    /// While the config file is broken, a service either file names is in scope.
    pub fn applies_to_service(&self, service: &str) -> bool {
        let names = |p: &Policy| p.services.is_empty() || p.services.iter().any(|s| s == service);
        names(self) || self.broken_file.as_deref().is_some_and(names)
    }

    /// Whether `typed` is exempt by name alone, with no directory lookup: the break-glass
    /// check that works when NSS does not. While the config file is broken, both files
    /// must list the name.
    pub fn exempts_name(&self, typed: &str) -> bool {
        let listed = |p: &Policy| p.exempt_users.iter().any(|u| u == typed);
        listed(self) && self.broken_file.as_deref().is_none_or(listed)
    }

    /// Whether `user` must use a second factor, and which rule says so.
    ///
    /// Exemptions are checked first and win. Group rules are resolved only when
    /// configured, so a break-glass user in `exempt_users` needs no NSS lookup at all.
    /// While the config file is broken, a user is required if either file's rules
    /// require them, and exempt only if both exempt them.
    pub fn requires(&self, user: &str, dir: &dyn Directory) -> Result<Requirement, LookupError> {
        let mine = self.requires_by_own_rules(user, dir)?;
        let Some(broken) = self.broken_file.as_deref() else {
            return Ok(mine);
        };
        let theirs = broken.requires_by_own_rules(user, dir)?;
        let exempt =
            |r: &Requirement| matches!(r.reason, Reason::ExemptUser | Reason::ExemptGroup(_));
        if mine.required {
            return Ok(mine);
        }
        // Theirs wins when it requires, or when only the last good config exempts.
        if theirs.required || (exempt(&mine) && !exempt(&theirs)) {
            return Ok(theirs);
        }
        Ok(mine)
    }

    fn requires_by_own_rules(
        &self,
        user: &str,
        dir: &dyn Directory,
    ) -> Result<Requirement, LookupError> {
        let answer = |required, reason| Ok(Requirement { required, reason });
        if self.exempt_users.iter().any(|u| u == user) {
            return answer(false, Reason::ExemptUser);
        }
        let needs_groups = !self.exempt_groups.is_empty()
            || (!self.groups.is_empty()
                && !self.all_users
                && !self.users.iter().any(|u| u == user));
        let gids = if needs_groups {
            dir.user_gids(user)?
        } else {
            Vec::new()
        };
        if let Some(g) = first_member_of(&self.exempt_groups, &gids, dir)? {
            return answer(false, Reason::ExemptGroup(g));
        }
        if self.users.iter().any(|u| u == user) {
            return answer(true, Reason::UserList);
        }
        if self.all_users {
            return answer(true, Reason::AllUsers);
        }
        if let Some(g) = first_member_of(&self.groups, &gids, dir)? {
            return answer(true, Reason::Group(g));
        }
        answer(false, Reason::NoRule)
    }
}

/// A name in an `[enforce]` rule that does not mean what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameProblem {
    /// The config key, such as `enforce.groups`.
    pub key: &'static str,
    /// The name as written.
    pub name: String,
    /// What is wrong.
    pub problem: NameIssue,
}

/// What is wrong with a name in a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameIssue {
    /// The name service does not know it: the rule matches nobody.
    NotFound,
    /// An alias of an account with another canonical name; rules compare canonical names.
    NotCanonical(String),
    /// The lookup itself failed, so nothing can be said.
    LookupFailed(String),
}

impl NameProblem {
    /// Whether this makes the rule silently wrong (an error), rather than unknowable now.
    pub fn is_error(&self) -> bool {
        !matches!(self.problem, NameIssue::LookupFailed(_))
    }
}

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.key.ends_with("groups") {
            "group"
        } else {
            "user"
        };
        match &self.problem {
            NameIssue::NotFound => write!(
                f,
                "{}: no {kind} {:?} is known to the name service, so this entry matches nobody",
                self.key, self.name
            ),
            NameIssue::NotCanonical(c) => write!(
                f,
                "{}: {:?} is another name of the account {c:?}; rules match canonical names only, so write {c:?}",
                self.key, self.name
            ),
            NameIssue::LookupFailed(e) => {
                write!(
                    f,
                    "{}: cannot look up {kind} {:?}: {e}",
                    self.key, self.name
                )
            }
        }
    }
}

impl Policy {
    /// Every user and group a rule names that the name service does not know, or knows
    /// under another name. A typo such as `sudoo` would otherwise turn 2FA off for a group.
    pub fn check_names(&self, dir: &dyn Directory) -> Vec<NameProblem> {
        let mut out = Vec::new();
        for (key, names) in [
            ("enforce.users", &self.users),
            ("enforce.exempt_users", &self.exempt_users),
        ] {
            for name in names {
                let problem = match dir.account(name) {
                    Ok(Some(c)) if &c == name => continue,
                    Ok(Some(c)) => NameIssue::NotCanonical(c),
                    Ok(None) => NameIssue::NotFound,
                    Err(e) => NameIssue::LookupFailed(e.to_string()),
                };
                out.push(NameProblem {
                    key,
                    name: name.clone(),
                    problem,
                });
            }
        }
        for (key, names) in [
            ("enforce.groups", &self.groups),
            ("enforce.exempt_groups", &self.exempt_groups),
        ] {
            for name in names {
                let problem = match dir.group_gid(name) {
                    Ok(Some(_)) => continue,
                    Ok(None) => NameIssue::NotFound,
                    Err(e) => NameIssue::LookupFailed(e.to_string()),
                };
                out.push(NameProblem {
                    key,
                    name: name.clone(),
                    problem,
                });
            }
        }
        out
    }
}

/// The first group in `groups` that one of `gids` belongs to; groups NSS does not know
/// are skipped (no one can be a member of them).
fn first_member_of(
    groups: &[String],
    gids: &[u32],
    dir: &dyn Directory,
) -> Result<Option<String>, LookupError> {
    for group in groups {
        if let Some(gid) = dir.group_gid(group)?
            && gids.contains(&gid)
        {
            return Ok(Some(group.clone()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A directory with fixed members; `fail` makes every lookup fail like a down LDAP.
    struct Fixed {
        users: HashMap<&'static str, Vec<u32>>,
        groups: HashMap<&'static str, u32>,
        fail: bool,
    }

    impl Directory for Fixed {
        fn account(&self, typed: &str) -> Result<Option<String>, LookupError> {
            if self.fail {
                return Err(LookupError::Failed {
                    what: typed.into(),
                    reason: "down".into(),
                });
            }
            // ALICE is an alias of alice, as a case-insensitive directory would answer.
            let lower = typed.to_ascii_lowercase();
            Ok(self
                .users
                .keys()
                .find(|u| **u == lower)
                .map(|u| u.to_string()))
        }
        fn user_gids(&self, user: &str) -> Result<Vec<u32>, LookupError> {
            if self.fail {
                return Err(LookupError::Failed {
                    what: user.into(),
                    reason: "down".into(),
                });
            }
            self.users
                .get(user)
                .cloned()
                .ok_or_else(|| LookupError::UnknownUser(user.into()))
        }
        fn group_gid(&self, group: &str) -> Result<Option<u32>, LookupError> {
            if self.fail {
                return Err(LookupError::Failed {
                    what: group.into(),
                    reason: "down".into(),
                });
            }
            Ok(self.groups.get(group).copied())
        }
    }

    fn dir() -> Fixed {
        Fixed {
            users: HashMap::from([
                ("alice", vec![100, 10]),
                ("bob", vec![100]),
                ("ops", vec![100, 20]),
            ]),
            groups: HashMap::from([("wheel", 10), ("users", 100), ("breakglass", 20)]),
            fail: false,
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn service_scope() {
        let all = Policy::default();
        assert!(all.applies_to_service("sudo"));
        let some = Policy {
            services: names(&["sshd", "login"]),
            ..Policy::default()
        };
        assert!(some.applies_to_service("sshd") && some.applies_to_service("login"));
        assert!(!some.applies_to_service("sudo") && !some.applies_to_service(""));
    }

    #[test]
    fn while_broken_either_file_requires_and_both_must_exempt() {
        // The last good config exempts alice by name and ops by group; the broken edit
        // dropped alice and requires everyone.
        let last_good = Policy {
            groups: names(&["wheel"]),
            exempt_users: names(&["alice", "bob"]),
            exempt_groups: names(&["breakglass"]),
            services: names(&["sshd"]),
            ..Policy::default()
        };
        let broken = Policy {
            all_users: true,
            exempt_users: names(&["bob"]),
            exempt_groups: names(&["breakglass"]),
            services: names(&["sudo"]),
            ..Policy::default()
        };
        let p = Policy {
            broken_file: Some(Box::new(broken)),
            ..last_good
        };
        let d = dir();
        let required = |u: &str| p.requires(u, &d).unwrap();
        assert_eq!(required("alice").reason, Reason::AllUsers);
        assert!(required("alice").required);
        assert_eq!(required("bob").reason, Reason::ExemptUser);
        assert_eq!(
            required("ops").reason,
            Reason::ExemptGroup("breakglass".into())
        );
        assert!(!required("ops").required);
        assert!(p.exempts_name("bob") && !p.exempts_name("alice"));
        // Either file's services are in scope.
        assert!(p.applies_to_service("sshd") && p.applies_to_service("sudo"));
        assert!(!p.applies_to_service("login"));

        // Exempt only in the broken file: the last good rules still require.
        let p = Policy {
            broken_file: Some(Box::new(Policy {
                exempt_users: names(&["alice"]),
                ..Policy::default()
            })),
            ..Policy {
                groups: names(&["wheel"]),
                ..Policy::default()
            }
        };
        assert_eq!(
            p.requires("alice", &d).unwrap().reason,
            Reason::Group("wheel".into())
        );
        assert!(!p.exempts_name("alice"));
    }

    #[test]
    fn nobody_by_default() {
        let r = Policy::default().requires("alice", &dir()).unwrap();
        assert_eq!(
            r,
            Requirement {
                required: false,
                reason: Reason::NoRule
            }
        );
    }

    #[test]
    fn each_rule_names_itself() {
        let all = Policy {
            all_users: true,
            ..Policy::default()
        };
        assert_eq!(
            all.requires("bob", &dir()).unwrap().reason,
            Reason::AllUsers
        );
        let group = Policy {
            groups: names(&["wheel"]),
            ..Policy::default()
        };
        assert_eq!(
            group.requires("alice", &dir()).unwrap().reason,
            Reason::Group("wheel".into())
        );
        assert!(!group.requires("bob", &dir()).unwrap().required);
        let list = Policy {
            users: names(&["bob"]),
            ..Policy::default()
        };
        assert_eq!(
            list.requires("bob", &dir()).unwrap().reason,
            Reason::UserList
        );
        assert!(!list.requires("alice", &dir()).unwrap().required);
    }

    #[test]
    fn primary_group_counts() {
        let p = Policy {
            groups: names(&["users"]),
            ..Policy::default()
        };
        assert_eq!(
            p.requires("bob", &dir()).unwrap().reason,
            Reason::Group("users".into())
        );
    }

    #[test]
    fn exemptions_win_over_every_rule() {
        let every_rule = Policy {
            all_users: true,
            groups: names(&["wheel", "users"]),
            users: names(&["alice", "ops"]),
            exempt_users: names(&["alice"]),
            exempt_groups: names(&["breakglass"]),
            services: vec![],
            broken_file: None,
        };
        let d = dir();
        assert_eq!(
            every_rule.requires("alice", &d).unwrap(),
            Requirement {
                required: false,
                reason: Reason::ExemptUser
            }
        );
        assert_eq!(
            every_rule.requires("ops", &d).unwrap(),
            Requirement {
                required: false,
                reason: Reason::ExemptGroup("breakglass".into())
            }
        );
        assert_eq!(
            every_rule.requires("bob", &d).unwrap(),
            Requirement {
                required: true,
                reason: Reason::AllUsers
            }
        );
    }

    #[test]
    fn exempt_user_needs_no_lookup_even_when_nss_is_down() {
        let p = Policy {
            groups: names(&["wheel"]),
            exempt_users: names(&["root"]),
            ..Policy::default()
        };
        let down = Fixed {
            fail: true,
            ..dir()
        };
        assert_eq!(
            p.requires("root", &down).unwrap().reason,
            Reason::ExemptUser
        );
        assert!(
            p.requires("alice", &down).is_err(),
            "an unknown answer must not read as not required"
        );
    }

    #[test]
    fn all_users_needs_no_lookup() {
        let p = Policy {
            all_users: true,
            ..Policy::default()
        };
        let down = Fixed {
            fail: true,
            ..dir()
        };
        assert_eq!(p.requires("alice", &down).unwrap().reason, Reason::AllUsers);
    }

    #[test]
    fn unknown_groups_match_nobody_and_unknown_users_are_errors() {
        let p = Policy {
            groups: names(&["nosuchgroup"]),
            ..Policy::default()
        };
        assert!(!p.requires("alice", &dir()).unwrap().required);
        assert!(matches!(
            p.requires("mallory", &dir()),
            Err(LookupError::UnknownUser(_))
        ));
    }

    #[test]
    fn user_list_beats_group_for_the_reason() {
        let p = Policy {
            groups: names(&["wheel"]),
            users: names(&["alice"]),
            ..Policy::default()
        };
        assert_eq!(
            p.requires("alice", &dir()).unwrap().reason,
            Reason::UserList
        );
    }

    #[test]
    fn check_names_reports_typos_aliases_and_failures() {
        let p = Policy {
            groups: names(&["wheel", "sudoo"]),
            users: names(&["alice", "ALICE", "nobody-here"]),
            exempt_users: names(&["ops"]),
            exempt_groups: names(&["breakglas"]),
            ..Policy::default()
        };
        let found: Vec<(String, NameIssue)> = p
            .check_names(&dir())
            .into_iter()
            .map(|n| (format!("{}={}", n.key, n.name), n.problem))
            .collect();
        assert_eq!(
            found,
            [
                (
                    "enforce.users=ALICE".to_string(),
                    NameIssue::NotCanonical("alice".into())
                ),
                ("enforce.users=nobody-here".to_string(), NameIssue::NotFound),
                ("enforce.groups=sudoo".to_string(), NameIssue::NotFound),
                (
                    "enforce.exempt_groups=breakglas".to_string(),
                    NameIssue::NotFound
                ),
            ]
        );
        let text = p.check_names(&dir())[2].to_string();
        assert!(
            text.contains("no group \"sudoo\"") && text.contains("matches nobody"),
            "{text}"
        );
        let down = Fixed {
            fail: true,
            ..dir()
        };
        let failed = p.check_names(&down);
        assert_eq!(failed.len(), 7, "every name is unknowable when NSS is down");
        assert!(
            failed.iter().all(|n| !n.is_error()),
            "a lookup failure is not a verdict"
        );
    }
}
