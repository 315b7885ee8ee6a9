//! Doctor's checks for a host on the fleet database: reaching it with this host's
//! credentials, the certificates, the schema version, that the host role cannot read
//! secrets, the database's clock, and PAM lines that would let logins through while the
//! database is down.

use super::pam::{Control, Item, MODULE, PamDir, PamFiles, auth_tree};
use super::{Finding, Level};

/// Days before a client certificate's expiry that doctor starts to warn.
pub const EXPIRY_WARNING_DAYS: u64 = 30;
/// A database clock this far from a synchronised host's draws a warning.
pub const CLOCK_WARNING_SECONDS: u64 = 10;

/// One server on its own: `(primary, round trip in µs)`, or why it cannot be reached.
pub type ServerSeen = Result<(bool, u64), String>;

/// What the command found out about the fleet database from this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetFacts {
    /// The servers, as configured (`db1:5432, db2:5432`), for locations.
    pub servers: String,
    /// Connecting with this host's certificate and key, verifying the server against
    /// `ca`: the error if it failed.
    pub connect: Result<(), String>,
    /// When this host's client certificate expires (Unix seconds), or why it is unknown.
    pub cert_expires: Result<u64, String>,
    /// The schema version in the database, once connected.
    pub schema_version: Option<i32>,
    /// The schema version this twofactor speaks.
    pub expected_version: i32,
    /// A read of the secrets table as this host: `Ok` if it was allowed (it must not be),
    /// or the server's refusal.
    pub secrets_probe: Option<Result<(), String>>,
    /// The catalog check as this host runs it, once connected: the problems found, or
    /// why it could not run.
    pub catalog: Option<Result<Vec<String>, String>>,
    /// Each configured server on its own: whether it is the primary and one round trip
    /// in microseconds (`Ok((primary, round_trip_us))`), or why it cannot be reached.
    pub servers_seen: Vec<(String, ServerSeen)>,
    /// The role this host logs in as, once connected.
    pub login_role: Option<String>,
    /// The database's clock (Unix seconds), once connected.
    pub db_time: Option<u64>,
    /// This host's clock.
    pub now: u64,
    /// Whether this host's clock is NTP-synchronised (`None`: cannot tell).
    pub synchronised: Option<bool>,
    /// How far a code may be off and still be accepted: window × period, in seconds.
    pub window_seconds: u64,
    /// The fleet's issuer in the database (`Some(None)`: none set), once connected.
    pub fleet_issuer: Option<Option<String>>,
    /// This config's `enroll.issuer`.
    pub config_issuer: Option<String>,
    /// Why the hosts' connection limits do not fit in the server's slots (what to
    /// raise), once connected; `Some(None)`: they fit.
    pub slots_problem: Option<Option<String>>,
}

/// One line saying what is fine, when the database was reached: doctor prints it when
/// the fleet checks found nothing to warn of.
pub fn fleet_ok(f: &FleetFacts) -> Option<String> {
    f.connect.as_ref().ok()?;
    let mut parts = vec![format!(
        "database reachable{}",
        f.login_role
            .as_deref()
            .map(|r| format!(" as {r}"))
            .unwrap_or_default()
    )];
    if let Some(v) = f.schema_version {
        parts.push(format!("schema version {v}"));
    }
    if let Ok(expires) = f.cert_expires {
        parts.push(format!(
            "this host's certificate expires in {} days",
            expires.saturating_sub(f.now) / 86_400
        ));
    }
    if let Some(db) = f.db_time {
        parts.push(format!("clocks {} s apart", db.abs_diff(f.now)));
    }
    if let Some(Some(issuer)) = &f.fleet_issuer {
        parts.push(format!("issuer \"{}\"", crate::text::printable(issuer)));
    }
    Some(parts.join(", "))
}

