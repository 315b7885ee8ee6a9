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
//! made for, for `minutes`, and only for processes that descend from the leader by the
//! kernel's parent chain. A server that a login started and that left it (tmux, screen)
//! keeps the session id but not the ancestry, so its windows ask for the code.
//!
//! A ticket is bound to the processes that may open the session: the authenticating
//! process and its parent (sshd's `[priv]` monitor is the parent of its PAM child; `login`
//! authenticates and opens the session in one process). Any other process that presents
//! it, such as a later login whose user copied the ticket through `~/.pam_environment`,
//! spends nothing. Only services that start logins (`[after_login] from`) leave tickets.

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
/// At most this many pending records per uid: a flood of verified codes through a
/// service that never opens a session cannot fill `/run`. The oldest go first.
pub const PENDING_PER_UID: usize = 16;
/// At most this many live session records per uid.
pub const SESSIONS_PER_UID: usize = 64;
/// How far up the parent chain a descent is looked for: deeper is never a login's.
const MAX_ANCESTRY: usize = 64;

/// A process, by PID and start time, so that a reused PID is never mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proc {
    /// The PID.
    pub pid: u32,
    /// Its start time (clock ticks after boot, `/proc/PID/stat` field 22).
    pub start: u64,
}

impl Proc {
    /// Process `pid`, if it runs.
    pub fn of(pid: u32) -> Option<Self> {
        Some(Self {
            pid,
            start: start_time(pid)?,
        })
    }

    /// This process.
    pub fn me() -> Option<Self> {
        Self::of(std::process::id())
    }

