//! Opening root-owned files without following symlinks, and replacing them atomically.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::libc;
use thiserror::Error;
use zeroize::Zeroizing;

/// What a file must look like before twofactor trusts its contents.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileRules {
    /// The only uid allowed to own the file (root in production).
    pub owner: u32,
    /// Permission bits that must all be clear.
    pub forbidden_mode: u32,
    /// Largest accepted size in bytes.
    pub max_len: u64,
}

/// Why a file was refused.
#[derive(Debug, Error)]
pub enum FileError {
    /// The file does not exist.
    #[error("{} does not exist", .0.display())]
    NotFound(PathBuf),
    /// The path is relative, so its meaning depends on the working directory.
    #[error("{} is not an absolute path", .0.display())]
    NotAbsolute(PathBuf),
    /// The last path component is a symbolic link.
    #[error("{} is a symbolic link; refusing to follow it", .0.display())]
    Symlink(PathBuf),
    /// A directory, device, FIFO or socket where a regular file was expected.
    #[error("{} is not a regular file", .0.display())]
    NotRegular(PathBuf),
    /// Owned by someone other than the expected uid.
    #[error("{} is owned by uid {found}, expected uid {expected}", .path.display())]
    WrongOwner {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    /// Permission bits that would let others read or change it.
    #[error("{} has mode {mode:04o}; {}", .path.display(), mode_advice(.path, *.forbidden))]
    BadMode {
        path: PathBuf,
        mode: u32,
        forbidden: u32,
    },
    /// More than one hard link: someone could have linked it from elsewhere.
    #[error("{} has {links} hard links; expected 1", .path.display())]
    HardLinked { path: PathBuf, links: u64 },
    /// Bigger than any file twofactor writes.
    #[error("{} is larger than {max} bytes", .path.display())]
    TooLarge { path: PathBuf, max: u64 },
    /// Any other I/O failure, with the operation that failed.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// What a mode must not allow, and the chmod that fixes it.
fn mode_advice(path: &Path, forbidden: u32) -> String {
    let p = path.display();
    match forbidden {
        0o022 => format!("it must not be group- or world-writable: run chmod go-w {p}"),
        0o077 => format!("only its owner may read or change it: run chmod go-rwx {p}"),
        other => {
            format!("it must not have any of the mode bits {other:04o}: run chmod to clear them")
        }
    }
}

impl FileError {
    pub(crate) fn io(what: &'static str, path: &Path, source: io::Error) -> Self {
        Self::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Opens `path` for reading under `rules` and returns its contents in a buffer that is
/// wiped when dropped.
pub(crate) fn read_checked(path: &Path, rules: FileRules) -> Result<Zeroizing<Vec<u8>>, FileError> {
    if !path.is_absolute() {
        return Err(FileError::NotAbsolute(path.to_path_buf()));
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => FileError::NotFound(path.to_path_buf()),
            Some(libc::ELOOP) => FileError::Symlink(path.to_path_buf()),
            _ => FileError::io("cannot open", path, e),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| FileError::io("cannot stat", path, e))?;
    check_metadata(path, &meta, rules)?;
    let mut buf = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    file.take(rules.max_len + 1)
        .read_to_end(&mut buf)
        .map_err(|e| FileError::io("cannot read", path, e))?;
    if buf.len() as u64 > rules.max_len {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            max: rules.max_len,
        });
    }
    Ok(buf)
}

fn check_metadata(path: &Path, meta: &fs::Metadata, rules: FileRules) -> Result<(), FileError> {
    let path = path.to_path_buf();
    if !meta.file_type().is_file() {
        return Err(FileError::NotRegular(path));
    }
    if meta.uid() != rules.owner {
        return Err(FileError::WrongOwner {
            path,
            found: meta.uid(),
            expected: rules.owner,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & rules.forbidden_mode != 0 {
        return Err(FileError::BadMode {
            path,
            mode,
            forbidden: rules.forbidden_mode,
        });
    }
    if meta.nlink() != 1 {
        return Err(FileError::HardLinked {
            path,
            links: meta.nlink(),
        });
    }
    if meta.len() > rules.max_len {
        return Err(FileError::TooLarge {
            path,
            max: rules.max_len,
        });
    }
    Ok(())
}

/// Checks that `dir` is a real directory owned by `owner` with mode 0700.
pub(crate) fn check_private_dir(dir: &Path, owner: u32) -> Result<(), FileError> {
    let meta = fs::symlink_metadata(dir).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => FileError::NotFound(dir.to_path_buf()),
        _ => FileError::io("cannot stat", dir, e),
    })?;
    if meta.file_type().is_symlink() {
        return Err(FileError::Symlink(dir.to_path_buf()));
    }
    if !meta.is_dir() {
        return Err(FileError::io(
            "expected a directory at",
            dir,
            io::Error::from(io::ErrorKind::NotADirectory),
        ));
    }
    if meta.uid() != owner {
        return Err(FileError::WrongOwner {
            path: dir.to_path_buf(),
            found: meta.uid(),
            expected: owner,
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(FileError::BadMode {
            path: dir.to_path_buf(),
            mode,
            forbidden: 0o077,
        });
    }
    Ok(())
}

/// Opens (creating if needed) a lock file that is never followed through a symlink.
pub(crate) fn open_lock_file(path: &Path, owner: u32) -> Result<File, FileError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => FileError::Symlink(path.to_path_buf()),
            _ => FileError::io("cannot open lock", path, e),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| FileError::io("cannot stat", path, e))?;
    check_metadata(
        path,
        &meta,
        FileRules {
            owner,
            forbidden_mode: 0o077,
            max_len: 0,
        },
    )?;
    Ok(file)
}

/// Replaces `target` with `contents`: a temp file in the same directory, fsync, rename,
/// then fsync of the directory, so a crash leaves the old file or the new one.
pub(crate) fn replace_atomically(
    dir: &Path,
    target: &Path,
    temp_name: &str,
    contents: &[u8],
) -> Result<(), FileError> {
    replace_atomically_with_mode(dir, target, temp_name, contents, 0o600)
}

/// [`replace_atomically`], leaving the file with `mode` (the umask does not apply).
pub(crate) fn replace_atomically_with_mode(
    dir: &Path,
    target: &Path,
    temp_name: &str,
    contents: &[u8],
    mode: u32,
) -> Result<(), FileError> {
    let temp = dir.join(temp_name);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(&temp)
        .map_err(|e| FileError::io("cannot create", &temp, e))?;
    let result = file
        .set_permissions(fs::Permissions::from_mode(mode))
        .and_then(|()| file.write_all(contents))
        .map_err(|e| FileError::io("cannot write", &temp, e))
        .and_then(|()| {
            file.sync_all()
                .map_err(|e| FileError::io("cannot fsync", &temp, e))
        })
        .and_then(|()| {
            fs::rename(&temp, target).map_err(|e| FileError::io("cannot rename over", target, e))
        });
    if result.is_err() {
        // Only the temp file this call created is removed; the target is untouched.
        let _ = fs::remove_file(&temp);
    }
    result?;
    sync_dir(dir)
}

/// Removes `target` if it exists and makes the removal durable.
pub(crate) fn remove_durably(dir: &Path, target: &Path) -> Result<(), FileError> {
    match fs::remove_file(target) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FileError::io("cannot remove", target, e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), FileError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FileError::io("cannot fsync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn rules() -> FileRules {
        FileRules {
            owner: nix::unistd::geteuid().as_raw(),
            forbidden_mode: 0o077,
            max_len: 64,
        }
    }

    fn write(path: &Path, body: &[u8], mode: u32) {
        fs::write(path, body).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn reads_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write(&path, b"hello", 0o600);
        assert_eq!(&read_checked(&path, rules()).unwrap()[..], b"hello");
    }

    #[test]
    fn refuses_symlinks_modes_links_size_owner_and_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        write(&real, b"x", 0o600);
        let link = dir.path().join("link");
        symlink(&real, &link).unwrap();
        assert!(matches!(
            read_checked(&link, rules()),
            Err(FileError::Symlink(_))
        ));

        let open = dir.path().join("open");
        write(&open, b"x", 0o640);
        let err = read_checked(&open, rules()).unwrap_err();
        assert!(matches!(err, FileError::BadMode { .. }));
        assert!(
            err.to_string().ends_with(&format!(
                "has mode 0640; only its owner may read or change it: run chmod go-rwx {}",
                open.display()
            )),
            "{err}"
        );
        let writable = FileRules {
            forbidden_mode: 0o022,
            ..rules()
        };
        write(&open, b"x", 0o664);
        let err = read_checked(&open, writable).unwrap_err();
        assert!(
            err.to_string()
                .contains("must not be group- or world-writable: run chmod go-w"),
            "{err}"
        );

        let hard = dir.path().join("hard");
        fs::hard_link(&real, &hard).unwrap();
        assert!(matches!(
            read_checked(&hard, rules()),
            Err(FileError::HardLinked { .. })
        ));
        fs::remove_file(&hard).unwrap();

        let big = dir.path().join("big");
        write(&big, &[b'a'; 65], 0o600);
        assert!(matches!(
            read_checked(&big, rules()),
            Err(FileError::TooLarge { .. })
        ));

        let other = FileRules {
            owner: 4242,
            ..rules()
        };
        assert!(matches!(
            read_checked(&real, other),
            Err(FileError::WrongOwner { .. })
        ));

        assert!(matches!(
            read_checked(Path::new("real"), rules()),
            Err(FileError::NotAbsolute(_))
        ));
        assert!(matches!(
            read_checked(dir.path(), rules()),
            Err(FileError::NotRegular(_))
        ));
        assert!(matches!(
            read_checked(&dir.path().join("missing"), rules()),
            Err(FileError::NotFound(_))
        ));
    }

    #[test]
    fn replace_leaves_no_temp_and_new_contents() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        write(&target, b"old", 0o600);
        replace_atomically(dir.path(), &target, ".t.tmp", b"new").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(
            fs::metadata(&target).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn failed_replace_keeps_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        write(&target, b"old", 0o600);
        // A leftover temp file with the same name makes create_new fail before any change.
        write(&dir.path().join(".t.tmp"), b"junk", 0o600);
        assert!(replace_atomically(dir.path(), &target, ".t.tmp", b"new").is_err());
        assert_eq!(fs::read(&target).unwrap(), b"old");
        assert_eq!(fs::read(dir.path().join(".t.tmp")).unwrap(), b"junk");
    }
}
