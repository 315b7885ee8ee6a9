//! `twofactor doctor` on fixture trees: Debian's real PAM stacks with the pam-auth-update
//! profile enabled and disabled, one tree per bad pattern, sshd configs checked through
//! the real `sshd -T -f FILE`, and policy risks.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use twofactor_testkit::{Accounts, PamFixture, run, tag};

const BIN: &str = env!("CARGO_BIN_EXE_twofactor");

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/doctor"
    ))
}

/// An sshd_config fixture with a host key added, so the real `sshd -T` can read it.
fn sshd_config(f: &PamFixture, name: &str) -> PathBuf {
    let key = f.path().join("host_ed25519");
    if !key.exists() {
        run(
            "ssh-keygen",
            &["-q", "-t", "ed25519", "-N", "", "-f", key.to_str().unwrap()],
        );
    }
    let text = fs::read_to_string(fixtures().join("sshd").join(name)).unwrap();
    let path = f.path().join(name);
    fs::write(&path, format!("HostKey {}\n{text}", key.display())).unwrap();
    path
}

/// Runs doctor with `--json`; returns the exit code and the findings.
fn doctor(f: &PamFixture, pam: &str, sshd: &str) -> (i32, Vec<Value>) {
    let out = Command::new(BIN)
        .args(["doctor", "--json", "--pam-dir"])
        .arg(fixtures().join(pam))
        .arg("--sshd-config")
        .arg(sshd_config(f, sshd))
        .env("TWOFACTOR_CONFIG", f.config())
        .output()
        .unwrap();
    let j: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let findings = j["findings"].as_array().unwrap().clone();
    (out.status.code().unwrap(), findings)
}

fn has(findings: &[Value], id: &str, severity: &str) -> bool {
    findings
        .iter()
        .any(|f| f["id"] == id && f["severity"] == severity)
}

fn errors(findings: &[Value]) -> Vec<String> {
    findings
        .iter()
        .filter(|f| f["severity"] == "error")
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect()
}

const POLICY: &str = "[enforce]\ngroups = [\"sudo\"]\nexempt_users = [\"nobody\"]\n";

#[test]
fn a_good_setup_has_no_errors() {
    let f = PamFixture::new(POLICY);
    let (code, found) = doctor(&f, "debian-enabled", "good.conf");
    assert_eq!(errors(&found), Vec::<String>::new(), "{found:#?}");
    assert_eq!(code, 0);
    assert!(
        found
            .iter()
            .any(|x| x["id"] == "active" && x["message"].as_str().unwrap().contains("sshd"))
    );
    assert!(
        found
            .iter()
            .all(|x| x["location"].as_str().unwrap().starts_with("sshd -T")
                || x["id"] != "sshd-pubkey"),
        "read through sshd -T"
    );
}

/// The one-prompt layout with sshd's password method: nothing to fix, and no advice to
/// turn password logins off, since they carry the code.
#[test]
fn a_one_prompt_setup_has_no_errors() {
    let f = PamFixture::new(POLICY);
    let (code, found) = doctor(&f, "split", "password.conf");
    assert_eq!(errors(&found), Vec::<String>::new(), "{found:#?}");
    assert!(
        !found
            .iter()
            .any(|x| x["id"].as_str().unwrap().starts_with("sshd-")),
        "{found:#?}"
    );
    assert_eq!(code, 0);
    // The same sshd settings with the usual layout: the code prompt never reaches users.
    let (code, found) = doctor(&f, "debian-enabled", "password.conf");
    assert!(has(&found, "sshd-kbdint", "error"), "{found:#?}");
    assert_eq!(code, 1);
}

#[test]
fn debian_without_the_profile_has_the_module_nowhere() {
    let f = PamFixture::new(POLICY);
    let (code, found) = doctor(&f, "debian-disabled", "good.conf");
    assert!(has(&found, "module-missing", "error"), "{found:#?}");
    assert_eq!(code, 1);
    // sshd's settings are not judged while its PAM stack does not ask for the code.
    let (_, found) = doctor(&f, "debian-disabled", "kbdint-no.conf");
    assert!(
        !found
            .iter()
            .any(|x| x["id"].as_str().unwrap().starts_with("sshd-")),
        "{found:#?}"
    );
}

