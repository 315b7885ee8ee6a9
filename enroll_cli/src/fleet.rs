//! `twofactor fleet`: create, migrate and re-key the PostgreSQL store a fleet shares.

use serde_json::json;
use twofactor_core::backend::postgresql;
use twofactor_core::clock::{Clock, SystemClock, format_utc};
use twofactor_core::text::printable;

use twofactor_core::backend::postgresql::{HbaAdvice, ImportOutcome};
use twofactor_core::backend::{self, AuthenticatorId, Backend};
use twofactor_core::policy::{Directory, Nss};
use twofactor_core::store::Store;

use crate::cli::{
    FleetAddHostArgs, FleetHostArgs, FleetImportArgs, FleetInitArgs, FleetRotateArgs, FleetServer,
};
use crate::context::{Ctx, Error, caller, print_json};

fn require_root() -> Result<(), Error> {
    if caller()?.is_root() {
        Ok(())
    } else {
        Err("twofactor fleet is for root only".into())
    }
}

pub fn init(init: &FleetInitArgs, json: bool) -> Result<(), Error> {
    require_root()?;
    let args = &init.fleet;
    let report = postgresql::init(
        &args.server.admin_url,
        args.server.ca.as_deref(),
        &args.key_file,
        init.issuer.as_deref(),
    )?;
    let access = postgresql::access_lines(&report.dbname);
    let hba = hba_advice(&report.hba);
    if json {
        let (file, line, above) = match &report.hba {
            HbaAdvice::InPlace { file, line } => (file, Some(line), None),
            HbaAdvice::Above { file, line, text } => (file, Some(line), Some(text)),
            HbaAdvice::Missing { file } => (file, None, None),
        };
        return print_json(&json!({
            "dbname": report.dbname,
            "schema_version_before": report.before,
            "schema_version": report.after,
            "changed": report.before != report.after,
            "key_file": report.key_file,
            "issuer": report.issuer,
            "fixed": report.fixed,
            "connection_slots_problem": report.slots.problem(),
            "access": access.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>(),
            "hba": {
                "file": file,
                "in_place": matches!(report.hba, HbaAdvice::InPlace { .. }),
                "line": line,
                "insert_above": above,
                "advice": hba,
            },
        }));
    }
    for f in &report.fixed {
        println!("Fixed: {}", printable(f));
    }
    if let Some(why) = report.slots.problem() {
        eprintln!("warning: {why}");
    }
    match report.before {
        0 => println!(
            "Created the twofactor schema (version {}) in database {}.",
            report.after, report.dbname
        ),
        v if v == report.after => println!(
            "The twofactor schema in database {} is at version {v}: functions and grants refreshed.",
            report.dbname
        ),
        v => println!(
            "Migrated the twofactor schema in database {} from version {v} to {}.",
            report.dbname, report.after
        ),
    }
    println!(
        "Secrets are encrypted with the key in {} on the database server: back it up apart \
         from the database, since a dump cannot be read without it.",
        report.key_file
    );
    match &report.issuer {
        Some(issuer) => println!(
            "The fleet's issuer is \"{}\": set enroll.issuer to it in every host's and admin's config ('twofactor doctor' checks).",
            printable(issuer)
        ),
        None => println!(
            "No issuer is set: run again with --issuer \"Example Corp\" so that authenticator apps name the fleet, not the host a user enrolled on."
        ),
    }
    println!("\nAllow hosts and administrators in by client certificate only:\n\n{access}");
    println!("{hba}\n");
    println!(
        "Then give each host a role of its own ('twofactor fleet add-host NAME' prints its \
         pg_ident.conf line), reload PostgreSQL ({}) and point each host's \
         [storage.postgresql] at it; 'twofactor doctor' checks the connection.",
        reload_command(&report.hba)
    );
    if report.before == 1 {
        println!(
            "\nThis database came from version 1: certificates mapped to the shared role \
             twofactor_host keep working until their host is added. Replace the pg_hba.conf \
             lines naming twofactor_host with the ones above (+twofactor_hosts matches every \
             host role and twofactor_host)."
        );
    }
    Ok(())
}

/// The host's key and certificate request, made on the host.
fn host_key_command(host: &str) -> String {
    format!(
        "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
         -subj \"/CN={host}\" -keyout /etc/twofactor/host.key -out {host}.csr"
    )
}

/// Signing that request with the README's `openssl ca` layout.
fn sign_command(host: &str) -> String {
    format!(
        "openssl ca -config ca.cnf -batch -extensions client -in {host}.csr -out {host}.crt \
         -startdate \"$(date -u -d '1 hour ago' +%Y%m%d%H%M%SZ)\""
    )
}

