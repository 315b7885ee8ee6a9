//! Loading the fleet client (`fleet_plugin/`) when the config's backend is PostgreSQL.
//! It brings TLS and the PostgreSQL client, with libssl and libcrypto; the module itself
//! links neither, so a login on the file store never loads them.
//!
//! The plugin is looked for beside the module: `../twofactor/fleet.so` from the module's
//! directory as the packages install it (`/usr/lib/x86_64-linux-gnu/twofactor/fleet.so`
//! for `/usr/lib/x86_64-linux-gnu/security/pam_twofactor.so`), else
//! `libtwofactor_fleet.so` in the same directory (a build tree). It must be a regular
//! file owned by root or by the module's owner and writable by nobody else, in a
//! directory nobody else may write: it runs in every login process. It stays loaded
//! for the life of the process.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

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

/// Where the plugin is, and that it may be trusted.
fn find() -> Result<PathBuf, String> {
    let module = module_path().ok_or("cannot tell where pam_twofactor.so was loaded from")?;
    let dir = module.parent().ok_or("the module has no directory")?;
    let owner = fs::metadata(&module).map_or(0, |m| m.uid());
    let candidates = [
        dir.join("../twofactor/fleet.so"),
        dir.join("libtwofactor_fleet.so"),
    ];
    let path = candidates.iter().find(|p| p.exists()).ok_or_else(|| {
        format!(
            "no {} or {}",
            candidates[0].display(),
            candidates[1].display()
        )
    })?;
    let trusted = |p: &Path, file: bool| -> Result<(), String> {
        let m = fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let kind_ok = if file { m.is_file() } else { m.is_dir() };
        if !kind_ok || (m.uid() != 0 && m.uid() != owner) || m.mode() & 0o022 != 0 {
            return Err(format!(
                "{} must be owned by root and writable by nobody else",
                p.display()
            ));
        }
        Ok(())
    };
    trusted(path, true)?;
    trusted(path.parent().ok_or("no directory")?, false)?;
    Ok(path.clone())
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
    let path = find()?;
    let c_path = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: a NUL-terminated path; the object is kept loaded (RTLD_NODELETE) because
    // the backends it makes point into it.
    let handle = unsafe { dlopen(c_path.as_ptr(), RTLD_NOW | RTLD_NODELETE) };
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
