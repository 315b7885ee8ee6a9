//! `twofactor fleet`: create, migrate and re-key the PostgreSQL store a fleet shares.

use serde_json::json;
use twofactor_core::backend::postgresql;

use crate::cli::{FleetArgs, FleetCommand};
use crate::context::{Error, caller, print_json};

pub fn run(command: &FleetCommand, json: bool) -> Result<(), Error> {
    if !caller()?.is_root() {
        return Err("twofactor fleet is for root only".into());
    }
    match command {
        FleetCommand::Init(args) => init(args, json),
        FleetCommand::RotateKey(args) => rotate_key(args, json),
    }
}

fn init(args: &FleetArgs, json: bool) -> Result<(), Error> {
    let report = postgresql::init(&args.admin_url, args.ca.as_deref(), &args.key_file)?;
    let access = postgresql::access_lines(&report.dbname);
    if json {
        return print_json(&json!({
            "dbname": report.dbname,
            "schema_version_before": report.before,
            "schema_version": report.after,
            "changed": report.before != report.after,
            "key_file": report.key_file,
            "access": access.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>(),
        }));
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
    println!("\nAllow hosts and administrators in by client certificate only:\n\n{access}");
    println!(
        "Then reload PostgreSQL (pg_ctlcluster 15 main reload) and point each host's \
         [storage.postgresql] at it; 'twofactor doctor' checks the connection."
    );
    Ok(())
}

fn rotate_key(args: &FleetArgs, json: bool) -> Result<(), Error> {
    let report = postgresql::rotate_key(&args.admin_url, args.ca.as_deref(), &args.key_file)?;
    if json {
        let old: Vec<_> = report
            .codes_on_old_keys
            .iter()
            .map(|(path, n)| json!({"key_file": path, "backup_codes": n}))
            .collect();
        return print_json(&json!({
            "key_file": args.key_file,
            "secrets_reencrypted": report.secrets,
            "backup_codes_on_old_keys": old,
        }));
    }
    println!(
        "{} is now the current key; {} secret{} re-encrypted with it.",
        args.key_file,
        report.secrets,
        if report.secrets == 1 { "" } else { "s" }
    );
    if report.codes_on_old_keys.is_empty() {
        println!("No backup code uses an older key: older key files can be removed.");
    }
    for (path, n) in &report.codes_on_old_keys {
        // Keyed hashes of codes nobody kept cannot be re-hashed.
        println!(
            "{n} unspent backup code{} still hashed with {path}: keep that file until their users run 'twofactor backup-codes'.",
            if *n == 1 { "" } else { "s" }
        );
    }
    Ok(())
}