/// How to reload the cluster whose pg_hba.conf that is: Debian's layout names it.
fn reload_command(advice: &HbaAdvice) -> String {
    let (HbaAdvice::InPlace { file, .. }
    | HbaAdvice::Above { file, .. }
    | HbaAdvice::Missing { file }) = advice;
    reload_for(file)
}

/// How to reload the server whose config file is `file`: its Debian cluster's
/// `pg_ctlcluster VERSION NAME reload`, or SQL elsewhere.
fn reload_for(file: &str) -> String {
    let parts: Vec<&str> = file.split('/').collect();
    match parts.as_slice() {
        ["", "etc", "postgresql", version, cluster, _] => {
            format!("pg_ctlcluster {version} {cluster} reload")
        }
        _ => "SELECT pg_reload_conf()".to_string(),
    }
}

/// Where the pg_hba.conf lines go, in words.
fn hba_advice(advice: &HbaAdvice) -> String {
    match advice {
        HbaAdvice::InPlace { file, line } => format!(
            "{file} already has twofactor's certificate lines (line {line}), above any broader line."
        ),
        HbaAdvice::Above { file, line, text } => format!(
            "In {file}, put the pg_hba.conf lines above line {line} ({}): the first line that \
             matches decides, and that one would ask hosts for a password they do not have.",
            printable(text)
        ),
        HbaAdvice::Missing { file } => format!(
            "Add the pg_hba.conf lines to {file}, above any broader host line you add later."
        ),
    }
}

pub fn add_host(add: &FleetAddHostArgs, json: bool) -> Result<(), Error> {
    require_root()?;
    let args = &add.host;
    let s = &args.server;
    let added = postgresql::add_host(
        &s.admin_url,
        s.ca.as_deref(),
        &args.name,
        add.connection_limit,
    )?;
    let slots = added.slots.problem();
    if json {
        return print_json(&json!({
            "host": added.host,
            "role": added.role,
            "created": added.created,
            "connection_limit": added.connection_limit,
            "connection_slots_problem": slots,
            "pg_ident": added.ident_line,
            "certificate_request": host_key_command(&added.host),
            "certificate_sign": sign_command(&added.host),
        }));
    }
    if added.created {
        println!(
            "Host {} logs in as role {}, a member of {}.",
            added.host,
            added.role,
            postgresql::HOSTS_GROUP
        );
    } else {
        println!("Host {} already has role {}.", added.host, added.role);
    }
    println!(
        "It may hold {} connections at once (--connection-limit).",
        added.connection_limit
    );
    if let Some(why) = &slots {
        eprintln!("warning: {why}");
    }
    println!(
        "\nAdd this line to pg_ident.conf on every database node (exactly; never a regular \
         expression), then reload PostgreSQL:\n\n{}\n",
        added.ident_line
    );
    println!(
        "Its certificate, from the fleet CA (README, 'A CA and certificates'): on the host, a \
         key that never leaves it and a request:\n\n  {}\n\nthen on the CA machine, signed \
         to start an hour ago so that a slow host clock takes it:\n\n  {}\n",
        host_key_command(&added.host),
        sign_command(&added.host)
    );
    // Only a fleet from version 1 has such a line.
    if added.shared_mapping {
        println!(
            "Remove the line mapping {} to {}: the host's next connection then uses its own \
             role. 'twofactor doctor' on the host shows which role it logs in as.",
            added.host,
            postgresql::SHARED_HOST_ROLE
        );
    }
    Ok(())
}

