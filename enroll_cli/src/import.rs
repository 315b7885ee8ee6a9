//! `twofactor import-google-authenticator`: take users over from google-authenticator's
//! per-user files.

use std::fs;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::Mode;
use nix::unistd::{UnlinkatFlags, User, unlinkat};
use twofactor_core::backend::Imported;
use twofactor_core::backup_codes::HashCost;
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

/// Opens `path` from `/` one component at a time, each with O_NOFOLLOW: a symlink at any
/// level (`~/link/.google_authenticator`, a home that is a link) is refused, so the file
/// read is the one at that path and nowhere else.
fn open_without_symlinks(path: &Path) -> Result<(OwnedFd, fs::File), Error> {
    let err = |what: String| Error(format!("{}: {what}", path.display()));
    if !path.is_absolute() {
        return Err(err("not an absolute path".into()));
    }
    let parts: Vec<Component<'_>> = path.components().collect();
    let mut parent = None;
    let mut dir: OwnedFd = open(
        "/",
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| err(e.to_string()))?;
    for (i, part) in parts.iter().enumerate() {
        let name = match part {
            Component::RootDir => continue,
            Component::Normal(n) => *n,
            _ => return Err(err("must not contain . or ..".into())),
        };
        let last = i + 1 == parts.len();
        let flags = OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_NOCTTY
            | OFlag::O_NONBLOCK
            | if last {
                OFlag::O_RDONLY
            } else {
                OFlag::O_DIRECTORY | OFlag::O_RDONLY
            };
        let next = openat(&dir, name, flags, Mode::empty()).map_err(|e| match e {
            nix::errno::Errno::ELOOP => err(format!(
                "{} is a symbolic link; refusing to follow links anywhere in the path",
                name.to_string_lossy()
            )),
            nix::errno::Errno::ENOTDIR if !last => err(format!(
                "{} is a symbolic link or not a directory; refusing to follow links anywhere in the path",
                name.to_string_lossy()
            )),
            e => err(e.to_string()),
        })?;
        parent = Some(std::mem::replace(&mut dir, next));
    }
    let parent = parent.ok_or_else(|| err("names no file".into()))?;
    Ok((parent, fs::File::from(dir)))
}

/// Reads the file with no symlink anywhere in its path. It must be a regular file with
/// one link, owned by the user (not root: a root-owned file is not the user's secret),
/// and not writable by others, as google-authenticator itself insists.
/// Returns the open parent directory too, to remove the file through it.
fn read_file(path: &Path, owner: u32) -> Result<(OwnedFd, Zeroizing<String>), Error> {
    let err = |what: &str| Error(format!("{}: {what}", path.display()));
    let (parent, file) = open_without_symlinks(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(err("not a regular file"));
    }
    if meta.uid() != owner {
        return Err(err(&format!(
            "owned by uid {}, not by the user (uid {owner})",
            meta.uid()
        )));
    }
    if meta.nlink() != 1 {
        return Err(err(&format!(
            "has {} hard links; refusing a file that may be linked from elsewhere",
            meta.nlink()
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
    Ok((parent, text))
}

fn import_one(ctx: &Ctx, user: &str, path: &Path, keep: bool) -> Result<(), Error> {
    let user = &ctx.target(Some(user))?;
    let account = User::from_name(user)
        .map_err(|e| Error(format!("cannot look up {user}: {e}")))?
        .ok_or_else(|| Error(format!("no such user: {user}")))?;
    let (parent, text) = read_file(path, account.uid.as_raw())?;
    let parsed = GoogleAuthenticatorFile::parse(&text)
        .map_err(|e| Error(format!("{}: {e}", path.display())))?;
    let backend = ctx.admin_backend()?;
    let already = || {
        Error(format!(
            "{user} already has a twofactor authenticator; run 'twofactor reset {user}' first to replace it"
        ))
    };
    // Checked first so no scratch code is hashed for nothing; the backend checks again
    // under its lock.
    if backend.facts(user)?.is_enrolled() {
        return Err(already());
    }
    let enrollment = parsed.enrollment(&ctx.config, user, &host_name());
    let imported = Imported {
        enrollment: &enrollment,
        window: parsed.window,
        backup_codes: parsed.backup_codes(HashCost::DEFAULT, &mut OsRandom)?,
    };
    let codes = backend.import(user, imported)?.ok_or_else(already)?;
    ctx.audit(user, "import google-authenticator");
    let left_behind = parsed.scratch_codes.len().saturating_sub(codes);
    let codes = if left_behind == 0 {
        format!("{codes} scratch codes became backup codes")
    } else {
        // The fleet keeps only the server's own keyed hashes, of codes it was given.
        format!(
            "its {left_behind} scratch codes did not move to the fleet database; \
             make backup codes with 'twofactor backup-codes --user {user}'"
        )
    };
    if keep {
        println!(
            "Imported {user} from {} ({codes}); the file was kept.",
            path.display()
        );
    } else {
        // Through the directory that was opened, so the file removed is the one read.
        let name = path.file_name().unwrap_or_default();
        unlinkat(&parent, name, UnlinkatFlags::NoRemoveDir).map_err(|e| {
            Error(format!(
                "imported, but could not remove {}: {e}",
                path.display()
            ))
        })?;
        println!(
            "Imported {user} from {} ({codes}) and removed the file.",
            path.display()
        );
    }
    Ok(())
}