#[test]
fn each_bad_stack_is_found_where_it_is() {
    let f = PamFixture::new(POLICY);
    for (tree, id, severity, location) in [
        ("sufficient", "skippable", "error", "sshd:2"),
        ("jump", "skippable", "error", "sshd:1"),
        ("bypass", "bypass", "error", "sshd:2"),
        ("order", "no-password", "error", "sshd:1"),
        (
            "required-password",
            "password-not-requisite",
            "error",
            "sshd:2",
        ),
        ("substack", "after-substack", "error", "sshd:3"),
        ("bad-args", "module-args", "error", "sshd:2"),
        ("split-unchecked", "split-unchecked", "error", "sshd:1"),
    ] {
        let (_, found) = doctor(&f, tree, "good.conf");
        let hit = found
            .iter()
            .find(|x| x["id"] == id)
            .unwrap_or_else(|| panic!("{tree}: no {id} in {found:#?}"));
        assert_eq!(hit["severity"], severity, "{tree}");
        assert_eq!(hit["location"], location, "{tree}");
        assert!(!hit["fix"].as_str().unwrap().is_empty());
    }
}

#[test]
fn sshd_settings_through_sshd_t() {
    let f = PamFixture::new(POLICY);
    for (conf, id, severity) in [
        ("usepam-no.conf", "sshd-usepam", "error"),
        ("kbdint-no.conf", "sshd-kbdint", "error"),
        ("kbdint-no.conf", "sshd-password", "warning"),
        ("pubkey-skips.conf", "sshd-pubkey", "warning"),
    ] {
        let (_, found) = doctor(&f, "debian-enabled", conf);
        assert!(
            has(&found, id, severity),
            "{conf}: no {severity} {id} in {found:#?}"
        );
    }
    // root allowed over SSH: nothing to say while no rule requires root; a warning when
    // one does and root has no authenticator yet.
    let (_, found) = doctor(&f, "debian-enabled", "root-login.conf");
    assert!(!found.iter().any(|x| x["id"] == "sshd-root"), "{found:#?}");
    let root_required =
        PamFixture::new("[enforce]\nall_users = true\nexempt_users = [\"nobody\"]\n");
    let (_, found) = doctor(&root_required, "debian-enabled", "root-login.conf");
    let root = found
        .iter()
        .find(|x| x["id"] == "sshd-root")
        .unwrap_or_else(|| panic!("{found:#?}"));
    assert_eq!(root["severity"], "warning");
    assert!(
        root["message"]
            .as_str()
            .unwrap()
            .contains("has no authenticator"),
        "{root}"
    );
    // A config sshd refuses is an error in sshd's own words.
    let (code, found) = doctor(&f, "debian-enabled", "bad-option.conf");
    let refused = found
        .iter()
        .find(|x| x["id"] == "sshd-T")
        .unwrap_or_else(|| panic!("{found:#?}"));
    assert_eq!(refused["severity"], "error");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("FrobnicateWidgets"),
        "{refused}"
    );
    assert!(
        refused["fix"].as_str().unwrap().contains("sshd -t -f"),
        "{refused}"
    );
    assert_eq!(code, 1);
    // With nobody required, public-key logins skipping 2FA is only a note.
    let nobody = PamFixture::new("[enforce]\nexempt_users = [\"root\"]\n");
    let (_, found) = doctor(&nobody, "debian-enabled", "pubkey-skips.conf");
    assert!(has(&found, "sshd-pubkey", "info"), "{found:#?}");
    assert!(
        !found.iter().any(|x| x["id"] == "sshd-root"),
        "root is exempt"
    );
}