pub fn hosts(args: &FleetServer, json: bool) -> Result<(), Error> {
    require_root()?;
    let (hosts, tls) = postgresql::hosts(&args.admin_url, args.ca.as_deref())?;
    let now = SystemClock.now();
    let warnings = tls_warnings(&tls, &hosts, now);
    if json {
        let rows: Vec<_> = hosts
            .iter()
            .map(|h| {
                json!({
                    "host": printable(&h.host),
                    "role": h.role,
                    "added_at": h.added_at,
                    "last_seen": h.last_seen,
                    "cert_not_after": h.cert_not_after,
                    "sessions": h.sessions,
                    "open_transactions": h.open_transactions,
                    "oldest_transaction_seconds": h.oldest_transaction_s,
                })
            })
            .collect();
        let file = |f: &Option<(String, Result<u64, String>)>, key: &str| {
            f.as_ref().map(|(path, t)| match t {
                Ok(t) => json!({"file": path, key: t}),
                Err(e) => json!({"file": path, "error": e}),
            })
        };
        return print_json(&json!({
            "hosts": rows,
            "server_certificate": file(&tls.cert, "not_after"),
            "crl": file(&tls.crl, "next_update"),
            "warnings": warnings,
        }));
    }
    if hosts.is_empty() {
        println!("No host has a role yet: 'twofactor fleet add-host NAME' adds one.");
    } else {
        println!(
            "{:<32} {:<20} {:<12} {:>8} {:>7}  OLDEST TX",
            "HOST", "LAST LOGIN", "CERT UNTIL", "SESSIONS", "OPEN TX"
        );
    }
    let day = |t: Option<i64>| {
        t.and_then(|t| u64::try_from(t).ok())
            .map_or_else(|| "-".to_string(), |t| format_utc(t)[..10].to_string())
    };
    for h in &hosts {
        let oldest = h
            .oldest_transaction_s
            .map_or_else(|| "-".to_string(), |s| format!("{s:.0} s"));
        let last = h
            .last_seen
            .and_then(|t| u64::try_from(t).ok())
            .map_or_else(|| "never".to_string(), |t| format_utc(t)[..16].to_string());
        println!(
            "{:<32} {:<20} {:<12} {:>8} {:>7}  {}",
            printable(&h.host),
            last,
            day(h.cert_not_after),
            h.sessions,
            h.open_transactions,
            oldest
        );
    }
    if hosts
        .iter()
        .any(|h| h.oldest_transaction_s.is_some_and(|s| s > 10.0))
    {
        println!(
            "\nA transaction open for long holds the rows of the users it touched: logins of \
             those users wait, then fail. 'twofactor fleet remove-host NAME' ends them."
        );
    }
    match &tls.cert {
        Some((path, Ok(t))) => println!(
            "\nServer certificate {path}: valid until {}.",
            format_utc(*t)
        ),
        Some((path, Err(e))) => println!("\nServer certificate {path}: cannot be read: {e}"),
        None => {}
    }
    match &tls.crl {
        Some((path, Ok(t))) => println!("CRL {path}: next update due {}.", format_utc(*t)),
        Some((path, Err(e))) => println!("CRL {path}: cannot be read: {e}"),
        None => println!(
            "No CRL (ssl_crl_file): a stolen host certificate stays valid until it expires; 'twofactor fleet remove-host' still shuts its role out."
        ),
    }
    for w in &warnings {
        println!("warning: {w}");
    }
    Ok(())
}

/// Days ahead that `fleet hosts` warns of a certificate or CRL running out.
const TLS_WARNING_DAYS: u64 = 14;

/// What runs out soon: the server's certificate, its CRL (then PostgreSQL refuses every
/// client certificate) and hosts' certificates.
fn tls_warnings(
    tls: &postgresql::ServerTls,
    hosts: &[postgresql::HostEntry],
    now: u64,
) -> Vec<String> {
    let soon = |t: u64| t < now + TLS_WARNING_DAYS * 86_400;
    let when = |t: u64| {
        if t <= now {
            format!("ran out {}", format_utc(t))
        } else {
            format!(
                "runs out {} (in {} days)",
                format_utc(t),
                (t - now) / 86_400
            )
        }
    };
    let mut out = Vec::new();
    if let Some((path, Ok(t))) = &tls.cert
        && soon(*t)
    {
        out.push(format!(
            "the server certificate {path} {}: hosts then refuse the server; issue a new one from the CA and reload PostgreSQL",
            when(*t)
        ));
    }
    if let Some((path, Ok(t))) = &tls.crl
        && soon(*t)
    {
        out.push(format!(
            "the CRL {path} {}: after that PostgreSQL refuses every client certificate, so every required user is refused; run 'openssl ca -gencrl' again, install it and reload",
            when(*t)
        ));
    }
    for h in hosts {
        if let Some(t) = h.cert_not_after.and_then(|t| u64::try_from(t).ok())
            && soon(t)
        {
            out.push(format!(
                "host {}'s certificate {}: issue it a new one with the same CN",
                printable(&h.host),
                when(t)
            ));
        }
    }
    out
}

pub fn remove_host(args: &FleetHostArgs, json: bool) -> Result<(), Error> {
    require_root()?;
    let s = &args.server;
    let removed = postgresql::remove_host(&s.admin_url, s.ca.as_deref(), &args.name)?;
    if json {
        return print_json(&json!({
            "host": args.name,
            "role": removed.role,
            "sessions_ended": removed.sessions_ended,
            "ident_file": removed.ident_file,
            "reload": reload_for(&removed.ident_file),
        }));
    }
    println!(
        "Dropped role {} and ended its {} session{}.",
        removed.role,
        removed.sessions_ended,
        if removed.sessions_ended == 1 { "" } else { "s" }
    );
    println!(
        "Now remove its line from {} and reload PostgreSQL ({}); revoke its certificate in \
         the CA's CRL if the host is not to be trusted again.",
        removed.ident_file,
        reload_for(&removed.ident_file)
    );
    Ok(())
}

