//! `twofactor log`: the fleet's audit, read through the admin role; a host's own
//! files keep theirs in the system log, where journalctl's fields find it.

use serde_json::json;
use twofactor_core::backend::postgresql::AuditFilter;
use twofactor_core::clock::{Clock, SystemClock, format_utc, parse_time};
use twofactor_core::config::BackendKind;
use twofactor_core::text::printable;

use crate::cli::LogArgs;
use crate::context::{Ctx, Error, print_json};

pub fn run(ctx: &Ctx, args: &LogArgs) -> Result<(), Error> {
    ctx.require_root("log")?;
    if ctx.config.storage.backend == BackendKind::Files {
        return Err(Error(format!(
            "this host keeps its audit in the system log, not a database: journalctl {} (or grep pam_twofactor /var/log/auth.log where journald does not run)",
            journalctl_filter(args)
        )));
    }
    let Some(fleet) = ctx.fleet_admin_view() else {
        return Err(
            "the fleet's audit is read with the admin config (a certificate that pg_ident.conf maps to twofactor_admin): twofactor --config /etc/twofactor/admin.toml log ..."
                .into(),
        );
    };
    let since = args
        .since
        .as_deref()
        .map(|t| parse_time(t, SystemClock.now()))
        .transpose()
        .map_err(|e| Error(format!("--since: {e}")))?;
    let filter = AuditFilter {
        user: args.user.as_deref(),
        host: args.host.as_deref(),
        outcome: args.outcome.as_deref(),
        since,
        limit: args.limit,
    };
    let mut rows = fleet.audit(&filter)?;
    // Newest last, as a log reads.
    rows.reverse();
    if ctx.json {
        let rows: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "at": r.at,
                    "time": format_utc(r.at as u64),
                    "host": printable(&r.host),
                    "role": r.role,
                    "user": r.user.as_deref().map(printable),
                    "action": printable(&r.action),
                    "outcome": printable(&r.outcome),
                })
            })
            .collect();
        return print_json(&json!(rows));
    }
    if rows.is_empty() {
        println!("No audit rows match.");
        return Ok(());
    }
    for r in &rows {
        println!(
            "{}  {:<28} {:<16} {:<14} {}",
            format_utc(r.at as u64),
            printable(&r.host),
            printable(r.user.as_deref().unwrap_or("-")),
            printable(&r.action),
            printable(&r.outcome),
        );
    }
    if rows.len() == args.limit as usize {
        println!("(the newest {} rows; --limit N for more)", args.limit);
    }
    Ok(())
}

/// The journalctl match for the same question on a host of its own.
fn journalctl_filter(args: &LogArgs) -> String {
    let mut parts = vec!["SYSLOG_IDENTIFIER=pam_twofactor".to_string()];
    if let Some(u) = &args.user {
        parts.push(format!("TWOFACTOR_USER={u}"));
    }
    if let Some(o) = &args.outcome {
        parts.push(format!("TWOFACTOR_OUTCOME={o}"));
    }
    if let Some(s) = &args.since {
        parts.push(format!("--since '{s}'"));
    }
    parts.join(" ")
}
