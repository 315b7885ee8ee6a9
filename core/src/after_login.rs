//! `[after_login]`: a code typed at login also covers sudo (and the other services
//! listed) for a while in that login's session, like a sudo timestamp that covers every
//! terminal of the session.
//!
//! The session is the kernel's audit session (`/proc/self/sessionid`): `pam_loginuid`
//! starts a new one when it sets the login uid, every process of the login inherits it,
//! and nobody can pick an id or return to an old one. Two steps hand the verification
//! over, since sshd authenticates in a child process whose PAM data never reaches the
//! session:
//!
//! 1. authentication that verified a code leaves a pending record, named by a random
//!    ticket, in a root-only directory, and puts the ticket in the PAM environment
//!    (which sshd carries back);
//! 2. `open_session`, after `pam_loginuid`, takes the ticket out of the PAM environment
//!    (so it never reaches the session's environment), spends the pending record, and
//!    records the session, with the process that opened it as its leader.
//!
//! A record counts only while its leader (PID and start time) lives, for the uid it was
//! made for, for `minutes`.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::random::Random;

/// Where pending records and session records live: tmpfs, gone at boot.
pub const RUN_DIR: &str = "/run/twofactor";
/// The PAM environment variable that carries the ticket from authentication to session.
pub const TICKET_VAR: &str = "TWOFACTOR_VERIFIED";
/// A pending record older than this is never spent: a login takes seconds.
pub const PENDING_SECONDS: u64 = 600;
/// The kernel's "no session" id.
const NO_SESSION: u32 = u32::MAX;

/// A verification waiting for its session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The account's canonical name.
    pub user: String,
    /// Its uid.
    pub uid: u32,
    /// The service that verified the code (`sshd`, `login`).
    pub service: String,
    /// When (Unix seconds).
    pub verified_at: u64,
}

/// A session whose login verified a code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The audit session id.
    pub session: u32,
    /// The login uid.
    pub uid: u32,
    /// The account.
    pub user: String,
    /// The service that verified the code.
    pub service: String,
    /// When the code was verified (Unix seconds).
    pub verified_at: u64,
    /// The process that opened the session.
    pub leader_pid: u32,
    /// Its start time (clock ticks after boot, `/proc/PID/stat` field 22).
    pub leader_start: u64,
}

/// The records, in a directory only root can enter.
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
    /// The uid every directory and record must belong to: root in production.
    owner: u32,
}

/// The audit session id of process `pid` (`None` for "self"), unless it has none.
pub fn session_id(pid: Option<u32>) -> Option<u32> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/sessionid"),
        None => "/proc/self/sessionid".to_string(),
    };
    fs::read_to_string(path)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|id| *id != NO_SESSION)
}

/// The account `name` resolves to: its canonical name and uid.
pub fn account(name: &str) -> Option<(String, u32)> {
    let user = nix::unistd::User::from_name(name).ok()??;
    Some((user.name, user.uid.as_raw()))
}

/// The login uid of this process, unless unset.
pub fn login_uid() -> Option<u32> {
    fs::read_to_string("/proc/self/loginuid")
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|id| *id != NO_SESSION)
}

