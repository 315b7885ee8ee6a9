//! `twofactor`: the command-line tool for users and admins.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("twofactor: no commands are available in this build yet");
    ExitCode::FAILURE
}
