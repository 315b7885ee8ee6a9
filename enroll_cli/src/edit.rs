//! `twofactor edit-config`: edit the config the way visudo edits sudoers. A copy is
//! edited, checked as the module would read it, and installed atomically only when valid,
//! so a typo never reaches a login.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use twofactor_core::audit::{Event, Outcome, Reason};
use twofactor_core::config::{Config, ConfigError};
use twofactor_core::doctor::Level;
use twofactor_core::last_good;
use twofactor_core::store::FileError;

use crate::cli::Cli;
use crate::context::{self, Error, IDENT};
use crate::prompt;

/// What a new config starts as when there is none.
const EMPTY: &str = "version = 1\n";

pub fn run(
    cli: &Cli,
    env_config: Option<OsString>,
    editor_env: &[(OsString, OsString)],
) -> Result<(), Error> {
    let caller = context::caller()?;
    if !caller.is_root() {
        return Err("edit-config is for root only".into());
    }
    let path = context::config_path(cli, &caller, env_config)?;
    if !path.is_absolute() {
        return Err(format!("{}: give the config as an absolute path", path.display()).into());
    }
    let dir = path
        .parent()
        .ok_or_else(|| Error(format!("{}: not a file path", path.display())))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // One editor at a time: a second edit-config would install over the first.
    let lock = File::open(dir).map_err(|e| Error(format!("cannot open {}: {e}", dir.display())))?;
    if let Err(e) = lock.try_lock() {
        return Err(match e {
            fs::TryLockError::WouldBlock => format!(
                "{} is being edited by another twofactor edit-config; try again when it is done",
                path.display()
            )
            .into(),
            fs::TryLockError::Error(e) => format!("cannot lock {}: {e}", dir.display()).into(),
        });
    }
    let original = match Config::read_text(&path, 0) {
        Ok(t) => Some(t),
        Err(ConfigError::File(FileError::NotFound(_))) => None,
        Err(e) => {
            return Err(format!(
                "{e}\nFix that first; edit-config edits only a file it can trust."
            )
            .into());
        }
    };
    let copy = Copy::create(dir.join(format!(".{name}.edit-{}", std::process::id())))?;
    copy.write(original.as_deref().unwrap_or(EMPTY))?;

    loop {
        edit(&copy.0, editor_env)?;
        let text = fs::read_to_string(&copy.0).map_err(|e| {
            Error(format!(
                "cannot read the edited copy {}: {e}",
                copy.0.display()
            ))
        })?;
        if original.as_deref() == Some(text.as_str()) {
            println!("{}: no changes; nothing installed.", path.display());
            return Ok(());
        }
        let problems = check(&path, &text);
        if problems.is_empty() {
            return install(&path, &text, &caller.name);
        }
        for p in &problems {
            eprintln!("{p}");
        }
        let answer =
            prompt::read_visible("What now? (e)dit again, e(x)it without installing [e]: ")?;
        match answer.as_deref().map(str::trim) {
            Some("" | "e" | "E") => continue,
            _ => {
                let kept = path.with_file_name(format!("{name}.rejected"));
                fs::rename(&copy.0, &kept).map_err(|e| {
                    Error(format!("cannot keep the edit as {}: {e}", kept.display()))
                })?;
                return Err(format!(
                    "{} was not changed. Your edit is kept in {} (readable by root only).",
                    path.display(),
                    kept.display()
                )
                .into());
            }
        }
    }
}

/// The problems that keep `text` from being installed at `path`: what `check-config`
/// reports as errors.
fn check(path: &Path, text: &str) -> Vec<String> {
    let config = match Config::parse(path, text) {
        Ok(c) => c,
        Err(e) => return vec![e.to_string()],
    };
    twofactor_core::doctor::policy::rule_names(&config, &twofactor_core::policy::Nss)
        .into_iter()
        .filter(|f| f.severity == Level::Error)
        .map(|f| format!("{}: {}", path.display(), f.message))
        .collect()
}

fn install(path: &Path, text: &str, by: &str) -> Result<(), Error> {
    Config::install(path, text)?;
    let config = Config::parse(path, text).map_err(|e| Error(e.to_string()))?;
    println!("{}: OK, installed.", path.display());
    // The copy logins fall back on if the file breaks later is this one from now on.
    if let Err(e) = last_good::remember(&config, text, 0) {
        eprintln!(
            "twofactor: warning: cannot keep the last good copy in {}: {e}",
            config.storage.state_dir.display()
        );
    }
    Event {
        user: by.to_string(),
        account: None,
        service: IDENT.to_string(),
        rhost: None,
        outcome: Outcome::Success,
        reason: Reason::Admin {
            action: "edit-config",
            by: by.to_string(),
        },
        server: None,
    }
    .log(IDENT);
    Ok(())
}

/// Runs the editor on `file` and waits for it.
fn edit(file: &Path, editor_env: &[(OsString, OsString)]) -> Result<(), Error> {
    let var = |k: &str| {
        editor_env
            .iter()
            .find(|(n, v)| n == k && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    let editor = var("VISUAL").or_else(|| var("EDITOR")).unwrap_or_else(|| {
        if Path::new("/usr/bin/editor").exists() {
            "editor".into()
        } else {
            "vi".into()
        }
    });
    // Through the shell, as git and crontab do, so EDITOR may carry arguments.
    let mut script = OsString::from("exec ");
    script.push(&editor);
    script.push(" \"$1\"");
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .arg("sh")
        .arg(file)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(editor_env.iter().map(|(k, v)| (k, v)))
        .status()
        .map_err(|e| Error(format!("cannot start the editor {editor:?}: {e}")))?;
    if !status.success() {
        return Err(
            format!("the editor {editor:?} failed ({status}); nothing was installed").into(),
        );
    }
    Ok(())
}

/// The private copy being edited, removed unless it is kept.
struct Copy(PathBuf);

impl Copy {
    fn create(path: PathBuf) -> Result<Self, Error> {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| Error(format!("cannot create {}: {e}", path.display())))?;
        Ok(Self(path))
    }

    fn write(&self, text: &str) -> Result<(), Error> {
        let mut f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&self.0)
            .map_err(|e| Error(format!("cannot write {}: {e}", self.0.display())))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e: io::Error| Error(format!("cannot write {}: {e}", self.0.display())))
    }
}

impl Drop for Copy {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}
