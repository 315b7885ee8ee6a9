//! The client against real libpam (through pam_wrapper, with a private service dir):
//! hidden prompts, messages, a refused answer and a failed conversation. libpam must be
//! preloaded from the start, so each case runs in a child process of this test binary.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::env;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::Mutex;

use twofactor_pam_client::{Context, ConvFailed, Converse, Style};
use zeroize::Zeroizing;

/// A stack that greets (info), then asks for a password (hidden) and accepts "sesame";
/// `{check}` is a script that reads the password pam_exec writes to it.
const STACK: &str = "auth requisite pam_echo.so Hello %u\n\
auth required pam_exec.so expose_authtok quiet {check}\n\
account required pam_permit.so\n";

/// pam_exec writes the password and a NUL byte to the script's stdin.
const CHECK: &str = "#!/bin/sh\n[ \"$(tr -d '\\000')\" = sesame ]\n";

/// Answers prompts with a fixed text (or fails), and records what libpam sent.
struct Recorder {
    answer: Option<&'static str>,
    /// Answer prompts with nothing instead of failing.
    unanswered: bool,
    seen: Vec<(Style, String)>,
}

impl Converse for Recorder {
    fn converse(
        &mut self,
        style: Style,
        text: &str,
    ) -> Result<Option<Zeroizing<String>>, ConvFailed> {
        self.seen.push((style, text.to_string()));
        // Printed as it happens, for the parent to check (the recorder lives in the context).
        println!("SEEN {style:?} {text}");
        if !style.is_prompt() || self.unanswered {
            return Ok(None);
        }
        self.answer
            .map(|a| Some(Zeroizing::new(a.to_string())))
            .ok_or(ConvFailed)
    }
}

/// pam_wrapper's private copy of the service dir has a name processes can share
/// ("/tmp/pam.X"), so the children take turns.
static TURN: Mutex<()> = Mutex::new(());

/// Runs the `child` test with `answer`; returns its stdout.
fn run(answer: &str) -> String {
    let _turn = TURN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let services = dir.path().join("pam.d");
    fs::create_dir(&services).unwrap();
    let check = dir.path().join("check");
    fs::write(&check, CHECK).unwrap();
    fs::set_permissions(&check, fs::Permissions::from_mode(0o755)).unwrap();
    let stack = STACK.replace("{check}", &check.display().to_string());
    fs::write(services.join("tfclient"), stack).unwrap();
    let out = Command::new(env::current_exe().unwrap())
        .args([
            "--exact",
            "child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LD_PRELOAD", "libpam_wrapper.so")
        .env("PAM_WRAPPER", "1")
        .env("PAM_WRAPPER_SERVICE_DIR", &services)
        .env("TF_CLIENT_ANSWER", answer)
        .output()
        .expect("libpam-wrapper must be installed (tests/setup)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "child failed: {text}");
    text
}

#[test]
fn a_right_answer_to_a_hidden_prompt_authenticates() {
    let out = run("sesame");
    assert!(out.contains("SEEN Info Hello tfclient-user"), "{out}");
    assert!(out.contains("SEEN Hidden Password: "), "{out}");
    assert!(
        out.contains("RESULT authenticate=ok user=Some(\"tfclient-user\") acct=ok"),
        "{out}"
    );
}

#[test]
fn a_wrong_answer_is_refused() {
    let out = run("open");
    assert!(out.contains("SEEN Hidden Password: "), "{out}");
    assert!(out.contains("RESULT authenticate=err"), "{out}");
}

#[test]
fn a_failed_conversation_is_refused() {
    let out = run("");
    assert!(out.contains("SEEN Hidden"), "{out}");
    assert!(out.contains("RESULT authenticate=err"), "{out}");
}

#[test]
fn a_prompt_left_unanswered_is_refused() {
    let out = run("-");
    assert!(out.contains("SEEN Hidden Password: "), "{out}");
    assert!(out.contains("RESULT authenticate=err"), "{out}");
}

/// One PAM transaction, run as a child process by the tests above.
#[test]
#[ignore = "run as a child process under pam_wrapper by the tests above"]
fn child() {
    let answer = env::var("TF_CLIENT_ANSWER").unwrap();
    let recorder = Recorder {
        answer: match answer.as_str() {
            "" => None,
            "sesame" => Some("sesame"),
            _ => Some("open"),
        },
        unanswered: answer == "-",
        seen: Vec::new(),
    };
    let mut pam = Context::start("tfclient", "tfclient-user", recorder).unwrap();
    match pam.authenticate(0) {
        Ok(()) => {
            let user = pam.user().unwrap();
            let acct = pam
                .acct_mgmt()
                .map_or_else(|e| e.to_string(), |()| "ok".into());
            println!("RESULT authenticate=ok user={user:?} acct={acct}");
        }
        Err(e) => println!("RESULT authenticate=err ({}: {e})", e.code),
    }
}
