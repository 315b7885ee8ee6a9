//! The man page and shell completions, generated from the clap definitions.

use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;
use crate::context::Error;
use crate::files;

/// Writes `twofactor.1` and completions for bash, zsh and fish into `dir`, as the caller.
pub fn generate(dir: &Path) -> Result<(), Error> {
    let mut cmd = Cli::command();
    let mut man = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut man)?;
    files::write_private(&dir.join("twofactor.1"), &man)?;
    for (shell, name) in [
        (Shell::Bash, "twofactor.bash"),
        (Shell::Zsh, "_twofactor"),
        (Shell::Fish, "twofactor.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd, "twofactor", &mut out);
        files::write_private(&dir.join(name), &out)?;
    }
    Ok(())
}
