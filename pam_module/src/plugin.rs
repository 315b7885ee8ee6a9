//! Loading the fleet client (`fleet_plugin/`) when the config's backend is PostgreSQL.
//! It brings TLS and the PostgreSQL client, with libssl and libcrypto; the module itself
//! links neither, so a login on the file store never loads them.
//!
//! The plugin is looked for beside the module: `../twofactor/fleet.so` from the module's
//! directory as the packages install it (`/usr/lib/x86_64-linux-gnu/twofactor/fleet.so`
//! for `/usr/lib/x86_64-linux-gnu/security/pam_twofactor.so`), else
//! `libtwofactor_fleet.so` in the same directory (a build tree). It runs in every login
//! process, so, as sudo's plugin loader and OpenSSH's `safe_path` do, it is opened once
//! without following a symlink (`O_PATH|O_NOFOLLOW`), the open file must be a regular
//! file owned by root or by the module's owner and writable by nobody else, every
//! directory from it up to `/` must be too (a root-owned sticky directory such as
//! `/tmp` may be writable by all: nobody else can rename what root put there), and the
//! loader is handed that very file as `/proc/self/fd/N`. It stays loaded for the life
//! of the process.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::fcntl::{OFlag, open};
use nix::sys::stat::{Mode, fstat};

use twofactor_core::backend::{self, Backend, BackendError};
use twofactor_core::config::Config;

/// What the plugin exports to open the database.
type OpenFn = fn(&Config, u32) -> Result<Box<dyn Backend>, BackendError>;
/// What the plugin exports to identify its build.
type FingerprintFn = extern "C" fn() -> u64;

/// `<dlfcn.h>`'s `Dl_info`.
#[repr(C)]
struct DlInfo {
    dli_fname: *const c_char,
    dli_fbase: *mut c_void,
    dli_sname: *const c_char,
    dli_saddr: *mut c_void,
}

const RTLD_NOW: c_int = 0x2;
const RTLD_NODELETE: c_int = 0x1000;

unsafe extern "C" {
    fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dlerror() -> *const c_char;
    fn dladdr(addr: *const c_void, info: *mut DlInfo) -> c_int;
}

/// Opens the fleet database for `config`, loading the plugin on first use.
pub(crate) fn open_fleet(config: &Config, owner: u32) -> Result<Box<dyn Backend>, BackendError> {
    static LOADED: OnceLock<Result<OpenFn, String>> = OnceLock::new();
    match LOADED.get_or_init(load) {
        Ok(open) => open(config, owner),
        Err(why) => Err(BackendError::Setup(format!(
            "the fleet client cannot be loaded: {why}; reinstall twofactor"
        ))),
    }
}

/// The file this module was loaded from.
fn module_path() -> Option<PathBuf> {
    let mut info = DlInfo {
        dli_fname: std::ptr::null(),
        dli_fbase: std::ptr::null_mut(),
        dli_sname: std::ptr::null(),
        dli_saddr: std::ptr::null_mut(),
    };
    let here = module_path as *const c_void;
    // SAFETY: `here` is an address in this object and `info` a valid Dl_info to fill.
    let found = unsafe { dladdr(here, &mut info) };
    if found == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dladdr set dli_fname to a NUL-terminated path owned by the loader.
    let name = unsafe { CStr::from_ptr(info.dli_fname) };
    Some(PathBuf::from(name.to_string_lossy().into_owned()))
}

/// The plugin, opened, once it was found and may be trusted.
fn find() -> Result<(PathBuf, OwnedFd), String> {
    let module = module_path().ok_or("cannot tell where pam_twofactor.so was loaded from")?;
    let dir = module.parent().ok_or("the module has no directory")?;
    let owner = fs::metadata(&module).map_or(0, |m| m.uid());
    let candidates = [
        dir.join("../twofactor/fleet.so"),
        dir.join("libtwofactor_fleet.so"),
    ];
    let path = candidates
        .iter()
        .find(|p| p.symlink_metadata().is_ok())
        .ok_or_else(|| {
            format!(
                "no {} or {}",
                candidates[0].display(),
                candidates[1].display()
            )
        })?;
    let fd = open_trusted(path, owner)?;
    Ok((path.clone(), fd))
}

/// Whether a file or directory with this owner and mode may be trusted: root's or
/// `owner`'s, and writable by nobody else, but for a root-owned sticky directory.
fn trustworthy(uid: u32, mode: u32, owner: u32, dir: bool) -> bool {
    let sticky = dir && mode & 0o1000 != 0 && uid == 0;
    (uid == 0 || uid == owner) && (mode & 0o022 == 0 || sticky)
}

/// Opens `path` without following a symlink in its last part, and checks the open file
/// and every directory above it (symlinks among the directories resolved first, as the
/// kernel would). `owner`: the uid besides root that may own them.
fn open_trusted(path: &Path, owner: u32) -> Result<OwnedFd, String> {
    let name = path
        .file_name()
        .ok_or_else(|| format!("{}: not a file name", path.display()))?;
    let parent = path.parent().ok_or("no directory")?;
    let dir = fs::canonicalize(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let file = dir.join(name);
    let fd = open(
        &file,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("{}: {e}", file.display()))?;
    let st = fstat(&fd).map_err(|e| format!("{}: {e}", file.display()))?;
    let kind = st.st_mode & nix::libc::S_IFMT;
    if kind != nix::libc::S_IFREG {
        return Err(format!(
            "{} is not a regular file (a symlink is never followed)",
            file.display()
        ));
    }
    if !trustworthy(st.st_uid, st.st_mode, owner, false) {
        return Err(format!(
            "{} must be owned by root and writable by nobody else",
            file.display()
        ));
    }
    for d in dir.ancestors() {
        let m = fs::symlink_metadata(d).map_err(|e| format!("{}: {e}", d.display()))?;
        if !m.is_dir() || !trustworthy(m.uid(), m.mode(), owner, true) {
            return Err(format!(
                "{} is in {}, which someone other than root may change: every directory above the fleet client must be root's and writable by nobody else",
                file.display(),
                d.display()
            ));
        }
    }
    Ok(fd)
}

/// The text of the loader's last error.
fn last_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated message valid until the next call.
    let e = unsafe { dlerror() };
    if e.is_null() {
        return "unknown error".into();
    }
    // SAFETY: non-null and NUL-terminated (above); copied at once.
    unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
}