pub fn rotate_key(rotate: &FleetRotateArgs, json: bool) -> Result<(), Error> {
    require_root()?;
    let args = rotate;
    let report = postgresql::rotate_key(
        &args.server.admin_url,
        args.server.ca.as_deref(),
        &args.key_file,
        rotate.retire.as_deref(),
    )?;
    let retired = report.retired.as_ref().map(|(path, users)| {
        let users: Vec<String> = users.iter().map(|u| printable(u).into_owned()).collect();
        (path, users)
    });
    if json {
        let old: Vec<_> = report
            .codes_on_old_keys
            .iter()
            .map(|(path, n)| {
                let users: Vec<String> = users_of(&report, path)
                    .iter()
                    .map(|u| printable(u).into_owned())
                    .collect();
                json!({"key_file": path, "backup_codes": n, "users": users})
            })
            .collect();
        return print_json(&json!({
            "key_file": args.key_file,
            "secrets_reencrypted": report.secrets,
            "backup_codes_on_old_keys": old,
            "retired": retired.as_ref().map(|(path, users)| json!({
                "key_file": path,
                "users_with_voided_codes": users,
            })),
        }));
    }
    println!(
        "{} is now the current key; {} secret{} re-encrypted with it.",
        args.key_file,
        report.secrets,
        if report.secrets == 1 { "" } else { "s" }
    );
    if let Some((path, users)) = &retired {
        println!(
            "Retired {path}: the backup codes of {} user{} voided{}{}. Delete {path} from every database node.",
            users.len(),
            if users.len() == 1 { "" } else { "s" },
            if users.is_empty() { "" } else { ": " },
            users.join(", ")
        );
    }
    if report.codes_on_old_keys.is_empty() {
        println!(
            "No unspent backup code uses {}older key now: older key files can be removed.",
            if retired.is_some() {
                "any other "
            } else {
                "an "
            }
        );
    }
    for (path, n) in &report.codes_on_old_keys {
        // Keyed hashes of codes nobody kept cannot be re-hashed.
        println!(
            "{n} unspent backup code{} still hashed with {path}: keep that file until their users run 'twofactor backup-codes'.",
            if *n == 1 { "" } else { "s" }
        );
        let users: Vec<String> = users_of(&report, path)
            .iter()
            .map(|u| printable(u).into_owned())
            .collect();
        println!("  Their users: {}", users.join(", "));
    }
    for (path, _) in &report.codes_on_old_keys {
        println!(
            "To finish without waiting, void those codes (their users are told at their next login to make new ones):\n  twofactor fleet rotate-key --admin-url '{}'{} --key-file {} --retire {path}",
            args.server.admin_url,
            args.server
                .ca
                .as_ref()
                .map(|ca| format!(" --ca {}", ca.display()))
                .unwrap_or_default(),
            args.key_file
        );
    }
    Ok(())
}

/// The users whose unspent backup codes use the key file at `path`.
fn users_of<'a>(report: &'a postgresql::RotateReport, path: &str) -> &'a [String] {
    report
        .users_on_old_keys
        .iter()
        .find(|(p, _)| p == path)
        .map_or(&[], |(_, users)| users.as_slice())
}

/// One state file's fate in `fleet import`.
struct Row {
    file: String,
    user: String,
    action: &'static str,
    enabled: Option<bool>,
    codes_left_behind: usize,
    note: String,
}