/// The fleet checks on gathered facts.
pub fn check_fleet(f: &FleetFacts) -> Vec<Finding> {
    let mut out = Vec::new();
    let at = format!("[storage.postgresql] {}", f.servers);
    if let Err(e) = &f.connect {
        let tls = [
            "certificate",
            "TLS",
            "tls",
            "SSL",
            "ssl",
            "hostname",
            "IP address",
        ]
        .iter()
        .any(|w| e.contains(w));
        let fix = if tls {
            "the server's certificate must be signed by the configured ca and name the host as written in hosts; this host's certificate must be one pg_ident.conf maps to this host's own role (the line 'twofactor fleet add-host NAME' prints)"
        } else {
            "check that the server runs and listens there, the firewall, and pg_hba.conf (hostssl ... cert map=twofactor)"
        };
        out.push(Finding::new(
            Level::Error,
            if tls { "fleet-tls" } else { "fleet-unreachable" },
            &at,
            format!(
                "cannot reach the database with this host's credentials, so every required user is refused: {e}"
            ),
            fix,
        ));
    }
    match f.cert_expires {
        Ok(expires) if expires <= f.now => out.push(Finding::new(
            Level::Error,
            "fleet-cert-expired",
            "[storage.postgresql] cert",
            "this host's client certificate has expired: the database refuses it, and every required user is refused",
            "issue a new certificate for this host (same CN) and install it",
        )),
        Ok(expires) if expires - f.now < EXPIRY_WARNING_DAYS * 86_400 => out.push(Finding::new(
            Level::Warning,
            "fleet-cert-expiring",
            "[storage.postgresql] cert",
            match (expires - f.now) / 86_400 {
                0 => "this host's client certificate expires within a day; after that every required user is refused".to_string(),
                1 => "this host's client certificate expires in 1 day; after that every required user is refused".to_string(),
                days => format!("this host's client certificate expires in {days} days; after that every required user is refused"),
            },
            "issue a new certificate for this host (same CN) and install it before then",
        )),
        Ok(_) => {}
        Err(ref e) => out.push(Finding::new(
            Level::Error,
            "fleet-cert-unreadable",
            "[storage.postgresql] cert",
            format!("cannot read this host's client certificate: {e}"),
            "install the certificate as a root-owned PEM file",
        )),
    }
    match f.schema_version {
        Some(v) if v < f.expected_version => out.push(Finding::new(
            Level::Error,
            "fleet-schema",
            &at,
            format!(
                "the database has schema version {v}, this twofactor needs {}",
                f.expected_version
            ),
            "run 'twofactor fleet init --admin-url ...' to migrate it",
        )),
        Some(v) if v > f.expected_version => out.push(Finding::new(
            Level::Error,
            "fleet-schema",
            &at,
            format!(
                "the database has schema version {v}, newer than this twofactor ({})",
                f.expected_version
            ),
            "upgrade twofactor on this host",
        )),
        _ => {}
    }
    match &f.secrets_probe {
        Some(Ok(())) => out.push(Finding::new(
            Level::Error,
            "fleet-secrets-readable",
            &at,
            "this host can read the secrets table: a rooted host could copy every user's key",
            "connect each host as its own role (twofactor fleet add-host NAME) and nothing else, and run 'twofactor fleet init' to restore the grants",
        )),
        Some(Err(e)) if !e.contains("permission denied") => out.push(Finding::new(
            Level::Warning,
            "fleet-secrets-probe",
            &at,
            format!("could not tell whether this host can read secrets: {e}"),
            "run 'twofactor fleet init' to check the schema",
        )),
        _ => {}
    }
    match &f.catalog {
        Some(Ok(problems)) => {
            for p in problems {
                out.push(Finding::new(
                    Level::Error,
                    "fleet-catalog",
                    &at,
                    format!(
                        "the database lets a connecting role run code as another, or reach what it must not: {}",
                        crate::text::printable(p)
                    ),
                    "run 'twofactor fleet init --admin-url ...' on the admin machine: it closes this, or says why it cannot",
                ));
            }
        }
        Some(Err(e)) => out.push(Finding::new(
            Level::Warning,
            "fleet-catalog",
            &at,
            format!("could not check the database's grants and functions: {e}"),
            "run 'twofactor fleet init' to check the schema",
        )),
        None => {}
    }
    for (server, seen) in &f.servers_seen {
        let message = match seen {
            Ok((primary, us)) => format!(
                "{server}: {}, round trip {:.1} ms",
                if *primary { "primary" } else { "standby" },
                *us as f64 / 1000.0
            ),
            Err(e) => format!("{server}: cannot be reached: {e}"),
        };
        out.push(Finding::new(
            Level::Info,
            "fleet-server",
            "[storage.postgresql] hosts",
            message,
            "",
        ));
    }
    if let Some((first, Err(e))) = f.servers_seen.first()
        && f.servers_seen.iter().any(|(_, s)| s.is_ok())
    {
        out.push(Finding::new(
            Level::Warning,
            "fleet-first-server-down",
            "[storage.postgresql] hosts",
            format!(
                "the first listed server, {first}, cannot be reached ({e}) while another answers: every login waits for it first, up to connect_timeout_ms per address"
            ),
            "bring it back, or list the servers that answer first",
        ));
    }
    if f.login_role.as_deref() == Some("twofactor_host") {
        out.push(Finding::new(
            Level::Warning,
            "fleet-shared-role",
            "[storage.postgresql] cert",
            "this host logs in through the shared role twofactor_host: hosts that share a role can read each other's queries and end each other's sessions",
            "on the admin machine run 'twofactor fleet add-host' with this host's certificate CN, add the pg_ident.conf line it prints, and reload PostgreSQL",
        ));
    }
    match (&f.fleet_issuer, &f.config_issuer) {
        (Some(Some(fleet)), Some(own)) if fleet != own => out.push(Finding::new(
            Level::Error,
            "fleet-issuer",
            "[enroll] issuer",
            format!(
                "enroll.issuer is \"{}\" but the fleet's is \"{}\": enrolments use the fleet's, and anything labelled from this config names another",
                crate::text::printable(own),
                crate::text::printable(fleet)
            ),
            format!("set issuer = \"{}\" in [enroll]", crate::text::printable(fleet)),
        )),
        (Some(None), _) => out.push(Finding::new(
            Level::Warning,
            "fleet-issuer",
            &at,
            "the fleet has no issuer: each enrolment is labelled by the config of the host it happens on, or that host's name, so one account shows under different names",
            "on the admin machine: twofactor fleet init --admin-url ... --issuer \"Example Corp\"",
        )),
        _ => {}
    }
    // Beyond the TOTP window one of the two clocks refuses every code, whichever it is:
    // said whether or not this host is synchronised, since that is when it matters most.
    if let Some(db) = f.db_time {
        let off = db.abs_diff(f.now);
        let synced = f.synchronised == Some(true);
        if off > f.window_seconds {
            out.push(Finding::new(
                Level::Error,
                "fleet-clock",
                &at,
                if synced {
                    format!(
                        "the database's clock is {off} s off this NTP-synchronised host's; codes are checked on the database's clock, so everyone's codes are refused"
                    )
                } else {
                    format!(
                        "the database's clock and this host's are {off} s apart, more than the code window ({} s), and this host is not NTP-synchronised: codes are checked on the database's clock, so if it is the wrong one everyone's codes are refused",
                        f.window_seconds
                    )
                },
                if synced {
                    "synchronise the database server's clock (NTP)"
                } else {
                    "synchronise both clocks (NTP), this host's first"
                },
            ));
        } else if off > CLOCK_WARNING_SECONDS && synced {
            out.push(Finding::new(
                Level::Warning,
                "fleet-clock",
                &at,
                format!(
                    "the database's clock is {off} s off this NTP-synchronised host's; codes are checked on the database's clock"
                ),
                "synchronise the database server's clock (NTP)",
            ));
        }
    }
    if let Some(Some(problem)) = &f.slots_problem {
        out.push(Finding::new(
            Level::Warning,
            "fleet-connection-slots",
            &at,
            problem.clone(),
            "raise max_connections, or lower the hosts' limits: fleet add-host NAME --connection-limit N ('fleet hosts' shows who holds connections, 'fleet remove-host' ends a host's)",
        ));
    }
    out
}

