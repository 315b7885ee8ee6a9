//! The last config that validated, so that a broken `config.toml` neither lets a required
//! user in without a code nor locks out an exempt account.
//!
//! A login that reads a valid config keeps a copy of it in the state dir
//! ([`FILE_NAME`], root 0600). While the file is broken, logins enforce that copy, made
//! stricter by whatever of the broken file's `[enforce]` table can still be read: a user
//! is required if either requires them and exempt only if both exempt them, so an
//! exemption removed in the same edit as a typo is gone at once. With no copy, every
//! login is refused.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use crate::config::{Config, ConfigError, MAX_CONFIG_BYTES};
use crate::fsutil::{self, FileError, FileRules};
use crate::policy::Policy;
use crate::store::{Store, StoreError};

/// The copy's name in the state dir. It matches no state, lock or temp file name.
pub const FILE_NAME: &str = "last-good-config.toml";
const TEMP_NAME: &str = ".last-good-config.new";
/// Where the copy is looked for when the broken file does not say.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/twofactor";

const TABLES: [&str; 8] = [
    "version",
    "enforce",
    "enroll",
    "totp",
    "backup_codes",
    "lockout",
    "trusted_devices",
    "storage",
];
const ENFORCE_KEYS: [&str; 6] = [
    "all_users",
    "groups",
    "users",
    "exempt_users",
    "exempt_groups",
    "services",
];

/// What logins enforce, given the config file as it is now.
#[derive(Debug)]
pub enum Loaded {
    /// The file is valid.
    Good {
        /// The config.
        config: Box<Config>,
        /// Its text, for [`remember`].
        text: String,
    },
    /// The file is broken; a copy of the last good one stands in.
    Broken(Box<Fallback>),
    /// The file is broken and no good copy was found: every login is refused.
    Unusable {
        /// What is wrong with the file.
        error: ConfigError,
        /// Why each place a copy could be was no help.
        looked: Vec<String>,
    },
}

/// The rules in force while the config file is broken.
#[derive(Debug)]
pub struct Fallback {
    /// What is wrong with the file.
    pub error: ConfigError,
    /// The last good config, its policy joined by the broken file's readable rules.
    pub config: Config,
    /// The copy it came from.
    pub copy: PathBuf,
    /// When the copy was saved (Unix seconds).
    pub saved: u64,
    /// `[enforce]` keys of the broken file that could not be read; the last good values
    /// stand in for them.
    pub unreadable: Vec<String>,
}

impl Fallback {
    /// Users exempt while the file is broken (listed in both files' `exempt_users`).
    pub fn exempt_users(&self) -> Vec<&str> {
        let policy = &self.config.policy;
        policy
            .exempt_users
            .iter()
            .map(String::as_str)
            .filter(|u| policy.exempts_name(u))
            .collect()
    }

    /// Groups exempt while the file is broken (listed in both files).
    pub fn exempt_groups(&self) -> Vec<&str> {
        let policy = &self.config.policy;
        let both = |g: &String| {
            policy
                .broken_file
                .as_deref()
                .is_none_or(|b| b.exempt_groups.contains(g))
        };
        policy
            .exempt_groups
            .iter()
            .filter(|g| both(g))
            .map(String::as_str)
            .collect()
    }
}

impl std::fmt::Display for Fallback {
    /// One line for the log: what is wrong, what is enforced instead, and the fix.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "config {}; enforcing the last good copy {} (saved {}) joined by the rules still readable in the broken file",
            self.error,
            self.copy.display(),
            crate::clock::format_utc(self.saved)
        )?;
        if !self.unreadable.is_empty() {
            write!(
                f,
                " (unreadable there, so taken from the copy: {})",
                self.unreadable.join(", ")
            )?;
        }
        f.write_str("; fix the file with: twofactor edit-config")
    }
}