pub fn import(ctx: &Ctx, args: &FleetImportArgs) -> Result<(), Error> {
    ctx.require_root("fleet import")?;
    let db = backend::fleet_admin(&ctx.config)?;
    let dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| ctx.config.storage.state_dir.clone());
    let store = Store::open(&dir)?;
    let mut rows = Vec::new();
    for file_user in store.scan()?.users {
        let file = format!("{file_user}.json");
        let skip = |user: &str, note: String| Row {
            file: file.clone(),
            user: user.to_string(),
            action: "skipped",
            enabled: None,
            codes_left_behind: 0,
            note,
        };
        // Keyed by the account's canonical name, as every host keys it.
        let user = match Nss.account(&file_user) {
            Ok(Some(name)) => name,
            Ok(None) => {
                rows.push(skip(&file_user, "no account has this name".into()));
                continue;
            }
            Err(e) => {
                rows.push(skip(&file_user, format!("cannot look it up: {e}")));
                continue;
            }
        };
        let state = match store.load(&file_user) {
            Ok(s) => s,
            Err(e) => {
                rows.push(skip(&user, format!("cannot read it: {e}")));
                continue;
            }
        };
        let Some(auth) = &state.authenticator else {
            rows.push(skip(&user, "no authenticator".into()));
            continue;
        };
        let outcome = if args.dry_run {
            let facts = db.facts(&user)?;
            ImportOutcome::planned(
                facts.authenticator_id(),
                &AuthenticatorId::of(&auth.secret),
                args.replace,
            )
        } else {
            let outcome = db.import_authenticator(&user, auth, args.replace)?;
            ctx.audit(&user, "fleet import");
            outcome
        };
        let codes_left_behind = state.backup_codes_left();
        let note = match outcome {
            ImportOutcome::Conflict => {
                "the database has another key for this user; --replace lets this host's key win"
                    .into()
            }
            ImportOutcome::Merged => "the same key: the later replay step is kept".into(),
            _ if codes_left_behind > 0 => {
                format!("{codes_left_behind} backup codes stay behind (hashed for this host only)")
            }
            _ => String::new(),
        };
        rows.push(Row {
            file,
            user,
            action: outcome.as_str(),
            enabled: Some(auth.enabled),
            codes_left_behind,
            note,
        });
    }
    // Whoever the database holds no backup codes for after this needs new ones.
    let mut need_codes = Vec::new();
    for r in rows
        .iter()
        .filter(|r| r.action != "skipped" && r.action != "conflict")
    {
        let left = if args.dry_run && r.action != "merged" {
            0
        } else {
            db.facts(&r.user)?.backup_codes_left
        };
        if left == 0 && !need_codes.contains(&r.user) {
            need_codes.push(r.user.clone());
        }
    }
    let conflicts = rows.iter().filter(|r| r.action == "conflict").count();
    if ctx.json {
        let users: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({"file": r.file, "user": r.user, "action": r.action, "enabled": r.enabled,
                       "backup_codes_left_behind": r.codes_left_behind, "note": r.note})
            })
            .collect();
        print_json(&json!({
            "dry_run": args.dry_run,
            "state_dir": dir,
            "users": users,
            "need_backup_codes": need_codes,
            "conflicts": conflicts,
        }))?;
    } else {
        print_import(&rows, &need_codes, args.dry_run, &dir);
    }
    if conflicts > 0 {
        return Err(Error(format!(
            "{conflicts} user{} kept the database's key; decide which phone each uses, then run again with --replace if it is this host's",
            if conflicts == 1 { "" } else { "s" }
        )));
    }
    Ok(())
}

fn print_import(rows: &[Row], need_codes: &[String], dry_run: bool, dir: &std::path::Path) {
    if rows.is_empty() {
        println!("No user state in {}.", dir.display());
        return;
    }
    let would = if dry_run { "would be " } else { "" };
    for r in rows {
        let enabled = match r.enabled {
            Some(false) => " (turned off, and stays off)",
            _ => "",
        };
        let note = if r.note.is_empty() {
            String::new()
        } else {
            format!(": {}", r.note)
        };
        println!(
            "{} -> {}: {would}{}{enabled}{note}",
            r.file, r.user, r.action
        );
    }
    println!("\nTrusted hosts never move: trust granted on one host must not count on every host.");
    if !need_codes.is_empty() {
        println!(
            "These users {}have no backup codes in the database; each should run 'twofactor backup-codes': {}",
            if dry_run { "would " } else { "" },
            need_codes.join(", ")
        );
    }
    if !dry_run {
        println!(
            "{} is unchanged. Next: set [storage] backend = \"postgresql\" in this host's config, \
             check with 'twofactor doctor', then remove the users' state files there (*.json; \
             keep last-good-config.toml, which logins fall back on if the config breaks).",
            dir.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_names_the_servers_own_cluster() {
        assert_eq!(
            reload_for("/etc/postgresql/15/walk4/pg_ident.conf"),
            "pg_ctlcluster 15 walk4 reload"
        );
        assert_eq!(
            reload_for("/etc/postgresql/16/main/pg_hba.conf"),
            "pg_ctlcluster 16 main reload"
        );
        assert_eq!(
            reload_for("/var/lib/pgsql/data/pg_ident.conf"),
            "SELECT pg_reload_conf()"
        );
    }
}
