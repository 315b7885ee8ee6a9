//! Changes to an existing enrollment: backup codes, disable/enable, reset, unlock, trust.

use serde_json::json;
use twofactor_core::backend::Revoke;
use twofactor_core::clock::{Clock, SystemClock, format_utc};
use twofactor_core::policy::{Directory, Nss};
use twofactor_core::random::OsRandom;
use twofactor_core::text::printable;

use crate::cli::BackupCodesArgs;
use crate::context::{Ctx, Error, print_json};
use crate::enroll::print_backup_codes;
use crate::paper::Sheets;
use crate::report;

fn no_authenticator(user: &str) -> Error {
    Error(format!(
        "{user} has no authenticator; run 'twofactor enroll' first"
    ))
}

pub fn backup_codes(ctx: &Ctx, args: &BackupCodesArgs) -> Result<(), Error> {
    let user = ctx.target(args.user.user.as_deref())?;
    let backend = ctx.backend_for_change()?;
    let state = backend.facts(&user)?;
    if !state.is_enrolled() {
        return Err(no_authenticator(&user));
    }
    let count = ctx.config.backup_codes.count;
    if count == 0 {
        return Err("backup codes are turned off in the config (backup_codes.count = 0)".into());
    }
    let authority = ctx.confirm_change(&*backend, &state)?;
    let sheets = Sheets::create(args.paper.pdf.as_deref(), args.txt.as_deref())?;
    let codes = backend
        .new_backup_codes(&user, authority, count, &mut OsRandom)?
        .ok_or_else(|| no_authenticator(&user))?
        .0;
    ctx.audit(&user, "new backup codes");
    if ctx.json {
        print_json(&json!({
            "user": user,
            "backup_codes": codes.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        }))?;
    } else {
        println!("New backup codes for {user}; all earlier ones no longer work.");
        print_backup_codes(&codes);
    }
    sheets.write(ctx, &user, &codes)
}

pub fn disable(ctx: &Ctx, user: Option<&str>, remove: bool) -> Result<(), Error> {
    let user = ctx.target(user)?;
    let backend = ctx.backend_for_change()?;
    let state = backend.facts(&user)?;
    if !state.is_enrolled() {
        return Err(no_authenticator(&user));
    }
    if !ctx.caller.is_root() {
        let req = ctx.requirement(&user)?;
        if req.required {
            return Err(Error(format!(
                "two-factor authentication is required for you ({}); only an administrator can turn it off",
                req.reason
            )));
        }
    }
    let authority = ctx.confirm_change(&*backend, &state)?;
    let had = if remove {
        backend.remove_authenticator(&user, authority)?
    } else {
        backend.set_enabled(&user, authority, false)?
    };
    if !had {
        return Err(no_authenticator(&user));
    }
    if remove {
        ctx.audit(&user, "remove authenticator");
        println!(
            "Removed the authenticator and backup codes of {user}. Run 'twofactor enroll' to set up a new one."
        );
    } else {
        ctx.audit(&user, "disable");
        println!(
            "Two-factor authentication is off for {user}; the key is kept. Run 'twofactor enable' to turn it back on."
        );
    }
    Ok(())
}

pub fn enable(ctx: &Ctx, user: Option<&str>) -> Result<(), Error> {
    let user = ctx.target(user)?;
    let backend = ctx.backend_for_change()?;
    let state = backend.facts(&user)?;
    match &state.authenticator {
        None => return Err(no_authenticator(&user)),
        Some(a) if a.enabled => {
            println!("Two-factor authentication is already on for {user}.");
            return Ok(());
        }
        Some(_) => {}
    }
    // Turning an authenticator back on touches it, so it takes a code from it.
    let authority = ctx.confirm_change(&*backend, &state)?;
    if !backend.set_enabled(&user, authority, true)? {
        return Err(no_authenticator(&user));
    }
    ctx.audit(&user, "enable");
    println!("Two-factor authentication is on again for {user}.");
    Ok(())
}

pub fn reset(ctx: &Ctx, user: &str) -> Result<(), Error> {
    ctx.require_root("reset")?;
    let user = ctx.target_or_leftover(user)?;
    ctx.admin_backend()?.reset(&user)?;
    ctx.audit(&user, "reset");
    if let Some(fleet) = ctx.fleet_admin_view() {
        // The admin config has no [enforce] of the hosts': only their reports count.
        let reports = fleet.required_by(Some(&user))?;
        let next = if reports.is_empty() {
            "Any host whose config requires them will ask for a new authenticator at their next login there (enroll.at_login)"
        } else {
            "They set up a new authenticator at their next login on one of those hosts (enroll.at_login)"
        };
        println!(
            "Reset {}: authenticator, backup codes, lock and trusted hosts removed. 2FA: {}. {next}.",
            printable(&user),
            report::fleet_requirement(&reports)
        );
        return Ok(());
    }
    let Ok(req) = ctx.requirement(&user) else {
        println!("Reset {user}: the state left by this name is removed (no account has it).");
        return Ok(());
    };
    if req.required {
        let next = if ctx.config.enroll.at_login {
            "they will set up a new authenticator at their next login"
        } else {
            "they must run 'twofactor enroll' (enroll.at_login is off)"
        };
        println!(
            "Reset {user}: authenticator, backup codes, lock and trusted hosts removed. 2FA is required ({}), so {next}.",
            req.reason
        );
    } else {
        println!(
            "Reset {user}: authenticator, backup codes, lock and trusted hosts removed. 2FA is not required for {user}."
        );
    }
    Ok(())
}

