//! The man page and shell completions, generated from the clap definitions.

use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;
use crate::context::Error;
use crate::files;

/// Writes `twofactor.1`, a `twofactor-COMMAND[-SUBCOMMAND].1` page for each command, and
/// completions for bash, zsh and fish into `dir`, as the caller.
pub fn generate(dir: &Path) -> Result<(), Error> {
    let mut cmd = Cli::command();
    cmd.build();
    let mut man = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut man)?;
    files::write_private(&dir.join("twofactor.1"), &man)?;
    pages(dir, &cmd, "twofactor")?;
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

/// A page for each visible subcommand of `cmd`, and theirs in turn (`twofactor-fleet-init.1`).
fn pages(dir: &Path, cmd: &clap::Command, prefix: &str) -> Result<(), Error> {
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let name = format!("{prefix}-{}", sub.get_name());
        let mut page = Vec::new();
        clap_mangen::Man::new(sub.clone().name(name.clone())).render(&mut page)?;
        files::write_private(&dir.join(format!("{name}.1")), &page)?;
        pages(dir, sub, &name)?;
    }
    Ok(())
}
