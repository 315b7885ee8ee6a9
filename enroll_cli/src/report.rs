//! Read-only commands: `status`, `explain` and `check-config`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use nix::unistd::Group;
use serde_json::{Value, json};
use twofactor_core::backend::postgresql::{Postgresql, RequiredReport};
use twofactor_core::backend::{self, Backend, UserFacts};
use twofactor_core::clock::{Clock, SystemClock, format_utc};
use twofactor_core::config::Config;
use twofactor_core::last_good;
use twofactor_core::login::{self, LoginFacts, Read, Resolved};
use twofactor_core::policy::{Nss, Requirement};
use twofactor_core::text::printable;

use crate::cli::Cli;
use crate::context::{self, Ctx, Error, print_json};
use crate::files;
use crate::host;

/// When this few backup codes are left, status says how to make more.
const FEW_CODES: usize = 3;

/// Grace logins a required user without an authenticator has left.
fn grace_left(config: &Config, req: &Requirement, state: &UserFacts) -> Option<u32> {
    (req.required && !state.is_enrolled()).then(|| {
        config
            .enroll
            .grace_logins
            .saturating_sub(state.grace_logins_used)
    })
}

fn status_json(
    config: &Config,
    user: &str,
    req: &Requirement,
    state: &UserFacts,
    now: u64,
) -> Value {
    let locked = state.lockout.locked_for(now);
    json!({
        "grace_logins_left": grace_left(config, req, state),
        "user": user,
        "required": req.required,
        "required_by": if req.required { Value::from(req.reason.to_string()) } else { Value::Null },
        "enrolled": state.is_enrolled(),
        "enabled": state.authenticator.as_ref().is_some_and(|a| a.enabled),
        "backup_codes_left": state.backup_codes_left,
        "locked": locked.is_some(),
        "locked_seconds": locked.unwrap_or(0),
        "trusted_devices": state.trusted_devices.active(now).count(),
    })
}