/// Reads the config at `path` and, if it is broken, the last good copy. Changes nothing.
pub fn load(path: &Path, owner: u32) -> Loaded {
    let (error, broken_text) = match Config::read_text(path, owner) {
        Ok(text) => match Config::parse(path, &text) {
            Ok(config) => {
                return Loaded::Good {
                    config: Box::new(config),
                    text,
                };
            }
            Err(e) => (e, Some(text)),
        },
        Err(e) => (e, None),
    };
    let mut looked = Vec::new();
    for dir in copy_dirs(broken_text.as_deref()) {
        let copy = dir.join(FILE_NAME);
        match read_copy(&copy, path, owner) {
            Ok((config, saved)) => {
                let (broken, unreadable) = readable_rules(broken_text.as_deref(), &config.policy);
                let mut config = config;
                config.policy.broken_file = Some(Box::new(broken));
                return Loaded::Broken(Box::new(Fallback {
                    error,
                    config,
                    copy,
                    saved,
                    unreadable,
                }));
            }
            Err(why) => looked.push(why),
        }
    }
    Loaded::Unusable { error, looked }
}

/// Keeps `text`, the text of the valid `config`, as the last good copy in its state dir.
/// Returns whether the copy changed. Concurrent logins serialise on a lock of the
/// directory, and the copy is replaced atomically.
pub fn remember(config: &Config, text: &str, owner: u32) -> Result<bool, StoreError> {
    let dir = &config.storage.state_dir;
    let copy = dir.join(FILE_NAME);
    let wanted = format!("{}{text}", header(&config.path));
    if read_bytes(&copy, owner).is_ok_and(|b| b == wanted.as_bytes()) {
        return Ok(false);
    }
    Store::create(dir, owner)?;
    let lock = File::open(dir).map_err(|e| FileError::io("cannot open", dir, e))?;
    lock.lock()
        .map_err(|e| FileError::io("cannot lock", dir, e))?;
    if read_bytes(&copy, owner).is_ok_and(|b| b == wanted.as_bytes()) {
        return Ok(false);
    }
    fsutil::remove_durably(dir, &dir.join(TEMP_NAME))?;
    fsutil::replace_atomically(dir, &copy, TEMP_NAME, wanted.as_bytes())?;
    Ok(true)
}

/// The first line of a copy names the file it copies, so a copy is never enforced for
/// another config that shares the state dir.
fn header(source: &Path) -> String {
    format!(
        "# Last good copy of {}, kept by twofactor: logins enforce it while that file is broken.\n\
         # Do not edit. A login with a valid config replaces it.\n",
        source.display()
    )
}

fn read_bytes(path: &Path, owner: u32) -> Result<Vec<u8>, FileError> {
    let rules = FileRules {
        owner,
        forbidden_mode: 0o077,
        max_len: MAX_CONFIG_BYTES + 4096,
    };
    fsutil::read_checked(path, rules).map(|b| b.to_vec())
}

/// The copy at `copy` if it is of `source` and valid, with when it was saved.
fn read_copy(copy: &Path, source: &Path, owner: u32) -> Result<(Config, u64), String> {
    let bytes = read_bytes(copy, owner).map_err(|e| match e {
        FileError::NotFound(_) => format!("no copy at {}", copy.display()),
        e => e.to_string(),
    })?;
    let text =
        std::str::from_utf8(&bytes).map_err(|_| format!("{}: not valid UTF-8", copy.display()))?;
    let first = text.lines().next().unwrap_or_default();
    if !header(source).starts_with(first) || first.is_empty() {
        return Err(format!(
            "{} is a copy of another config, not of {}",
            copy.display(),
            source.display()
        ));
    }
    let config = Config::parse(copy, text).map_err(|e| format!("{e} (the copy is not valid)"))?;
    let saved = fs::symlink_metadata(copy)
        .map(|m| u64::try_from(m.mtime()).unwrap_or(0))
        .unwrap_or(0);
    Ok((config, saved))
}

/// Where a copy may be: the state dir the broken file still names, then the default.
fn copy_dirs(broken: Option<&str>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = broken
        .map(|t| readable_table(t, "storage", &["state_dir"]).table)
        .and_then(|t| {
            t.get("state_dir")
                .and_then(Value::as_str)
                .map(PathBuf::from)
        })
        .filter(|d| d.is_absolute())
    {
        dirs.push(dir);
    }
    let default = PathBuf::from(DEFAULT_STATE_DIR);
    if !dirs.contains(&default) {
        dirs.push(default);
    }
    dirs
}

/// What could be read of one table of a broken file.
struct Readable {
    table: Table,
    /// Keys that are there but could not be read.
    unreadable: BTreeSet<String>,
    /// The table was read with no unknown keys, in a file with no unknown tables, so a
    /// key that is absent was really removed (and not misspelt).
    clean: bool,
}