    /// Whether it still runs (the same process, not a reused PID).
    pub fn lives(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

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
    /// The processes that may spend it: the one that authenticated and its parent.
    /// A record without them (an older twofactor's) is never spent.
    #[serde(default)]
    pub openers: Vec<Proc>,
}

impl Pending {
    /// The processes that may open the session this verification is for: this process,
    /// and its parent.
    pub fn openers_here() -> Vec<Proc> {
        let parent = u32::try_from(nix::unistd::getppid().as_raw()).ok();
        [Proc::me(), parent.and_then(Proc::of)]
            .into_iter()
            .flatten()
            .collect()
    }
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

/// Fields 3 onward of `/proc/PID/stat`, if the process runs.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count after the last.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// The start time of process `pid` (field 22 of `/proc/PID/stat`), if it runs.
pub fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// The parent of process `pid` (field 4 of `/proc/PID/stat`), if it runs.
pub fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// Whether process `pid` is `ancestor` or descends from it by the kernel's parent chain.
/// A process that was re-parented (a daemon that double-forked away from the login, as
/// tmux and screen servers do) no longer descends from it.
pub fn descends_from(pid: u32, ancestor: &Proc) -> bool {
    if !ancestor.lives() {
        return false;
    }
    let mut at = pid;
    for _ in 0..MAX_ANCESTRY {
        if at == ancestor.pid {
            return true;
        }
        match parent_of(at) {
            Some(parent) if parent > 1 => at = parent,
            _ => return false,
        }
    }
    false
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

    /// Leaves `pending` under a fresh ticket, which it returns (32 hex digits). Tidies
    /// first: pending records past their lifetime and session records whose leader is
    /// gone are removed, and the uid's oldest pending records beyond
    /// [`PENDING_PER_UID`] - 1.
    pub fn leave(&self, pending: &Pending, rng: &mut dyn Random) -> io::Result<String> {
        self.tidy(pending.uid, pending.verified_at);
        let mut bytes = [0u8; 16];
        rng.fill(&mut bytes).map_err(io::Error::other)?;
        let ticket: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        write_new(&self.dir.join("pending").join(&ticket), pending)?;
        Ok(ticket)
    }

    /// Removes what can never count again, and makes room for one more pending record
    /// of `uid`. Anything unreadable or not root's in these directories goes too: only
    /// root can write here, so it is debris.
    fn tidy(&self, uid: u32, now: u64) {
        let mut mine: Vec<(u64, PathBuf)> = Vec::new();
        for path in entries(&self.dir.join("pending")) {
            if path.extension().is_some_and(|e| e == "tmp") {
                // Another login's write in progress, unless it is older than any login.
                let stale = fs::symlink_metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age.as_secs() > PENDING_SECONDS);
                if stale {
                    let _ = fs::remove_file(&path);
                }
                continue;
            }
            match read_ours::<Pending>(&path, self.owner) {
                Some(p) if p.verified_at <= now && now - p.verified_at <= PENDING_SECONDS => {
                    if p.uid == uid {
                        mine.push((p.verified_at, path));
                    }
                }
                _ => {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        mine.sort();
        let excess = (mine.len() + 1).saturating_sub(PENDING_PER_UID);
        for (_, path) in mine.into_iter().take(excess) {
            let _ = fs::remove_file(path);
        }
        for path in entries(&self.dir.join("sessions")) {
            let live = read_ours::<Record>(&path, self.owner).is_some_and(|r| r.leader().lives());
            if !live {
                let _ = fs::remove_file(&path);
            }
        }
    }

    /// Spends the pending record of `ticket` for `caller`, the process opening the
    /// session: it is gone whatever the answer. `None` for a malformed ticket, none by
    /// that name, one older than [`PENDING_SECONDS`], or one left for other processes.
    pub fn spend(&self, ticket: &str, now: u64, caller: &Proc) -> Option<Pending> {
        if ticket.len() != 32 || !ticket.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let path = self.dir.join("pending").join(ticket);
        let pending: Option<Pending> = read_ours(&path, self.owner);
        let _ = fs::remove_file(&path);
        pending.filter(|p| {
            p.verified_at <= now
                && now - p.verified_at <= PENDING_SECONDS
                && p.openers.contains(caller)
        })
    }

    fn session_path(&self, session: u32) -> PathBuf {
        self.dir.join("sessions").join(session.to_string())
    }

    /// The record of `session` while its leader lives.
    pub fn live(&self, session: u32) -> Option<Record> {
        let record: Record = read_ours(&self.session_path(session), self.owner)?;
        (record.session == session && record.leader().lives()).then_some(record)
    }

    /// Records `record`, unless another live record holds its session id or its uid
    /// has [`SESSIONS_PER_UID`] live records already.
    pub fn record(&self, record: &Record) -> io::Result<bool> {
        if self
            .live(record.session)
            .is_some_and(|r| r.leader_pid != record.leader_pid)
        {
            return Ok(false);
        }
        let of_uid = entries(&self.dir.join("sessions"))
            .filter_map(|p| read_ours::<Record>(&p, self.owner))
            .filter(|r| r.uid == record.uid && r.session != record.session && r.leader().lives())
            .count();
        if of_uid >= SESSIONS_PER_UID {
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

impl Record {
    /// The process that opened the session.
    pub fn leader(&self) -> Proc {
        Proc {
            pid: self.leader_pid,
            start: self.leader_start,
        }
    }
}

/// The files in `dir` (none if it cannot be read).
fn entries(dir: &Path) -> impl Iterator<Item = PathBuf> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
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
            openers: Pending::openers_here(),
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
        let me = Proc::me().unwrap();
        let ticket = r.leave(&pending(), &mut rng).unwrap();
        assert_eq!(ticket.len(), 32);
        assert_eq!(r.spend(&ticket, NOW + 5, &me), Some(pending()));
        assert_eq!(r.spend(&ticket, NOW + 5, &me), None, "spent twice");
        let old = r.leave(&pending(), &mut rng).unwrap();
        assert_eq!(r.spend(&old, NOW + PENDING_SECONDS + 1, &me), None, "stale");
        assert_eq!(r.spend(&old, NOW, &me), None, "a stale ticket is gone too");
        // Not a ticket: never a path.
        for bad in ["../../etc/passwd", "", "zz", &"0".repeat(33)] {
            assert_eq!(r.spend(bad, NOW, &me), None, "{bad}");
        }
    }

    #[test]
    fn a_ticket_is_spent_only_by_the_processes_it_was_left_for() {
        let dir = tempfile::tempdir().unwrap();
        let r = Records::open_owned_by(&dir.path().join("tf"), me()).unwrap();
        let mut rng = SeededRandom::new(2);
        // The parent (sshd's monitor, for its PAM child) may spend it.
        let parent = Proc::of(u32::try_from(nix::unistd::getppid().as_raw()).unwrap()).unwrap();
        let ticket = r.leave(&pending(), &mut rng).unwrap();
        assert!(r.spend(&ticket, NOW, &parent).is_some());
        // Another process (a later login that planted a copied ticket) may not, and the
        // ticket is gone after its try.
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let stranger = Proc::of(other.id()).unwrap();
        let ticket = r.leave(&pending(), &mut rng).unwrap();
        assert_eq!(r.spend(&ticket, NOW, &stranger), None, "another process");
        assert_eq!(
            r.spend(&ticket, NOW, &Proc::me().unwrap()),
            None,
            "tried once"
        );
        // A PID reused by a new process is not the process the ticket was left for.
        let reused = Proc {
            start: Proc::me().unwrap().start + 1,
            ..Proc::me().unwrap()
        };
        let ticket = r.leave(&pending(), &mut rng).unwrap();
        assert_eq!(r.spend(&ticket, NOW, &reused), None, "a reused PID");
        // A record from before tickets were bound names no opener: never spent.
        let unbound = Pending {
            openers: Vec::new(),
            ..pending()
        };
        let ticket = r.leave(&unbound, &mut rng).unwrap();
        assert_eq!(r.spend(&ticket, NOW, &Proc::me().unwrap()), None, "unbound");
        other.kill().unwrap();
        other.wait().unwrap();
    }

    #[test]
    fn a_thousand_unspent_tickets_leave_a_bounded_pile() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("tf");
        let r = Records::open_owned_by(&base, me()).unwrap();
        let mut rng = SeededRandom::new(3);
        let count = |sub: &str| fs::read_dir(base.join(sub)).unwrap().count();
        // Another user's fresh ticket, and one past its lifetime.
        let bob = Pending {
            uid: 1001,
            user: "bob".into(),
            ..pending()
        };
        let stale = Pending {
            verified_at: NOW - PENDING_SECONDS - 1,
            ..bob.clone()
        };
        r.leave(&stale, &mut rng).unwrap();
        let bobs = r.leave(&bob, &mut rng).unwrap();
        // 1,000 verified codes through a service that never opens a session.
        let mut last = String::new();
        for i in 0..1000 {
            let p = Pending {
                verified_at: NOW + i / 100,
                ..pending()
            };
            last = r.leave(&p, &mut rng).unwrap();
        }
        assert_eq!(
            count("pending"),
            PENDING_PER_UID + 1,
            "alice's cap and bob's one"
        );
        // The newest is kept, and so is another user's fresh ticket.
        let me = Proc::me().unwrap();
        assert!(r.spend(&last, NOW + 10, &me).is_some());
        assert!(r.spend(&bobs, NOW + 10, &me).is_some());
        // A session record whose leader died without close_session goes at the next leave.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert!(r.record(&record_for(41, child.id())).unwrap());
        assert!(r.record(&record_for(42, std::process::id())).unwrap());
        child.kill().unwrap();
        child.wait().unwrap();
        r.leave(&pending(), &mut rng).unwrap();
        assert!(!base.join("sessions/41").exists(), "a dead leader's record");
        assert!(base.join("sessions/42").exists(), "a live leader's record");
    }

    #[test]
    fn only_descendants_of_the_leader_are_covered() {
        let me = Proc::me().unwrap();
        assert!(descends_from(std::process::id(), &me));
        // A child of ours descends from us; we do not descend from it.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert!(descends_from(child.id(), &me));
        let it = Proc::of(child.id()).unwrap();
        assert!(!descends_from(std::process::id(), &it));
        // A process that left its parent (as a tmux server does) descends from nobody
        // here: sh starts sleep in the background and exits, so init adopts it.
        let out = std::process::Command::new("sh")
            .args(["-c", "sleep 30 >/dev/null 2>&1 & echo $!"])
            .output()
            .unwrap();
        let orphan: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert!(!descends_from(orphan, &me), "a re-parented process");
        let _ = std::process::Command::new("kill")
            .arg(orphan.to_string())
            .status();
        // A dead leader covers nobody.
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!descends_from(std::process::id(), &it));
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