fn load() -> Result<OpenFn, String> {
    let (path, fd) = find()?;
    // The file checked, whatever its path names by now.
    let by_fd = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let c_path = CString::new(by_fd).map_err(|e| e.to_string())?;
    // SAFETY: a NUL-terminated path; the object is kept loaded (RTLD_NODELETE) because
    // the backends it makes point into it.
    let handle = unsafe { dlopen(c_path.as_ptr(), RTLD_NOW | RTLD_NODELETE) };
    drop(fd);
    if handle.is_null() {
        return Err(format!("{}: {}", path.display(), last_error()));
    }
    let symbol = |name: &CStr| {
        // SAFETY: a live handle and a NUL-terminated name.
        let sym = unsafe { dlsym(handle, name.as_ptr()) };
        if sym.is_null() {
            Err(format!("{}: {}", path.display(), last_error()))
        } else {
            Ok(sym)
        }
    };
    let fingerprint = symbol(c"twofactor_fleet_fingerprint")?;
    // SAFETY: the plugin defines this symbol as `extern "C" fn() -> u64`.
    let fingerprint = unsafe { std::mem::transmute::<*mut c_void, FingerprintFn>(fingerprint) };
    if fingerprint() != backend::abi_fingerprint() {
        return Err(format!(
            "{} is from another build of twofactor than pam_twofactor.so",
            path.display()
        ));
    }
    let open = symbol(c"twofactor_fleet_open")?;
    // SAFETY: the plugin defines this symbol as an `OpenFn`, compiled from this
    // workspace against the same twofactor-core, which the fingerprint confirmed.
    Ok(unsafe { std::mem::transmute::<*mut c_void, OpenFn>(open) })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    /// A directory whose ancestors are all root's and closed (the build tree, not /tmp's
    /// subdirectories, whose owner is whoever made them).
    fn closed_dir() -> tempfile::TempDir {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
        fs::create_dir_all(&base).unwrap();
        let dir = tempfile::Builder::new()
            .prefix("plugin-test")
            .tempdir_in(base)
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    fn me() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    #[test]
    fn only_a_closed_regular_file_in_closed_directories_is_opened() {
        let dir = closed_dir();
        let plugin = dir.path().join("libtwofactor_fleet.so");
        fs::write(&plugin, b"not really an object").unwrap();
        fs::set_permissions(&plugin, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(open_trusted(&plugin, me()).is_ok());

        // A file others may write.
        fs::set_permissions(&plugin, fs::Permissions::from_mode(0o666)).unwrap();
        let e = open_trusted(&plugin, me()).unwrap_err();
        assert!(e.contains("writable by nobody else"), "{e}");
        fs::set_permissions(&plugin, fs::Permissions::from_mode(0o644)).unwrap();

        // A symlink to it, even to a good file: never followed.
        let link = dir.path().join("fleet-link.so");
        symlink(&plugin, &link).unwrap();
        let e = open_trusted(&link, me()).unwrap_err();
        assert!(e.contains("fleet-link.so is not a regular file"), "{e}");

        // A symlink into a world-writable directory (the review's case).
        let open_dir = tempfile::tempdir().unwrap();
        fs::set_permissions(open_dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let planted = open_dir.path().join("evil.so");
        fs::write(&planted, b"x").unwrap();
        let link = dir.path().join("evil-link.so");
        symlink(&planted, &link).unwrap();
        let e = open_trusted(&link, me()).unwrap_err();
        assert!(e.contains("evil-link.so is not a regular file"), "{e}");

        // A good file in a directory others may write, or below one.
        let inner = dir.path().join("inner");
        fs::create_dir(&inner).unwrap();
        let deep = inner.join("libtwofactor_fleet.so");
        fs::write(&deep, b"x").unwrap();
        fs::set_permissions(&deep, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(&inner, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(open_trusted(&deep, me()).is_ok());
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let e = open_trusted(&deep, me()).unwrap_err();
        assert!(e.contains("every directory above"), "{e}");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();

        // A directory path with a symlink in it is resolved, then checked as the kernel
        // would walk it.
        let alias = dir.path().join("alias");
        symlink(&inner, &alias).unwrap();
        assert!(open_trusted(&alias.join("libtwofactor_fleet.so"), me()).is_ok());
    }

    #[test]
    fn root_owned_sticky_directories_are_the_one_open_kind_trusted() {
        assert!(trustworthy(0, 0o41777, 0, true), "/tmp");
        assert!(
            !trustworthy(1000, 0o41777, 0, true),
            "a user's sticky directory"
        );
        assert!(!trustworthy(0, 0o40777, 0, true), "open, not sticky");
        assert!(
            !trustworthy(0, 0o101777, 0, false),
            "a file's sticky bit means nothing"
        );
        assert!(
            trustworthy(1000, 0o100755, 1000, false),
            "the module's owner"
        );
        assert!(!trustworthy(1001, 0o100755, 1000, false), "someone else");
    }
}