/// The keys of `[name]` in `text` that can still be read, even if the file as a whole
/// does not parse: then each statement of the table is parsed on its own.
fn readable_table(text: &str, name: &str, known: &[&str]) -> Readable {
    let unknown = |t: &Table| t.keys().any(|k| !known.contains(&k.as_str()));
    if let Ok(doc) = toml::from_str::<Table>(text) {
        let odd_tables = doc.keys().any(|k| !TABLES.contains(&k.as_str()));
        return match doc.get(name) {
            None => Readable {
                table: Table::new(),
                unreadable: BTreeSet::new(),
                clean: !odd_tables,
            },
            Some(Value::Table(t)) => Readable {
                clean: !odd_tables && !unknown(t),
                table: t.clone(),
                unreadable: BTreeSet::new(),
            },
            Some(_) => Readable {
                table: Table::new(),
                unreadable: known.iter().map(|k| k.to_string()).collect(),
                clean: false,
            },
        };
    }
    // The file does not parse. Split the table into statements (a line starting with
    // `key =` begins one; others continue it) and read each alone.
    let mut statements: Vec<String> = Vec::new();
    let mut inside = false;
    let mut seen = false;
    let mut clean = true;
    for line in text.lines() {
        if let Some(header) = table_header(line) {
            inside = header == name;
            seen |= inside;
            clean &= TABLES.contains(&header);
            continue;
        }
        if !inside {
            continue;
        }
        match (statement_key(line), statements.last_mut()) {
            (Some(_), _) | (None, None) => statements.push(line.to_string()),
            (None, Some(last)) => {
                last.push('\n');
                last.push_str(line);
            }
        }
    }
    let mut readable = Readable {
        table: Table::new(),
        unreadable: BTreeSet::new(),
        clean: clean && seen,
    };
    for statement in statements {
        match toml::from_str::<Table>(&statement) {
            Ok(t) => {
                readable.clean &= !unknown(&t);
                readable.table.extend(t);
            }
            Err(_) => match statement_key(&statement) {
                Some(k) if known.contains(&k) => {
                    readable.unreadable.insert(k.to_string());
                }
                // A comment or blank line fails harmlessly; anything else is unknown.
                _ if statement
                    .lines()
                    .all(|l| l.trim().is_empty() || l.trim().starts_with('#')) => {}
                _ => readable.clean = false,
            },
        }
    }
    readable
}

/// `name` if `line` is a `[name]` table header.
fn table_header(line: &str) -> Option<&str> {
    let inner = line.trim().strip_prefix('[')?;
    let (name, rest) = inner.split_once(']')?;
    let rest = rest.trim();
    (rest.is_empty() || rest.starts_with('#')).then(|| name.trim())
}

/// The key of a `key = value` line.
fn statement_key(line: &str) -> Option<&str> {
    let t = line.trim_start();
    let end = t
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(t.len());
    (end > 0 && t[end..].trim_start().starts_with('=')).then(|| &t[..end])
}