/// Everyone `status --all` looks at: users with state, users a rule names, members of
/// required groups (primary or supplementary), and with `all_users` every account the
/// name service lists.
fn everyone(ctx: &Ctx, backend: &dyn Backend) -> Result<Vec<String>, Error> {
    let p = &ctx.config.policy;
    let mut users = backend.users()?;
    users.extend(p.users.iter().cloned());
    let listed = if p.all_users || !p.groups.is_empty() {
        host::list_accounts()
    } else {
        Vec::new()
    };
    if p.all_users {
        users.extend(listed.iter().map(|(name, _)| name.clone()));
    }
    for g in &p.groups {
        let Ok(Some(group)) = Group::from_name(g) else {
            continue;
        };
        users.extend(group.mem.iter().cloned());
        users.extend(
            listed
                .iter()
                .filter(|(_, gid)| *gid == group.gid.as_raw())
                .map(|(name, _)| name.clone()),
        );
    }
    users.sort();
    users.dedup();
    Ok(users)
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Hosts' reports of requiring users, by user.
type Reports = BTreeMap<String, Vec<RequiredReport>>;

fn reports_by_user(fleet: &Postgresql, user: Option<&str>) -> Result<Reports, Error> {
    let mut by_user = Reports::new();
    for r in fleet.required_by(user)? {
        by_user.entry(r.user.clone()).or_default().push(r);
    }
    Ok(by_user)
}

/// Whether a user is required, as the fleet knows it: only from hosts' reports, each
/// labelled with its host, since each host's own config decides.
pub fn fleet_requirement(reports: &[RequiredReport]) -> String {
    let Some(last) = reports.iter().map(|r| r.reported_at).max() else {
        return "no host has reported requiring this user (hosts report the users they \
                require as those users log in)"
            .to_string();
    };
    format!(
        "required by {} host{} (last reported {}): {}",
        reports.len(),
        if reports.len() == 1 { "" } else { "s" },
        format_utc(last),
        hosts_of(reports)
    )
}

fn hosts_of(reports: &[RequiredReport]) -> String {
    reports
        .iter()
        .map(|r| printable(&r.host).into_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A status row in the fleet's admin view: the requirement is the hosts' reports.
fn fleet_status_json(user: &str, reports: &[RequiredReport], state: &UserFacts, now: u64) -> Value {
    let none = Requirement {
        required: false,
        reason: twofactor_core::policy::Reason::NoRule,
    };
    let mut row = status_json(&Config::default(), user, &none, state, now);
    row["required"] = if reports.is_empty() {
        Value::Null
    } else {
        Value::from(true)
    };
    row["required_by"] = Value::from(fleet_requirement(reports));
    row["required_by_hosts"] = reports
        .iter()
        .map(|r| json!({"host": printable(&r.host), "reported_at": r.reported_at}))
        .collect();
    // Grace logins are counted against each host's own enroll.grace_logins.
    row["grace_logins_left"] = Value::Null;
    row["grace_logins_used"] = Value::from(state.grace_logins_used);
    row
}

/// `status` and `status --all` with the fleet's admin config.
fn fleet_status(ctx: &Ctx, fleet: &Postgresql, user: Option<&str>, all: bool) -> Result<(), Error> {
    let now = SystemClock.now();
    if !all {
        let user = ctx.target(user)?;
        let state = fleet.facts(&user)?;
        let reports = reports_by_user(fleet, Some(&user))?
            .remove(&user)
            .unwrap_or_default();
        let j = fleet_status_json(&user, &reports, &state, now);
        if ctx.json {
            return print_json(&j);
        }
        println!("User:           {}", printable(&user));
        println!("Required:       {}", fleet_requirement(&reports));
        print_state(&state, now);
        if !state.is_enrolled() && !reports.is_empty() {
            println!(
                "\nRequired by {} but not set up: the user enrols at their next login there (enroll.at_login), or run 'twofactor enroll --user {} --no-verify' here.",
                hosts_of(&reports),
                printable(&user)
            );
        }
        return Ok(());
    }
    let mut reports = reports_by_user(fleet, None)?;
    let mut users = fleet.users()?;
    users.extend(reports.keys().cloned());
    users.sort();
    users.dedup();
    let mut rows = Vec::new();
    for u in &users {
        let state = fleet.facts(u)?;
        let mine = reports.remove(u).unwrap_or_default();
        rows.push(fleet_status_json(u, &mine, &state, now));
    }
    if ctx.json {
        return print_json(&Value::Array(rows));
    }
    println!(
        "{:<20} {:<8} {:<8} {:<8} {:<7} {:<7} {:<7} REQUIRED BY (HOSTS' REPORTS)",
        "USER", "REQUIRED", "ENROLLED", "ENABLED", "BACKUP", "LOCKED", "TRUSTED"
    );
    let flag = |v: &Value| v.as_bool().map_or("?", yes_no);
    let hosts = |r: &Value| {
        r["required_by_hosts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|h| h["host"].as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "no host has reported".to_string())
    };
    for r in &rows {
        println!(
            "{:<20} {:<8} {:<8} {:<8} {:<7} {:<7} {:<7} {}",
            printable(r["user"].as_str().unwrap_or("?")),
            flag(&r["required"]),
            flag(&r["enrolled"]),
            flag(&r["enabled"]),
            r["backup_codes_left"].to_string(),
            flag(&r["locked"]),
            r["trusted_devices"].to_string(),
            hosts(r),
        );
    }
    let waiting: Vec<&Value> = rows
        .iter()
        .filter(|r| r["required"] == true && r["enrolled"] == false)
        .collect();
    println!(
        "\n{} user{}; {} required by some host but not enrolled.",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        waiting.len()
    );
    for r in waiting {
        println!(
            "  {}: required by {}",
            printable(r["user"].as_str().unwrap_or("?")),
            hosts(r)
        );
    }
    println!(
        "\"?\" means no host has reported requiring the user: each host's config decides, and hosts report as users log in."
    );
    Ok(())
}

/// The state lines `status USER` shows, on a host or with the admin config.
fn print_state(state: &UserFacts, now: u64) {
    match &state.authenticator {
        None => println!("Authenticator:  none"),
        Some(a) => println!(
            "Authenticator:  set up {}, {}",
            format_utc(a.enrolled_at),
            if a.enabled {
                "on"
            } else {
                "turned off (twofactor enable)"
            }
        ),
    }
    println!("Backup codes:   {} left", state.backup_codes_left);
    if state.backup_codes_voided {
        println!(
            "                (voided when their key was retired: the user must make new ones)"
        );
    }
    match state.lockout.locked_for(now) {
        Some(s) => println!("Locked:         yes, for {s} more seconds"),
        None => println!("Locked:         no"),
    }
    println!(
        "Trusted hosts:  {}",
        state.trusted_devices.active(now).count()
    );
}

pub fn status(ctx: &Ctx, user: Option<&str>, all: bool) -> Result<(), Error> {
    if let Some(fleet) = ctx.fleet_admin_view() {
        return fleet_status(ctx, &fleet, user, all);
    }
    let backend = if all {
        ctx.admin_backend()?
    } else {
        ctx.backend()?
    };
    let now = SystemClock.now();
    if all {
        ctx.require_root("status --all")?;
        let mut rows = Vec::new();
        for u in &everyone(ctx, &*backend)? {
            let state = backend.facts(u)?;
            let row = match ctx.requirement(u) {
                // Users with no state whom no rule requires are not worth a row.
                Ok(req) if !req.required && state == UserFacts::default() => continue,
                Ok(req) => status_json(&ctx.config, u, &req, &state, now),
                Err(e) => {
                    // An account NSS cannot resolve: say so rather than guess.
                    let req = Requirement {
                        required: false,
                        reason: twofactor_core::policy::Reason::NoRule,
                    };
                    let mut row = status_json(&ctx.config, u, &req, &state, now);
                    row["required"] = Value::Null;
                    row["required_by"] = Value::from(format!("unknown: {e}"));
                    row
                }
            };
            rows.push(row);
        }
        let remote = host::remote_account_sources();
        let p = &ctx.config.policy;
        let note = (!remote.is_empty() && (p.all_users || !p.groups.is_empty())).then(|| {
            format!(
                "Note: accounts also come from {} (/etc/nsswitch.conf). Such directories often do not list their accounts (SSSD's enumerate = false), so required users who have never logged in may be missing here. Check one with: twofactor status USER",
                remote.join(", ")
            )
        });
        if ctx.json {
            if let Some(note) = &note {
                eprintln!("{note}");
            }
            return print_json(&Value::Array(rows));
        }
        let flag = |v: &Value| match v.as_bool() {
            Some(b) => yes_no(b),
            None => "?",
        };
        println!(
            "{:<20} {:<8} {:<8} {:<8} {:<7} {:<7} {:<7} {:<5} REQUIRED BY",
            "USER", "REQUIRED", "ENROLLED", "ENABLED", "BACKUP", "LOCKED", "TRUSTED", "GRACE"
        );
        for r in &rows {
            println!(
                "{:<20} {:<8} {:<8} {:<8} {:<7} {:<7} {:<7} {:<5} {}",
                printable(r["user"].as_str().unwrap_or("?")),
                flag(&r["required"]),
                flag(&r["enrolled"]),
                flag(&r["enabled"]),
                r["backup_codes_left"].to_string(),
                flag(&r["locked"]),
                r["trusted_devices"].to_string(),
                r["grace_logins_left"]
                    .as_u64()
                    .map_or("-".to_string(), |n| n.to_string()),
                r["required_by"].as_str().unwrap_or("-"),
            );
        }
        let waiting = rows
            .iter()
            .filter(|r| r["required"] == true && r["enrolled"] == false)
            .count();
        let next = if ctx.config.enroll.at_login {
            "asked to set up an authenticator at their next login"
        } else {
            "let in for their grace logins, then refused until an admin enrols them"
        };
        println!(
            "\n{} user{}; {waiting} required but not enrolled ({next}).",
            rows.len(),
            if rows.len() == 1 { "" } else { "s" }
        );
        if let Some(note) = note {
            println!("{note}");
        }
        return Ok(());
    }
    let user = ctx.target(user)?;
    let state = backend.facts(&user)?;
    let req = ctx.requirement(&user)?;
    let j = status_json(&ctx.config, &user, &req, &state, now);
    if ctx.json {
        return print_json(&j);
    }
    println!("User:           {user}");
    println!(
        "Required:       {}",
        if req.required {
            format!("yes, by {}", req.reason)
        } else {
            format!("no ({})", req.reason)
        }
    );
    print_state(&state, now);
    if let Some(left) = grace_left(&ctx.config, &req, &state) {
        println!(
            "Grace logins:   {left} of {} left",
            ctx.config.enroll.grace_logins
        );
    }
    let own = user == ctx.caller.name;
    if state.authenticator.is_none() && req.required {
        println!(
            "\nTwo-factor authentication is required but not set up. Run 'twofactor enroll'{}.",
            if own { "" } else { " as that user" }
        );
    } else if state.is_enrolled() && state.backup_codes_left <= FEW_CODES {
        println!(
            "\nYou have {} unused backup code{}. Run 'twofactor backup-codes' to make new ones.",
            state.backup_codes_left,
            if state.backup_codes_left == 1 {
                ""
            } else {
                "s"
            }
        );
    }
    Ok(())
}

pub fn explain(
    ctx: &Ctx,
    user: Option<&str>,
    service: Option<&str>,
    from: Option<&str>,
) -> Result<(), Error> {
    let user = ctx.target(user)?;
    let state = ctx.backend()?.facts(&user)?;
    let p = &ctx.config.policy;
    let in_scope = login::scope_step(&ctx.config, service).is_none();
    let elsewhere = ctx.requirement(&user)?;
    let mut req = elsewhere.clone();
    let out_of_scope = service
        .filter(|_| !in_scope)
        .map(|s| format!("service {s} is not in enforce.services, so the module ignores it"));
    if out_of_scope.is_some() {
        req.required = false;
    }
    let reason = out_of_scope
        .clone()
        .unwrap_or_else(|| req.reason.to_string());
    let now = SystemClock.now();
    // The same step the module would take for this login.
    let facts = LoginFacts {
        service,
        rhost: from,
        silent: false,
        one_prompt: false,
        ssh_factor: None,
        after_login: None,
    };
    let resolved = login::resolve(&ctx.config, &Nss, service, &user, Read::Look, || {
        backend::open(&ctx.config, 0)
    })
    .map_err(|e| Error(e.to_string()))?;
    let step = match resolved {
        Resolved::Decided(step) => step,
        Resolved::Account(account) => account.next_step(&ctx.config, &facts, now),
    };
    let login_text = format!(
        "through {} {}",
        service.map_or("a service in scope".to_string(), |s| format!("service {s}")),
        from.map_or("as a local login (no remote address)".to_string(), |a| {
            format!("from {}", printable(a))
        })
    );
    if ctx.json {
        let mut j = status_json(&ctx.config, &user, &req, &state, now);
        j["reason"] = Value::from(reason);
        j["next_login"] = Value::from(step.to_string());
        j["from"] = from.map_or(Value::Null, Value::from);
        if out_of_scope.is_some() {
            j["required_elsewhere"] = Value::from(elsewhere.required);
            j["reason_elsewhere"] = Value::from(elsewhere.reason.to_string());
        }
        j["server_time"] = Value::from(format_utc(now));
        j["config"] = Value::from(ctx.config.path.display().to_string());
        j["service"] = service.map_or(Value::Null, Value::from);
        j["service_in_scope"] = Value::from(in_scope);
        return print_json(&j);
    }
    println!("User:          {user}");
    match &out_of_scope {
        Some(why) => {
            println!("Decision:      2FA is not asked: {why}");
            println!(
                "Elsewhere:     {} ({})",
                if elsewhere.required {
                    "required in the services in scope"
                } else {
                    "not required in any service"
                },
                elsewhere.reason
            );
        }
        None => println!(
            "Decision:      2FA {}: {}",
            if req.required {
                "is required"
            } else {
                "is not required"
            },
            req.reason
        ),
    }
    println!("Rules:         ({})", ctx.config.path.display());
    println!("  enforce.all_users     = {}", p.all_users);
    println!("  enforce.groups        = {:?}", p.groups);
    println!("  enforce.users         = {:?}", p.users);
    println!("  enforce.exempt_users  = {:?}", p.exempt_users);
    println!("  enforce.exempt_groups = {:?}", p.exempt_groups);
    println!(
        "  enforce.services      = {:?}{}",
        p.services,
        if p.services.is_empty() {
            " (every service)"
        } else {
            ""
        }
    );
    if let Some(s) = service {
        if in_scope {
            println!("Service:       {s} is in scope: the rules above apply to it");
        } else {
            println!(
                "Service:       {s} is not in enforce.services: the module ignores it (PAM_IGNORE)"
            );
        }
    }
    println!(
        "  Exemptions win over every other rule; groups count primary and supplementary membership."
    );
    println!("Next login:    {step}");
    println!("               ({login_text}; --service and --from change it)");
    match &state.authenticator {
        None if req.required => println!(
            "Authenticator: none; {} of {} grace logins used",
            state.grace_logins_used, ctx.config.enroll.grace_logins
        ),
        None => println!("Authenticator: none"),
        Some(a) => println!(
            "Authenticator: set up {}, {}, {} {} digits every {} s, last code accepted: {}",
            format_utc(a.enrolled_at),
            if a.enabled { "on" } else { "turned off" },
            a.params.algorithm,
            a.params.digits,
            a.params.period,
            a.last_step
                .map_or("never".to_string(), |s| format_utc(s * a.params.period)),
        ),
    }
    println!("Backup codes:  {} left", state.backup_codes_left);
    match state.lockout.locked_for(now) {
        Some(s) => {
            println!("Lock:          locked for {s} more seconds ('twofactor unlock {user}')")
        }
        None => println!(
            "Lock:          not locked ({} recent wrong codes)",
            state.lockout.failures
        ),
    }
    let trusted: Vec<_> = state.trusted_devices.active(now).collect();
    if trusted.is_empty() {
        println!("Trusted hosts: none");
    } else {
        for d in trusted {
            println!(
                "Trusted host:  {} for {} until {} (id {})",
                printable(&d.host),
                printable(&d.service),
                format_utc(d.expires),
                printable(&d.id)
            );
        }
    }
    println!(
        "Server time:   {} (codes are refused when the phone's clock is off)",
        format_utc(now)
    );
    Ok(())
}

pub fn check_config(
    cli: &Cli,
    path: Option<&Path>,
    env_config: Option<OsString>,
) -> Result<(), Error> {
    let caller = context::caller()?;
    let in_use = context::config_path(cli, &caller, env_config)?;
    let path = path.map_or_else(|| in_use.clone(), Path::to_path_buf);
    let path = if path.is_absolute() {
        path
    } else {
        std::env::current_dir()?.join(path)
    };
    // A user's check reads the file with their own privileges, never root's.
    let loaded = files::as_caller(|| Ok(context::load_config_at(&path)))?;
    let config: Config = match loaded {
        Ok(c) => c,
        Err(e) => {
            // FILE:LINE:COL: message, alone on the line, so editors can jump to it.
            eprintln!("{e}");
            // Root can see what logins do meanwhile (the copy is root's alone).
            if caller.is_root()
                && path == in_use
                && let Some(f) =
                    twofactor_core::doctor::policy::broken_config(&path, &last_good::load(&path, 0))
            {
                eprintln!("{}\n{}", f.message, f.fix);
            }
            std::process::exit(1);
        }
    };
    let p = &config.policy;
    let problems = twofactor_core::doctor::policy::rule_names(&config, &Nss);
    let errors = problems
        .iter()
        .filter(|f| f.severity == twofactor_core::doctor::Level::Error)
        .count();
    for f in &problems {
        eprintln!("{}: {}: {}", path.display(), f.severity, f.message);
    }
    // The fleet's credential files: only root can read them, as logins do.
    if let Some(pg) = config
        .storage
        .postgresql
        .as_ref()
        .filter(|_| caller.is_root())
    {
        let bad = backend::postgresql::credential_problems(pg);
        for problem in &bad {
            eprintln!("{}: error: {problem}", path.display());
        }
        if !bad.is_empty() {
            return Err(Error(format!(
                "{}: {} credential file{} in [storage.postgresql] cannot be used; every required user would be refused",
                path.display(),
                bad.len(),
                if bad.len() == 1 { "" } else { "s" }
            )));
        }
    }
    if errors > 0 {
        return Err(Error(format!(
            "{}: {errors} name{} in [enforce] match{} nobody or only an alias; fix and check again",
            path.display(),
            if errors == 1 { "" } else { "s" },
            if errors == 1 { "es" } else { "" }
        )));
    }
    println!("{}: OK", path.display());
    let who = if p.all_users {
        "all users".to_string()
    } else {
        let mut parts = Vec::new();
        if !p.groups.is_empty() {
            parts.push(format!("members of {}", p.groups.join(", ")));
        }
        if !p.users.is_empty() {
            parts.push(format!("users {}", p.users.join(", ")));
        }
        if parts.is_empty() {
            "nobody (no rule is set)".to_string()
        } else {
            parts.join(" and ")
        }
    };
    println!("2FA is required for {who}.");
    if !p.services.is_empty() {
        println!("Only for the PAM services {}.", p.services.join(", "));
    }
    if !p.exempt_users.is_empty() || !p.exempt_groups.is_empty() {
        println!(
            "Exempt: users {:?}, groups {:?}.",
            p.exempt_users, p.exempt_groups
        );
    } else {
        println!("No exempt break-glass account is set (enforce.exempt_users); consider one.");
    }
    Ok(())
}
