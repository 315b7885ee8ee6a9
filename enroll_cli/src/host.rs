//! What the command reads about this machine beyond its own files: whether the clock is
//! synchronised, and which accounts the name service lists.

use std::ffi::CStr;

use nix::libc;

/// Whether the kernel considers the clock synchronised (NTP), from adjtimex(2) in
/// read-only mode; `None` if it cannot be asked.
pub fn clock_synchronised() -> Option<bool> {
    // SAFETY: timex is plain C data; all-zero (modes = 0) asks adjtimex to change nothing.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: `tx` is a valid, writable timex for the duration of the call.
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        return None;
    }
    Some(state != libc::TIME_ERROR && tx.status & libc::STA_UNSYNC == 0)
}

/// Every account the name service lists (getpwent): name and primary gid. Directories
/// that do not enumerate (SSSD's default, many LDAP setups) list none of theirs.
pub fn list_accounts() -> Vec<(String, u32)> {
    let mut accounts = Vec::new();
    // SAFETY: the command is single-threaded, so nothing else uses the passwd cursor
    // between setpwent and endpwent; each entry is copied before the next call.
    unsafe { libc::setpwent() };
    loop {
        // SAFETY: as above; a null pointer ends the list.
        let entry = unsafe { libc::getpwent() };
        if entry.is_null() {
            break;
        }
        // SAFETY: getpwent returned a valid entry, alive until the next call.
        let entry = unsafe { &*entry };
        // SAFETY: pw_name of a valid entry is a NUL-terminated string.
        let name = unsafe { CStr::from_ptr(entry.pw_name) };
        let (name, gid) = (name.to_string_lossy().into_owned(), entry.pw_gid);
        accounts.push((name, gid));
    }
    // SAFETY: closes the cursor opened above.
    unsafe { libc::endpwent() };
    accounts
}

/// The name service sources for passwd and group in /etc/nsswitch.conf that are not
/// local files (`sss`, `ldap`, `winbind`, ...): accounts there may not be listed.
pub fn remote_account_sources() -> Vec<String> {
    remote_sources(&std::fs::read_to_string("/etc/nsswitch.conf").unwrap_or_default())
}

fn remote_sources(text: &str) -> Vec<String> {
    let mut sources: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let (db, rest) = l.split_once(':')?;
            matches!(db.trim(), "passwd" | "group").then_some(rest)
        })
        .flat_map(|rest| {
            rest.split_whitespace()
                .filter(|s| !s.starts_with('['))
                .filter(|s| !matches!(*s, "files" | "compat" | "systemd" | "altfiles"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    sources.sort();
    sources.dedup();
    sources
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_sources_are_those_beyond_local_files() {
        let debian =
            "passwd:         files systemd\ngroup:          files systemd\nhosts: files dns\n";
        assert!(remote_sources(debian).is_empty());
        let sssd = "# comment\npasswd: files sss [NOTFOUND=return] ldap\ngroup: files sss\nnetgroup: nis\n";
        assert_eq!(remote_sources(sssd), ["ldap", "sss"]);
    }
}