/// The start time of process `pid` (field 22 of `/proc/PID/stat`), if it runs.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count after the last.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl Records {
    /// The records under `dir` (`RUN_DIR` in production), made root-only if new.
    pub fn open(dir: &Path) -> io::Result<Self> {
        Self::open_owned_by(dir, 0)
    }

    /// As [`Self::open`], with `owner` in place of root (for unprivileged tests).
    pub fn open_owned_by(dir: &Path, owner: u32) -> io::Result<Self> {
        for d in [dir.to_path_buf(), dir.join("pending"), dir.join("sessions")] {
            match fs::DirBuilder::new().mode(0o700).create(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            let meta = fs::symlink_metadata(&d)?;
            // Anything else (a symlink, a directory others can write) is not ours.
            if !meta.is_dir() || meta.uid() != owner || meta.permissions().mode() & 0o077 != 0 {
                return Err(io::Error::other(format!(
                    "{} is not a root-only directory",
                    d.display()
                )));
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            owner,
        })
    }

    /// Leaves `pending` under a fresh ticket, which it returns (32 hex digits).
    pub fn leave(&self, pending: &Pending, rng: &mut dyn Random) -> io::Result<String> {
        let mut bytes = [0u8; 16];
        rng.fill(&mut bytes).map_err(io::Error::other)?;
        let ticket: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        write_new(&self.dir.join("pending").join(&ticket), pending)?;
        Ok(ticket)
    }

    /// Spends the pending record of `ticket`: it is gone whatever the answer. `None` for
    /// a malformed ticket, none by that name, or one older than [`PENDING_SECONDS`].
    pub fn spend(&self, ticket: &str, now: u64) -> Option<Pending> {
        if ticket.len() != 32 || !ticket.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let path = self.dir.join("pending").join(ticket);
        let pending: Option<Pending> = read_ours(&path, self.owner);
        let _ = fs::remove_file(&path);
        pending.filter(|p| p.verified_at <= now && now - p.verified_at <= PENDING_SECONDS)
    }

    fn session_path(&self, session: u32) -> PathBuf {
        self.dir.join("sessions").join(session.to_string())
    }

    /// The record of `session` while its leader lives.
    pub fn live(&self, session: u32) -> Option<Record> {
        let record: Record = read_ours(&self.session_path(session), self.owner)?;
        (record.session == session && start_time(record.leader_pid) == Some(record.leader_start))
            .then_some(record)
    }

    /// Records `record`, unless another live record holds its session id.
    pub fn record(&self, record: &Record) -> io::Result<bool> {
        if self
            .live(record.session)
            .is_some_and(|r| r.leader_pid != record.leader_pid)
        {
            return Ok(false);
        }
        let path = self.session_path(record.session);
        let _ = fs::remove_file(&path);
        write_new(&path, record)?;
        Ok(true)
    }

    /// Removes the record of `session` if `leader` opened it.
    pub fn close(&self, session: u32, leader: u32) {
        let path = self.session_path(session);
        if read_ours::<Record>(&path, self.owner).is_some_and(|r| r.leader_pid == leader) {
            let _ = fs::remove_file(path);
        }
    }
}

/// Writes `value` as JSON to a new file, root-only, never through a symlink.
fn write_new(path: &Path, value: &impl Serialize) -> io::Result<()> {
    let text = serde_json::to_vec(value).map_err(io::Error::other)?;
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)?;
    f.write_all(&text)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

/// Reads a record that root (`owner`) wrote: its own regular file, not group- or
/// world-writable.
fn read_ours<T: for<'de> Deserialize<'de>>(path: &Path, owner: u32) -> Option<T> {
    let meta = fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || meta.uid() != owner || meta.permissions().mode() & 0o022 != 0 {
        return None;
    }
    let text = fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

/// A session that a code typed at its login covers now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Covered {
    /// The audit session id.
    pub session: u32,
    /// Seconds since the code.
    pub age: u64,
}

/// Whether `record` covers a login of `uid` through `service` at `now`, for at most
/// `minutes`; the record's age in seconds when it does.
pub fn covers(record: &Record, uid: u32, minutes: u32, now: u64) -> Option<u64> {
    let age = now.checked_sub(record.verified_at)?;
    (record.uid == uid && age <= u64::from(minutes) * 60).then_some(age)
}