pub fn unlock(ctx: &Ctx, user: &str) -> Result<(), Error> {
    ctx.require_root("unlock")?;
    let user = ctx.target_or_leftover(user)?;
    let was = ctx.admin_backend()?.unlock(&user)?;
    ctx.audit(&user, "unlock");
    match was {
        Some(secs) => println!("Unlocked {user} ({secs} seconds of lock were left)."),
        None => println!("{user} was not locked; the failure count is cleared."),
    }
    Ok(())
}

pub fn trust_list(ctx: &Ctx, user: Option<&str>) -> Result<(), Error> {
    let user = ctx.target(user)?;
    let state = ctx.backend()?.facts(&user)?;
    let now = SystemClock.now();
    let active: Vec<_> = state.trusted_devices.active(now).collect();
    if ctx.json {
        let list: Vec<_> = active
            .iter()
            .map(|d| {
                json!({"id": d.id, "service": d.service, "host": d.host, "kind": d.kind,
                       "created": d.created, "expires": d.expires})
            })
            .collect();
        return print_json(&json!({"user": user, "trusted_devices": list}));
    }
    if active.is_empty() {
        println!("{user} has no trusted hosts.");
        return Ok(());
    }
    println!(
        "{:<14} {:<12} {:<40} {:<24} EXPIRES",
        "ID", "SERVICE", "HOST", "TRUSTED SINCE"
    );
    for d in active {
        // Stored text came from PAM items: never let it reach the terminal raw.
        println!(
            "{:<14} {:<12} {:<40} {:<24} {}",
            printable(&d.id),
            printable(&d.service),
            printable(&d.host),
            format_utc(d.created),
            format_utc(d.expires)
        );
    }
    println!(
        "\nRevoke one with 'twofactor trust revoke ID', or all with 'twofactor trust revoke --all'."
    );
    Ok(())
}

pub fn trust_revoke(
    ctx: &Ctx,
    user: Option<&str>,
    id: Option<&str>,
    all: bool,
) -> Result<(), Error> {
    let user = ctx.target(user)?;
    let backend = ctx.backend_for_change()?;
    let state = backend.facts(&user)?;
    let which = match (id, all) {
        (_, true) => Revoke::All,
        (Some(id), false) => Revoke::One(id),
        (None, false) => return Err("name a trusted host ID, or use --all".into()),
    };
    if !state.is_enrolled() && !ctx.caller.is_root() {
        // Trust goes with the authenticator: without one there is none to revoke.
        return Err(Error(format!("{user} has no trusted hosts")));
    }
    // Trust lets a host skip the code, so changing it takes a code, as on a fleet.
    let authority = ctx.confirm_change(&*backend, &state)?;
    let removed = backend.revoke_trust(&user, authority, which)?;
    if let Revoke::One(id) = which
        && removed == 0
    {
        return Err(Error(format!(
            "no trusted host with ID {id:?}; see 'twofactor trust list'"
        )));
    }
    ctx.audit(&user, "revoke trusted hosts");
    println!(
        "Revoked {removed} trusted host{} of {user}.",
        if removed == 1 { "" } else { "s" }
    );
    Ok(())
}

/// What `tidy` finds for one state file name.
enum Alias {
    Canonical,
    Of(String),
    NoAccount,
    Unknown(String),
}

fn classify(name: &str) -> Alias {
    match Nss.account(name) {
        Ok(Some(c)) if c == name => Alias::Canonical,
        Ok(Some(c)) => Alias::Of(c),
        Ok(None) => Alias::NoAccount,
        Err(e) => Alias::Unknown(e.to_string()),
    }
}

pub fn tidy(ctx: &Ctx, dry_run: bool) -> Result<(), Error> {
    ctx.require_root("tidy")?;
    let store = ctx.store()?;
    let scan = store.scan()?;
    let mut actions = Vec::new();
    let mut conflicts = 0;
    for user in &scan.users {
        let (action, ok) = match classify(user) {
            Alias::Canonical => continue,
            Alias::Of(canonical) if dry_run => (
                format!("would merge {user}.json into {canonical}.json"),
                true,
            ),
            Alias::Of(canonical) => match store.merge_alias(user, &canonical) {
                Ok(()) => {
                    ctx.audit(&canonical, "merge state of another name");
                    (format!("merged {user}.json into {canonical}.json"), true)
                }
                Err(e) => (
                    format!(
                        "not merged {user}.json into {canonical}.json: {e}; decide which to keep, then 'twofactor reset {user}' or 'twofactor reset {canonical}'"
                    ),
                    false,
                ),
            },
            Alias::NoAccount => (
                format!(
                    "kept {user}.json: no account has this name (remove it with 'twofactor reset {user}')"
                ),
                true,
            ),
            Alias::Unknown(e) => (format!("kept {user}.json: cannot look it up: {e}"), true),
        };
        if !ok {
            conflicts += 1;
        }
        actions.push(json!({"file": format!("{user}.json"), "ok": ok, "action": action}));
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    for (user, file) in &scan.stale_temps {
        if !dry_run {
            store.tidy_user(user)?;
        }
        actions.push(json!({"file": file, "ok": true, "action": format!("{verb} leftover temp file {file}")}));
    }
    for user in &scan.orphan_locks {
        if !dry_run {
            store.tidy_user(user)?;
        }
        actions.push(json!({"file": format!("{user}.lock"), "ok": true, "action": format!("{verb} {user}.lock (no state)")}));
    }
    if ctx.json {
        print_json(&json!({"dry_run": dry_run, "actions": actions}))?;
    } else if actions.is_empty() {
        println!("Nothing to tidy in {}.", store.dir().display());
    } else {
        for a in &actions {
            println!("{}", a["action"].as_str().unwrap_or_default());
        }
    }
    if conflicts > 0 {
        return Err(Error(format!(
            "{conflicts} file{} could not be merged; see above",
            if conflicts == 1 { "" } else { "s" }
        )));
    }
    Ok(())
}