/// The broken file's `[enforce]` rules as far as they can be read; `last_good`'s value
/// stands in for each key that cannot be, and is reported.
fn readable_rules(broken: Option<&str>, last_good: &Policy) -> (Policy, Vec<String>) {
    let Some(text) = broken else {
        let all = ENFORCE_KEYS.iter().map(|k| k.to_string()).collect();
        return (last_good.clone(), all);
    };
    let read = readable_table(text, "enforce", &ENFORCE_KEYS);
    let mut unreadable = Vec::new();
    let mut names = |key: &str, fallback: &[String]| -> Vec<String> {
        let value = read
            .table
            .get(key)
            .filter(|_| !read.unreadable.contains(key));
        let list = value.and_then(Value::as_array).and_then(|a| {
            a.iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
        });
        match (value, list) {
            (Some(_), Some(list)) => list,
            (None, _) if read.clean && !read.unreadable.contains(key) => Vec::new(),
            _ => {
                unreadable.push(key.to_string());
                fallback.to_vec()
            }
        }
    };
    let mut policy = Policy {
        groups: names("groups", &last_good.groups),
        users: names("users", &last_good.users),
        exempt_users: names("exempt_users", &last_good.exempt_users),
        exempt_groups: names("exempt_groups", &last_good.exempt_groups),
        services: names("services", &last_good.services),
        ..Policy::default()
    };
    policy.all_users = match read.table.get("all_users").and_then(Value::as_bool) {
        Some(b) if !read.unreadable.contains("all_users") => b,
        None if read.clean && !read.table.contains_key("all_users") => false,
        _ => {
            unreadable.push("all_users".into());
            last_good.all_users
        }
    };
    unreadable.sort();
    (policy, unreadable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(exempt: &[&str], groups: &[&str]) -> Policy {
        Policy {
            exempt_users: exempt.iter().map(|s| s.to_string()).collect(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            ..Policy::default()
        }
    }

    #[test]
    fn a_typo_elsewhere_leaves_the_enforce_table_readable() {
        let last = policy(&["root", "mallory"], &["admins"]);
        // mallory was removed in the same edit as the typo in [lockout].
        let text = "[enforce]\ngroups = [\"admins\"]\nexempt_users = [\"root\"]\n[lockout]\nmax_failures = \"five\n";
        let (p, unreadable) = readable_rules(Some(text), &last);
        assert_eq!(p.exempt_users, ["root"]);
        assert_eq!(p.groups, ["admins"]);
        assert!(p.users.is_empty() && !p.all_users);
        assert!(unreadable.is_empty(), "{unreadable:?}");
    }

    #[test]
    fn a_removed_line_is_an_empty_list_but_a_misspelt_key_is_unreadable() {
        let last = policy(&["root"], &[]);
        let removed = "[enforce]\nall_users = true\n[totp]\ndigits = 5\n";
        let (p, unreadable) = readable_rules(Some(removed), &last);
        assert!(p.exempt_users.is_empty() && p.all_users);
        assert!(unreadable.is_empty());

        let misspelt = "[enforce]\nall_users = true\nexmpt_users = [\"root\"]\n";
        let (p, unreadable) = readable_rules(Some(misspelt), &last);
        assert_eq!(p.exempt_users, ["root"]);
        assert!(unreadable.contains(&"exempt_users".to_string()));

        let table_misspelt = "[enforse]\nexempt_users = []\n";
        let (p, _) = readable_rules(Some(table_misspelt), &last);
        assert_eq!(p.exempt_users, ["root"]);
    }

    #[test]
    fn statements_are_read_one_by_one_when_the_file_does_not_parse() {
        let last = policy(&["root"], &["old"]);
        let text = "version = 1\n[enforce]\n# admins only\ngroups = [\n  \"admins\",\n  \"ops\",\n]\nexempt_users = [\"root\"\nusers = [\"bob\"]\n[enroll]\ngrace_logins = \n";
        let (p, unreadable) = readable_rules(Some(text), &last);
        assert_eq!(p.groups, ["admins", "ops"]);
        assert_eq!(p.users, ["bob"]);
        // The broken statement stands in from the last good config.
        assert_eq!(p.exempt_users, ["root"]);
        assert_eq!(unreadable, ["exempt_users"]);
        // The unbroken keys the file no longer has are not known to be removed.
        assert!(!p.all_users);
    }

    #[test]
    fn an_unreadable_file_stands_in_whole() {
        let last = policy(&["root"], &["admins"]);
        let (p, unreadable) = readable_rules(None, &last);
        assert_eq!(p, last);
        assert_eq!(unreadable.len(), ENFORCE_KEYS.len());
    }

    #[test]
    fn the_copy_is_looked_for_where_the_broken_file_says() {
        let text = "[storage]\nstate_dir = \"/srv/tf\"\n[totp]\ndigits = \n";
        assert_eq!(
            copy_dirs(Some(text)),
            [PathBuf::from("/srv/tf"), PathBuf::from(DEFAULT_STATE_DIR)]
        );
        assert_eq!(copy_dirs(None), [PathBuf::from(DEFAULT_STATE_DIR)]);
        assert_eq!(
            copy_dirs(Some("[storage]\nstate_dir = \"relative\"\n")),
            [PathBuf::from(DEFAULT_STATE_DIR)]
        );
    }

    #[test]
    fn headers_and_keys() {
        assert_eq!(table_header("  [enforce]  # rules"), Some("enforce"));
        assert_eq!(table_header("\"a\","), None);
        assert_eq!(statement_key("exempt_users = []"), Some("exempt_users"));
        assert_eq!(statement_key("  \"alice\","), None);
        assert_eq!(statement_key("]"), None);
    }
}
