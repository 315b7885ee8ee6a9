//! Reading answers from the user: from the terminal with echo off for secrets, or line
//! by line from stdin when it is not a terminal (scripts and tests).

use std::io::{self, IsTerminal, Read, Write};

use std::os::fd::AsFd;

use nix::sys::termios::{self, LocalFlags, SetArg};
use zeroize::{Zeroize, Zeroizing};

/// Longest answer accepted; anything longer is cut off (no code is anywhere near it).
const MAX_LINE: usize = 1024;

/// Reads one line a byte at a time straight from fd 0: no buffer outside this function
/// ever holds a password, and nothing past the line is consumed.
fn read_line() -> io::Result<Option<Zeroizing<String>>> {
    let mut raw = Zeroizing::new(Vec::with_capacity(64));
    let mut stdin = std::fs::File::from(io::stdin().as_fd().try_clone_to_owned()?);
    let mut byte = [0u8; 1];
    let mut eof = true;
    while raw.len() < MAX_LINE {
        match stdin.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => {
                eof = false;
                if byte[0] == b'\n' {
                    break;
                }
                raw.push(byte[0]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    byte.zeroize();
    if eof {
        return Ok(None);
    }
    while raw.last() == Some(&b'\r') {
        raw.pop();
    }
    let bytes = std::mem::take(&mut *raw);
    match String::from_utf8(bytes) {
        Ok(s) => Ok(Some(Zeroizing::new(s))),
        Err(e) => {
            drop(Zeroizing::new(e.into_bytes()));
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "input is not UTF-8",
            ))
        }
    }
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