#[test]
fn policy_risks() {
    let f = PamFixture::new("[enforce]\nall_users = true\n");
    let (_, found) = doctor(&f, "debian-enabled", "good.conf");
    assert!(has(&found, "no-breakglass", "warning"), "{found:#?}");

    let mut acct = Accounts::default();
    let base = tempfile::tempdir().unwrap();
    let user = acct.login_user(
        &format!("tfdoc{}", tag()),
        &base.path().join("h"),
        "Doc-Pass-1",
    );
    let f = PamFixture::new(&format!(
        "[enforce]\nusers = [\"{user}\"]\nexempt_users = [\"nobody\"]\n[enroll]\nat_login = false\n"
    ));
    let (code, found) = doctor(&f, "debian-enabled", "good.conf");
    let stranded = found
        .iter()
        .find(|x| x["id"] == "stranded")
        .unwrap_or_else(|| panic!("{found:#?}"));
    assert!(stranded["message"].as_str().unwrap().contains(&user));
    assert_eq!(code, 1);

    let scoped = PamFixture::new(
        "[enforce]\ngroups = [\"sudo\"]\nexempt_users = [\"nobody\"]\nservices = [\"ssh\", \"xrdp\", \"cron\"]\n",
    );
    let (_, found) = doctor(&scoped, "debian-enabled", "good.conf");
    let finding = |id: &str, service: &str| {
        found
            .iter()
            .find(|x| x["id"] == id && x["message"].as_str().unwrap().contains(service))
            .unwrap_or_else(|| panic!("no {id} for {service}: {found:#?}"))
            .clone()
    };
    // No PAM service of that name: say so, and suggest the nearest one.
    let ssh = finding("service-unknown", "no PAM service ssh ");
    assert!(
        ssh["fix"]
            .as_str()
            .unwrap()
            .contains("did you mean \"sshd\"?"),
        "{ssh}"
    );
    let xrdp = finding("service-unknown", "no PAM service xrdp");
    assert!(
        !xrdp["fix"].as_str().unwrap().contains("did you mean"),
        "{xrdp}"
    );
    // A service that exists but does not run the module.
    let pam = scoped.path().join("debian-with-cron");
    let debian = fixtures().join("debian-enabled");
    run(
        "cp",
        &["-r", debian.to_str().unwrap(), pam.to_str().unwrap()],
    );
    fs::write(pam.join("cron"), "@include common-session-noninteractive\n").unwrap();
    let out = Command::new(BIN)
        .args(["doctor", "--json", "--pam-dir"])
        .arg(&pam)
        .arg("--sshd-config")
        .arg(sshd_config(&scoped, "good.conf"))
        .env("TWOFACTOR_CONFIG", scoped.config())
        .output()
        .unwrap();
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cron = j["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == "service-missing")
        .unwrap_or_else(|| panic!("{j:#}"))
        .clone();
    assert!(cron["message"].as_str().unwrap().contains("cron"), "{cron}");

    // Arguments the module refuses break every login through that stack, in scope or not.
    let login_only = PamFixture::new(
        "[enforce]\ngroups = [\"sudo\"]\nexempt_users = [\"nobody\"]\nservices = [\"login\"]\n",
    );
    let (_, found) = doctor(&login_only, "bad-args", "good.conf");
    assert!(has(&found, "module-args", "error"), "{found:#?}");

    let broken = PamFixture::new("[enforce]\ngrups = []\n");
    let (code, found) = doctor(&broken, "debian-enabled", "good.conf");
    assert!(has(&found, "config", "error"), "{found:#?}");
    assert_eq!(code, 1);
    let bad_state = PamFixture::new(POLICY);
    fs::set_permissions(
        bad_state.path().join("state"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let (_, found) = doctor(&bad_state, "debian-enabled", "good.conf");
    assert!(has(&found, "state-dir", "error"), "{found:#?}");
    let state_dir = found.iter().find(|x| x["id"] == "state-dir").unwrap();
    assert_eq!(
        state_dir["fix"],
        format!(
            "make it private: chmod 0700 {}",
            bad_state.path().join("state").display()
        )
    );
    assert!(
        state_dir["message"]
            .as_str()
            .unwrap()
            .contains("run chmod go-rwx"),
        "{state_dir}"
    );
}