/// PAM lines that would let a login through while the database is down: pam_twofactor's
/// own line mapping `authinfo_unavail` (or, with none, `default`) to `ignore`, `ok` or
/// `done`, anywhere in a stack, includes and substacks followed.
pub fn check_unavailable_mapping(dir: &PamDir, files: &dyn PamFiles) -> Vec<Finding> {
    fn walk(items: &[Item], out: &mut Vec<Finding>) {
        for item in items {
            match item {
                Item::Substack { items, .. } => walk(items, out),
                Item::Line(line) if line.module == MODULE => {
                    let Control::Brackets(kv) = &line.control else {
                        continue;
                    };
                    let action = kv
                        .iter()
                        .find(|(k, _)| k == "authinfo_unavail")
                        .or_else(|| kv.iter().find(|(k, _)| k == "default"))
                        .map(|(_, v)| v.as_str());
                    if let Some(a @ ("ignore" | "ok" | "done")) = action {
                        out.push(Finding::new(
                            Level::Error,
                            "fleet-unavailable-passes",
                            &line.location,
                            format!(
                                "pam_twofactor's authinfo_unavail maps to {a}: while the database is down, logins pass without a code"
                            ),
                            "map authinfo_unavail=die (or bad), or use \"required\"",
                        ));
                    }
                }
                Item::Line(_) => {}
            }
        }
    }
    let mut out = Vec::new();
    let Ok(names) = &dir.names else {
        return out;
    };
    let mut names = names.clone();
    names.sort();
    for name in names.iter().filter(|n| !n.starts_with('.')) {
        if let Ok(tree) = auth_tree(files, name) {
            walk(&tree, &mut out);
        }
    }
    // A line in common-auth shows once for every service that includes it.
    out.sort_by(|a, b| a.location.cmp(&b.location));
    out.dedup_by(|a, b| a.location == b.location);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::ids;
    use std::collections::HashMap;

    const NOW: u64 = 1_800_000_000;

    fn healthy() -> FleetFacts {
        FleetFacts {
            servers: "db1:5432".into(),
            connect: Ok(()),
            cert_expires: Ok(NOW + 365 * 86_400),
            schema_version: Some(1),
            expected_version: 1,
            secrets_probe: Some(Err("permission denied for table users".into())),
            catalog: Some(Ok(Vec::new())),
            login_role: Some("tf_host_web1".into()),
            servers_seen: Vec::new(),
            db_time: Some(NOW + 1),
            now: NOW,
            synchronised: Some(true),
            window_seconds: 30,
            fleet_issuer: Some(Some("Example Corp".into())),
            config_issuer: Some("Example Corp".into()),
            slots_problem: Some(None),
        }
    }

    #[test]
    fn a_healthy_fleet_host_has_no_findings() {
        assert!(check_fleet(&healthy()).is_empty());
    }

    #[test]
    fn hosts_limits_beyond_the_servers_slots_draw_a_warning() {
        let mut f = healthy();
        f.slots_problem = Some(Some("raise max_connections to at least 318".into()));
        let found = check_fleet(&f);
        assert_eq!(ids(&found), ["fleet-connection-slots"]);
        assert!(found[0].message.contains("318"), "{}", found[0].message);
    }

    #[test]
    fn a_healthy_fleet_host_says_what_is_fine() {
        let ok = fleet_ok(&healthy()).unwrap();
        assert_eq!(
            ok,
            "database reachable as tf_host_web1, schema version 1, this host's certificate \
             expires in 365 days, clocks 1 s apart, issuer \"Example Corp\""
        );
        let mut f = healthy();
        f.connect = Err("connection refused".into());
        assert_eq!(fleet_ok(&f), None);
    }

    #[test]
    fn the_issuer_must_be_the_fleets() {
        let mut f = healthy();
        f.config_issuer = Some("web1".into());
        let found = check_fleet(&f);
        assert_eq!(ids(&found), ["fleet-issuer"]);
        assert_eq!(found[0].severity, Level::Error);
        assert!(found[0].fix.contains("Example Corp"));
        // No issuer of its own: the fleet's is used.
        f.config_issuer = None;
        assert!(check_fleet(&f).is_empty());
        f.fleet_issuer = Some(None);
        let found = check_fleet(&f);
        assert_eq!(ids(&found), ["fleet-issuer"]);
        assert_eq!(found[0].severity, Level::Warning);
    }

    #[test]
    fn unreachable_and_tls_failures_are_errors_with_their_own_fix() {
        let mut f = healthy();
        f.connect = Err("connection refused".into());
        assert_eq!(ids(&check_fleet(&f)), ["fleet-unreachable"]);
        f.connect = Err("error performing TLS handshake: certificate verify failed".into());
        let found = check_fleet(&f);
        assert_eq!(ids(&found), ["fleet-tls"]);
        assert!(found[0].fix.contains("signed by the configured ca"));
        f.connect = Err("hostname mismatch".into());
        assert_eq!(ids(&check_fleet(&f)), ["fleet-tls"]);
    }

    #[test]
    fn the_client_certificate_warns_30_days_ahead_and_fails_once_expired() {
        let mut f = healthy();
        f.cert_expires = Ok(NOW + 31 * 86_400);
        assert!(check_fleet(&f).is_empty());
        f.cert_expires = Ok(NOW + 29 * 86_400);
        let found = check_fleet(&f);
        assert_eq!(ids(&found), ["fleet-cert-expiring"]);
        assert!(found[0].message.contains("expires in 29 days"));
        f.cert_expires = Ok(NOW);
        assert_eq!(ids(&check_fleet(&f)), ["fleet-cert-expired"]);
        f.cert_expires = Err("no such file".into());
        assert_eq!(ids(&check_fleet(&f)), ["fleet-cert-unreadable"]);
    }

    #[test]
    fn a_schema_of_another_version_says_which_side_to_upgrade() {
        let mut f = healthy();
        f.schema_version = Some(0);
        assert!(check_fleet(&f)[0].fix.contains("fleet init"));
        f.schema_version = Some(2);
        assert!(check_fleet(&f)[0].fix.contains("upgrade twofactor"));
    }

    #[test]
    fn a_host_that_can_read_secrets_is_an_error() {
        let mut f = healthy();
        f.secrets_probe = Some(Ok(()));
        assert_eq!(ids(&check_fleet(&f)), ["fleet-secrets-readable"]);
        f.secrets_probe = Some(Err("relation does not exist".into()));
        assert_eq!(ids(&check_fleet(&f)), ["fleet-secrets-probe"]);
    }

    #[test]
    fn each_catalog_problem_is_an_error_and_the_shared_role_a_warning() {
        let mut f = healthy();
        f.catalog = Some(Ok(vec![
            "PUBLIC may TEMPORARY in database twofactor".into(),
            "twofactor_owner is a member of pg_read_server_files".into(),
        ]));
        let found = check_fleet(&f);
        assert_eq!(ids(&found), ["fleet-catalog", "fleet-catalog"]);
        assert!(found[1].message.contains("pg_read_server_files"));
        assert!(found.iter().all(|x| x.severity == Level::Error));
        f.catalog = Some(Ok(Vec::new()));
        f.login_role = Some("twofactor_host".into());
        assert_eq!(ids(&check_fleet(&f)), ["fleet-shared-role"]);
    }

    #[test]
    fn each_server_is_reported_and_a_dead_first_one_warns() {
        let mut f = healthy();
        f.servers_seen = vec![
            ("db1:5432".into(), Ok((true, 1250))),
            ("db2:5432".into(), Ok((false, 2000))),
        ];
        let found = check_fleet(&f);
        assert_eq!(ids(&found), ["fleet-server", "fleet-server"]);
        assert!(
            found[0]
                .message
                .contains("db1:5432: primary, round trip 1.2 ms"),
            "{}",
            found[0].message
        );
        assert!(found[1].message.contains("standby"));
        f.servers_seen[0].1 = Err("no answer within 2000 ms (tls)".into());
        let found = check_fleet(&f);
        assert_eq!(
            ids(&found),
            ["fleet-server", "fleet-server", "fleet-first-server-down"]
        );
        assert!(found[2].message.contains("db1:5432"));
        // With nothing answering, the connection error says it all: no warning on top.
        f.servers_seen[1].1 = Err("refused".into());
        assert!(!ids(&check_fleet(&f)).contains(&"fleet-first-server-down"));
    }

    #[test]
    fn the_database_clock_is_judged_against_any_host_beyond_the_window() {
        let mut f = healthy();
        f.db_time = Some(NOW + 11);
        let found = check_fleet(&f);
        assert_eq!(ids(&found), ["fleet-clock"]);
        assert_eq!(found[0].severity, Level::Warning);
        f.db_time = Some(NOW - 31);
        assert_eq!(check_fleet(&f)[0].severity, Level::Error);
        // Unsynchronised: a small skew proves nothing, one beyond the window is an error.
        for unsynced in [Some(false), None] {
            f.synchronised = unsynced;
            f.db_time = Some(NOW + 11);
            assert!(check_fleet(&f).is_empty(), "{unsynced:?}");
            f.db_time = Some(NOW - 31);
            let found = check_fleet(&f);
            assert_eq!(ids(&found), ["fleet-clock"]);
            assert_eq!(found[0].severity, Level::Error);
            assert!(
                found[0].message.contains("not NTP-synchronised"),
                "{}",
                found[0].message
            );
        }
    }

    struct Files(HashMap<&'static str, &'static str>);

    impl PamFiles for Files {
        fn read(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|s| s.to_string())
        }
    }

    fn dir(names: &[&str]) -> PamDir {
        PamDir {
            path: "/etc/pam.d".into(),
            names: Ok(names.iter().map(|n| n.to_string()).collect()),
        }
    }

    #[test]
    fn authinfo_unavail_mapped_to_pass_is_found_in_the_line_or_through_includes() {
        let files = Files(HashMap::from([
            (
                "sshd",
                "auth requisite pam_unix.so\nauth [success=ok authinfo_unavail=ignore default=bad] pam_twofactor.so\n",
            ),
            ("login", "auth include common-auth\n"),
            (
                "common-auth",
                "auth requisite pam_unix.so\nauth [success=ok default=ignore] pam_twofactor.so\n",
            ),
            ("su", "auth substack common-auth\n"),
            (
                "sudo",
                "auth requisite pam_unix.so\nauth [success=ok authinfo_unavail=die default=ignore] pam_twofactor.so\nauth required pam_twofactor.so\n",
            ),
        ]));
        let found = check_unavailable_mapping(
            &dir(&["sshd", "login", "common-auth", "su", "sudo"]),
            &files,
        );
        let at: Vec<_> = found.iter().map(|f| f.location.as_str()).collect();
        assert_eq!(at, ["common-auth:2", "sshd:2"], "{found:#?}");
        assert!(found[1].message.contains("maps to ignore"));
    }
}
