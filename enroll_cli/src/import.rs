//! `twofactor import-google-authenticator`: take users over from google-authenticator's
//! per-user files.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::libc;
use nix::unistd::User;
use twofactor_core::backup_codes::HashCost;
use twofactor_core::clock::{Clock, SystemClock};
use twofactor_core::enroll::host_name;
use twofactor_core::import::GoogleAuthenticatorFile;
use twofactor_core::random::OsRandom;
use zeroize::Zeroizing;

use crate::cli::ImportArgs;
use crate::context::{Ctx, Error};

const FILE_NAME: &str = ".google_authenticator";
const MAX_BYTES: u64 = 64 * 1024;

pub fn run(ctx: &Ctx, args: &ImportArgs) -> Result<(), Error> {
    ctx.require_root("import-google-authenticator")?;
    if !args.all {
        let user = args.user.as_deref().ok_or("name a user, or use --all")?;
        let path = match &args.file {
            Some(p) => p.clone(),
            None => home_of(user)?.join(FILE_NAME),
        };
        return import_one(ctx, user, &path, args.keep);
    }
    let mut failed = 0;
    let mut done = 0;
    for (user, home) in local_users()? {
        let path = home.join(FILE_NAME);
        if fs::symlink_metadata(&path).is_err() {
            continue;
        }
        match import_one(ctx, &user, &path, args.keep) {
            Ok(()) => done += 1,
            Err(e) => {
                eprintln!("twofactor: {user}: {e}");
                failed += 1;
            }
        }
    }
    println!(
        "Imported {done} user{}; {failed} failed.",
        if done == 1 { "" } else { "s" }
    );
    if failed > 0 {
        Err(Error(format!("{failed} import(s) failed; see above")))
    } else {
        Ok(())
    }
}

fn home_of(user: &str) -> Result<PathBuf, Error> {
    let u = User::from_name(user)
        .map_err(|e| Error(format!("cannot look up {user}: {e}")))?
        .ok_or_else(|| Error(format!("no such user: {user}")))?;
    Ok(u.dir)
}

/// Local accounts with a home directory, from /etc/passwd (NSS-only accounts cannot be
/// listed reliably; import them by name).
fn local_users() -> Result<Vec<(String, PathBuf)>, Error> {
    let text = fs::read_to_string("/etc/passwd")?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 7 && !f[5].is_empty()).then(|| (f[0].to_string(), PathBuf::from(f[5])))
        })
        .collect())
}

/// Reads the file without following a symlink; it must belong to the user (or root) and
/// not be writable by others, as google-authenticator itself insists.
fn read_file(path: &Path, owner: u32) -> Result<Zeroizing<String>, Error> {
    let err = |what: &str| Error(format!("{}: {what}", path.display()));
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| err(&e.to_string()))?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(err("not a regular file"));
    }
    if meta.uid() != owner && meta.uid() != 0 {
        return Err(err(&format!(
            "owned by uid {}, not by the user",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(err(
            "writable by group or others; refusing a secret anyone could have changed",
        ));
    }
    let mut text = Zeroizing::new(String::new());
    file.take(MAX_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| err(&e.to_string()))?;
    Ok(text)
}

fn import_one(ctx: &Ctx, user: &str, path: &Path, keep: bool) -> Result<(), Error> {
    let account = User::from_name(user)
        .map_err(|e| Error(format!("cannot look up {user}: {e}")))?
        .ok_or_else(|| Error(format!("no such user: {user}")))?;
    let text = read_file(path, account.uid.as_raw())?;
    let parsed = GoogleAuthenticatorFile::parse(&text)
        .map_err(|e| Error(format!("{}: {e}", path.display())))?;
    let store = ctx.store()?;
    let now = SystemClock.now();
    let host = host_name();
    let codes = store.update(user, |s| -> Result<usize, Error> {
        if s.is_enrolled() {
            return Err(Error(format!("{user} already has a twofactor authenticator; run 'twofactor reset {user}' first to replace it")));
        }
        Ok(parsed.install(s, &ctx.config, user, &host, now, HashCost::DEFAULT, &mut OsRandom)?)
    })?;
    ctx.audit(user, "import google-authenticator");
    if keep {
        println!(
            "Imported {user} from {} ({codes} scratch codes became backup codes); the file was kept.",
            path.display()
        );
    } else {
        fs::remove_file(path).map_err(|e| {
            Error(format!(
                "imported, but could not remove {}: {e}",
                path.display()
            ))
        })?;
        println!(
            "Imported {user} from {} ({codes} scratch codes became backup codes) and removed the file.",
            path.display()
        );
    }
    Ok(())
}