/// Whether this process's session is the one its stack just started: `pam_loginuid` ran
/// and the kernel gave a new id, unlike its parent's. In a container where the login uid
/// cannot be set every process shares one id, and nothing is recorded.
pub fn started_here() -> Option<u32> {
    let here = session_id(None)?;
    let parent = session_id(Some(nix::unistd::getppid().as_raw().try_into().ok()?));
    (parent != Some(here)).then_some(here)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRandom;
    use std::os::unix::fs::chown;

    const NOW: u64 = 1_800_000_000;

    fn me() -> u32 {
        nix::unistd::getuid().as_raw()
    }

    fn pending() -> Pending {
        Pending {
            user: "alice".into(),
            uid: 1000,
            service: "sshd".into(),
            verified_at: NOW,
        }
    }

    fn record_for(session: u32, pid: u32) -> Record {
        Record {
            session,
            uid: 1000,
            user: "alice".into(),
            service: "sshd".into(),
            verified_at: NOW,
            leader_pid: pid,
            leader_start: start_time(pid).unwrap(),
        }
    }

    #[test]
    fn a_ticket_is_spent_once_and_only_while_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let r = Records::open_owned_by(&dir.path().join("tf"), me()).unwrap();
        let mut rng = SeededRandom::new(1);
        let ticket = r.leave(&pending(), &mut rng).unwrap();
        assert_eq!(ticket.len(), 32);
        assert_eq!(r.spend(&ticket, NOW + 5), Some(pending()));
        assert_eq!(r.spend(&ticket, NOW + 5), None, "spent twice");
        let old = r.leave(&pending(), &mut rng).unwrap();
        assert_eq!(r.spend(&old, NOW + PENDING_SECONDS + 1), None, "stale");
        assert_eq!(r.spend(&old, NOW), None, "a stale ticket is gone too");
        // Not a ticket: never a path.
        for bad in ["../../etc/passwd", "", "zz", &"0".repeat(33)] {
            assert_eq!(r.spend(bad, NOW), None, "{bad}");
        }
    }

    #[test]
    fn a_record_lives_with_its_leader_and_only_its_leader_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let r = Records::open_owned_by(&dir.path().join("tf"), me()).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let leader = child.id();
        assert!(r.record(&record_for(77, leader)).unwrap());
        assert_eq!(r.live(77).map(|x| x.leader_pid), Some(leader));
        // Another live process cannot take the id over.
        assert!(!r.record(&record_for(77, std::process::id())).unwrap());
        // su's or sudo -i's close (another process) leaves it.
        r.close(77, std::process::id());
        assert!(r.live(77).is_some());
        // The leader killed without close_session: the record no longer counts.
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(r.live(77), None);
        // Its own close removes it.
        assert!(r.record(&record_for(78, std::process::id())).unwrap());
        r.close(78, std::process::id());
        assert_eq!(r.live(78), None);
    }

    #[test]
    fn a_record_counts_for_its_uid_within_the_minutes() {
        let rec = record_for(5, std::process::id());
        assert_eq!(covers(&rec, 1000, 15, NOW + 60), Some(60));
        assert_eq!(covers(&rec, 1000, 15, NOW + 15 * 60), Some(900));
        assert_eq!(covers(&rec, 1000, 15, NOW + 15 * 60 + 1), None, "too old");
        assert_eq!(
            covers(&rec, 1001, 15, NOW + 60),
            None,
            "another account (su)"
        );
        assert_eq!(covers(&rec, 1000, 15, NOW - 1), None, "from the future");
    }

    #[test]
    fn records_another_user_could_write_are_ignored_and_open_directories_refused() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("tf");
        let r = Records::open_owned_by(&base, me()).unwrap();
        assert!(r.record(&record_for(9, std::process::id())).unwrap());
        let path = base.join("sessions/9");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(r.live(9), None, "a world-writable record");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(r.live(9).is_some());
        if me() == 0 {
            chown(&path, Some(65534), None).unwrap();
            assert_eq!(r.live(9), None, "a record another user owns");
        }
        fs::set_permissions(base.join("sessions"), fs::Permissions::from_mode(0o755)).unwrap();
        assert!(Records::open_owned_by(&base, me()).is_err());
    }

    #[test]
    fn a_process_that_did_not_start_its_session_records_nothing() {
        // This test inherits its session from the test runner, as su and sudo do.
        assert_eq!(started_here(), None);
        assert!(start_time(std::process::id()).is_some());
        assert_eq!(start_time(u32::MAX), None);
    }
}
