//! `twofactor doctor`: gathers the PAM stacks, sshd's effective settings, the policy and
//! the clock, and prints what core's analysis finds, with fixes.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::unistd::{Group, User};
use serde_json::json;
use twofactor_core::backend::{Backend, UserFacts, postgresql};
use twofactor_core::clock::{Clock, SystemClock};
use twofactor_core::config::{BackendKind, Config};
use twofactor_core::doctor::pam::PamDir;
use twofactor_core::doctor::policy::{self as rules, GroupEntry};
use twofactor_core::doctor::sshd::SshdTest;
use twofactor_core::doctor::{self, Level, PamFiles, SshdSettings};
use twofactor_core::last_good::{self, Loaded};
use twofactor_core::policy::{Nss, Requirement};
use twofactor_core::store::Store;
use twofactor_core::text::printable;

use crate::cli::{Cli, DoctorArgs};
use crate::context::{self, Error, print_json};
use crate::host;

/// PAM service files in a directory.
struct Dir(PathBuf);

impl PamFiles for Dir {
    fn read(&self, name: &str) -> Option<String> {
        if name.contains('/') {
            return fs::read_to_string(name).ok();
        }
        fs::read_to_string(self.0.join(name)).ok()
    }
}

pub fn run(cli: &Cli, args: &DoctorArgs, env_config: Option<OsString>) -> Result<(), Error> {
    let caller = context::caller()?;
    if !caller.is_root() {
        return Err("doctor is for root only".into());
    }
    let mut findings = Vec::new();
    // One line per group of checks that found nothing to warn of.
    let mut ok = Vec::new();
    let config_path = context::config_path(cli, &caller, env_config)?;
    let loaded = last_good::load(&config_path, 0);
    findings.extend(rules::broken_config(&config_path, &loaded));
    if clean(&findings) {
        ok.push(format!("config {}: valid", config_path.display()));
    }
    let config = match loaded {
        Loaded::Good { config, .. } => Some(*config),
        // Go on with what logins enforce now.
        Loaded::Broken(fallback) => Some(fallback.config),
        Loaded::Unusable { .. } => None,
    };
    let policy = config
        .as_ref()
        .map(|c| c.policy.clone())
        .unwrap_or_default();
    let fleet = config
        .as_ref()
        .is_some_and(|c| c.storage.backend == BackendKind::Postgresql);
    // A fleet host keeps no state of its own: the database is checked instead.
    let store = config.as_ref().filter(|_| !fleet).and_then(|c| {
        Store::open(&c.storage.state_dir)
            .map_err(|e| findings.push(rules::state_dir_refused(&c.storage.state_dir, &e)))
            .ok()
    });

    let sshd_config = args
        .sshd_config
        .clone()
        .unwrap_or_else(|| PathBuf::from("/etc/ssh/sshd_config"));
    let mark = findings.len();
    let pam_dir = args.pam_dir.as_deref().unwrap_or(Path::new("/etc/pam.d"));
    // sshd's own settings matter only where its PAM stack asks for the code.
    let sshd_runs_module = doctor::pam::auth_stack(&Dir(pam_dir.to_path_buf()), "sshd")
        .is_ok_and(|stack| doctor::pam::runs_module(&stack));
    let sshd = (sshd_config.exists() && policy.applies_to_service("sshd") && sshd_runs_module)
        .then(|| {
            let test = sshd_test(&sshd_config);
            let origin = sshd_config.display().to_string();
            findings.extend(doctor::sshd::check_sshd_test(&origin, &test));
            match test {
                SshdTest::Ran(out) => (SshdSettings::parse(&out), format!("sshd -T -f {origin}")),
                _ => (
                    SshdSettings::parse(&fs::read_to_string(&sshd_config).unwrap_or_default()),
                    origin,
                ),
            }
        });
    let key_first = sshd.as_ref().is_some_and(|(s, _)| s.requires_key_first());
    if let (Some((settings, origin)), Some(c)) = (&sshd, &config) {
        findings.extend(doctor::sshd::check_ssh_factor(
            settings,
            c.ssh_factor.enabled(),
            origin,
        ));
    }
    let listing = PamDir {
        path: pam_dir.display().to_string(),
        names: fs::read_dir(pam_dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .map_err(|e| e.to_string()),
    };
    let pam_mark = findings.len();
    findings.extend(doctor::pam::check_pam(
        &listing,
        &Dir(pam_dir.to_path_buf()),
        &policy,
        key_first,
    ));

    if let Some(c) = config
        .as_ref()
        .filter(|c| !c.after_login.services.is_empty())
    {
        findings.extend(doctor::pam::check_after_login_sessions(
            &listing,
            &Dir(pam_dir.to_path_buf()),
            &c.after_login.services,
        ));
        let scope = fs::read_to_string(doctor::pam::PTRACE_SCOPE).ok();
        findings.extend(doctor::pam::check_ptrace_scope(scope.as_deref()));
    }
    if let Some(c) = config.as_ref().filter(|c| c.ssh_factor.enabled()) {
        findings.extend(doctor::pam::check_user_env_before_module(
            &Dir(pam_dir.to_path_buf()),
            &c.ssh_factor.services,
        ));
    }
    if let Some(c) = config.as_ref().filter(|_| fleet) {
        findings.extend(doctor::fleet::check_unavailable_mapping(
            &listing,
            &Dir(pam_dir.to_path_buf()),
        ));
        if clean(&findings[pam_mark..]) {
            ok.push(format!(
                "PAM stacks in {}: the module runs after the password, no bypass found",
                pam_dir.display()
            ));
        }
        let (found, fine) = fleet_findings(c);
        if clean(&found) {
            ok.extend(fine);
        }
        findings.extend(found);
    } else if clean(&findings[pam_mark..]) {
        ok.push(format!(
            "PAM stacks in {}: the module runs after the password, no bypass found",
            pam_dir.display()
        ));
    }

    if let Some((settings, origin)) = &sshd {
        let root = policy
            .requires("root", &Nss)
            .ok()
            .zip(store.as_ref().and_then(|s| Backend::facts(s, "root").ok()));
        let sshd_policy = doctor::SshdPolicy {
            one_prompt: doctor::pam::auth_stack(&Dir(pam_dir.to_path_buf()), "sshd")
                .is_ok_and(|stack| doctor::pam::has_split_line(&stack)),
            ..rules::sshd_policy(&policy, root.as_ref().map(|(r, s)| (r, s)))
        };
        let sshd_mark = findings.len();
        findings.extend(doctor::check_sshd(settings, sshd_policy, origin));
        if clean(&findings[mark..pam_mark]) && clean(&findings[sshd_mark..]) {
            ok.push(format!("sshd ({origin}): PAM can ask for the code"));
        }
    }

    if let Some(c) = &config {
        findings.extend(rules::rule_names(c, &Nss));
        if let Some(store) = &store {
            let scan = store.scan();
            let state_mark = findings.len();
            findings.extend(rules::state_files(store.dir(), &scan, &Nss));
            if let Ok(scan) = &scan
                && clean(&findings[state_mark..])
            {
                ok.push(format!(
                    "state directory {}: {} user{} with state, no problem found",
                    store.dir().display(),
                    scan.users.len(),
                    plural(scan.users.len())
                ));
            }
        }
        findings.extend(rules::break_glass(c));
        if let Some(store) = &store {
            findings.extend(rules::stranded(
                c,
                &candidate_states(c, store),
                SystemClock.now(),
            ));
        }
    }
    let synchronised = host::clock_synchronised();
    findings.extend(rules::clock(synchronised));
    if synchronised == Some(true) {
        ok.push("system clock: NTP-synchronised".to_string());
    }

    findings.sort_by_key(|f| f.severity);
    let count = |s| findings.iter().filter(|f| f.severity == s).count();
    let (errors, warnings, infos) = (
        count(Level::Error),
        count(Level::Warning),
        count(Level::Info),
    );
    if cli.json {
        print_json(&json!({
            "errors": errors, "warnings": warnings, "infos": infos, "findings": findings,
            "ok": ok,
        }))?;
    } else {
        println!(
            "twofactor doctor: {errors} error{}, {warnings} warning{}, {infos} note{}",
            plural(errors),
            plural(warnings),
            plural(infos)
        );
        for line in &ok {
            println!("ok       {}", printable(line));
        }
        for f in &findings {
            println!(
                "\n{:<8} {}\n         {}",
                f.severity.to_string(),
                f.location,
                f.message
            );
            // A note may have nothing to fix.
            if !f.fix.is_empty() {
                println!("         fix: {}", f.fix);
            }
        }
    }
    if errors > 0 {
        Err(Error(format!("{errors} error{} found", plural(errors))))
    } else {
        Ok(())
    }
}

/// The fleet database as this host reaches it: through the host role, as a login does.
/// The findings, and what is fine when it was reached.
fn fleet_findings(c: &Config) -> (Vec<doctor::Finding>, Option<String>) {
    let Some(settings) = c.storage.postgresql.clone() else {
        return (Vec::new(), None);
    };
    let servers = settings
        .hosts
        .iter()
        .map(|(h, p)| format!("{h}:{p}"))
        .collect::<Vec<_>>()
        .join(", ");
    let cert_expires = postgresql::certificate_expiry(&settings.cert);
    let db = postgresql::Postgresql::new(settings, postgresql::Role::Host, 0);
    let version = db.schema_version();
    let connected = version.is_ok();
    let facts = doctor::fleet::FleetFacts {
        servers,
        connect: version.as_ref().map(drop).map_err(ToString::to_string),
        cert_expires,
        schema_version: version.ok(),
        expected_version: postgresql::SCHEMA_VERSION,
        secrets_probe: connected.then(|| db.probe("SELECT secret FROM twofactor.users LIMIT 1")),
        catalog: connected.then(|| db.catalog_problems().map_err(|e| e.to_string())),
        login_role: connected.then(|| db.session_role().ok()).flatten(),
        servers_seen: db
            .probe_servers()
            .map(|all| {
                all.into_iter()
                    .map(|r| {
                        let seen = r.state.map(|s| {
                            let us = u64::try_from(s.round_trip.as_micros()).unwrap_or(u64::MAX);
                            (s.primary, us)
                        });
                        (r.server, seen)
                    })
                    .collect()
            })
            .unwrap_or_default(),
        db_time: connected.then(|| db.server_time().ok()).flatten(),
        now: SystemClock.now(),
        synchronised: host::clock_synchronised(),
        window_seconds: u64::from(c.totp.window) * c.totp.params.period,
        fleet_issuer: connected.then(|| db.issuer().ok()).flatten(),
        config_issuer: c.enroll.issuer.clone(),
        slots_problem: connected
            .then(|| db.slots().ok().map(|s| s.problem()))
            .flatten(),
    };
    let found = doctor::fleet::check_fleet(&facts);
    let ok = doctor::fleet::fleet_ok(&facts).map(|line| format!("fleet: {line}"));
    (found, ok)
}

/// No finding an admin must act on (notes are fine).
fn clean(found: &[doctor::Finding]) -> bool {
    found.iter().all(|f| f.severity == Level::Info)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `sshd -T` on `config`: as it is, then with a connection spec for configs that need
/// one (Match blocks); sshd's own words, one line, if it refuses.
fn sshd_test(config: &Path) -> SshdTest {
    let mut refusal = None;
    for extra in [
        &[][..],
        &["-C", "user=root,host=localhost,addr=127.0.0.1"][..],
    ] {
        match Command::new("/usr/sbin/sshd")
            .arg("-T")
            .arg("-f")
            .arg(config)
            .args(extra)
            .output()
        {
            Ok(out) if out.status.success() => {
                return SshdTest::Ran(String::from_utf8_lossy(&out.stdout).into_owned());
            }
            Ok(out) => {
                // Never sshd's raw stderr: one line, made printable.
                let said = String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .map(|l| printable(l).into_owned())
                    .unwrap_or_else(|| format!("exit status {}", out.status));
                refusal.get_or_insert(said);
            }
            Err(_) => {}
        }
    }
    refusal.map_or(SshdTest::Unavailable, SshdTest::Refused)
}

/// The requirement and state of every account the policy may require.
fn candidate_states(c: &Config, store: &Store) -> Vec<(String, Requirement, UserFacts)> {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = |g: &str| {
        let group = Group::from_name(g).ok().flatten()?;
        Some(GroupEntry {
            gid: group.gid.as_raw(),
            members: group.mem,
        })
    };
    rules::candidates(&c.policy, &passwd, &group)
        .into_iter()
        .filter(|u| User::from_name(u).ok().flatten().is_some())
        .filter_map(|u| {
            let req = c.policy.requires(&u, &Nss).ok()?;
            let state = Backend::facts(store, &u).ok()?;
            Some((u, req, state))
        })
        .collect()
}
