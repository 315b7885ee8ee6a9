//! Reading answers from the user: from the terminal with echo off for secrets, or line
//! by line from stdin when it is not a terminal (scripts and tests).

use std::io::{self, BufRead, IsTerminal, Read, Write};

use nix::sys::termios::{self, LocalFlags, SetArg};
use zeroize::Zeroizing;

/// Longest answer accepted; anything longer is cut off (no code is anywhere near it).
const MAX_LINE: usize = 1024;

fn read_line() -> io::Result<Option<Zeroizing<String>>> {
    let mut line = Zeroizing::new(String::new());
    let n = io::stdin()
        .lock()
        .take(MAX_LINE as u64)
        .read_line(&mut line)?;
    if n == 0 {
        return Ok(None);
    }
    let trimmed = line.trim_end_matches(['\n', '\r']).len();
    line.truncate(trimmed);
    Ok(Some(line))
}

/// Shows `prompt` on stderr and reads one line without echo. `None` at end of input.
pub fn read_hidden(prompt: &str) -> io::Result<Option<Zeroizing<String>>> {
    eprint!("{prompt}");
    io::stderr().flush()?;
    let stdin = io::stdin();
    if !stdin.is_terminal() {
        return read_line();
    }
    let saved = termios::tcgetattr(&stdin).map_err(io::Error::from)?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    termios::tcsetattr(&stdin, SetArg::TCSAFLUSH, &quiet).map_err(io::Error::from)?;
    let line = read_line();
    let restored = termios::tcsetattr(&stdin, SetArg::TCSAFLUSH, &saved).map_err(io::Error::from);
    let line = line?;
    restored?;
    Ok(line)
}

/// Shows `prompt` on stderr and reads one visible line. `None` at end of input.
pub fn read_visible(prompt: &str) -> io::Result<Option<String>> {
    eprint!("{prompt}");
    io::stderr().flush()?;
    Ok(read_line()?.map(|l| l.to_string()))
}
