//! The command line, as clap definitions: the single source for `--help`, the man page
//! and the shell completions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Manage two-factor authentication (TOTP) for Linux logins.
///
/// Users enroll an authenticator app, make backup codes and move to a new phone;
/// administrators (root) inspect, reset and unlock users. Changes to your own account
/// ask for your password first, and a current code when they touch an existing
/// authenticator.
#[derive(Debug, Parser)]
#[command(
    name = "twofactor",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Read this config file instead of /etc/twofactor/config.toml (root only; also
    /// TWOFACTOR_CONFIG).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Machine-readable JSON output, for commands that print data.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// `--user USER`: act on another user (root only).
#[derive(Debug, Args)]
pub struct UserArg {
    /// Act on this user instead of yourself (root only).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Set up an authenticator app: shows a QR code, asks for a code, then shows backup codes.
    Enroll(EnrollArgs),
    /// Show whether two-factor authentication is required and set up.
    Status {
        /// The user to show (root only, for users other than yourself).
        user: Option<String>,
        /// Every user with twofactor state, as a table (root only).
        #[arg(long, conflicts_with = "user")]
        all: bool,
    },
    /// Make new backup codes; all old ones stop working.
    BackupCodes(BackupCodesArgs),
    /// Turn two-factor authentication off for now (the key is kept), or remove the key.
    Disable {
        #[command(flatten)]
        user: UserArg,
        /// Delete the key and the backup codes instead of turning them off for now.
        #[arg(long)]
        remove: bool,
    },
    /// Turn a temporarily disabled authenticator back on.
    Enable(UserArg),
    /// Remove a user's authenticator, backup codes, lock and trusted hosts (root only).
    Reset {
        /// The user to reset.
        user: String,
    },
    /// Clear a user's lockout after too many wrong codes (root only).
    Unlock {
        /// The user to unlock.
        user: String,
    },
    /// List or revoke trusted hosts that skip the code.
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Check a config file; errors are printed as FILE:LINE:COLUMN: message.
    CheckConfig {
        /// The file to check (default: the config in use).
        path: Option<PathBuf>,
    },
    /// Edit the config safely (root only): edits a copy in $VISUAL or $EDITOR, checks it,
    /// and installs it only when it is valid.
    EditConfig,
    /// Explain why a user must or need not use two-factor authentication.
    Explain {
        /// The user to explain (root only, for users other than yourself).
        user: Option<String>,
        /// Explain a login through this PAM service (enforce.services).
        #[arg(long, value_name = "SERVICE")]
        service: Option<String>,
        /// Explain a login from this remote address (PAM_RHOST); without it, a local
        /// login such as the console, su or sudo.
        #[arg(long, value_name = "ADDR")]
        from: Option<String>,
    },
    /// Check PAM stacks, sshd and the policy for 2FA bypasses and lockouts (root only).
    Doctor(DoctorArgs),
    /// Tidy the state directory: merge state kept under another name of an account into
    /// its canonical name, and remove leftover temp and lock files (root only).
    Tidy {
        /// Only show what would be done.
        #[arg(long)]
        dry_run: bool,
    },
    /// Set up and look after the PostgreSQL store a fleet shares (root only).
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Read the fleet's audit: logins, enrollments and admin changes from every host
    /// (root, with the admin config). A host of its own logs to journald or syslog.
    Log(LogArgs),
    /// Take over a ~/.google_authenticator file: same key, scratch codes become backup codes (root only).
    ImportGoogleAuthenticator(ImportArgs),
    /// Write the man page and shell completions into a directory.
    #[command(hide = true)]
    GenerateDocs {
        /// Output directory.
        dir: PathBuf,
    },
}

/// Where to put new backup codes besides the screen.
#[derive(Debug, Args)]
pub struct PaperArgs {
    /// Also write the codes to a printable one-page PDF (A4 and Letter), as you, mode 0600.
    #[arg(long, value_name = "FILE")]
    pub pdf: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BackupCodesArgs {
    #[command(flatten)]
    pub user: UserArg,
    #[command(flatten)]
    pub paper: PaperArgs,
    /// Also write the codes to a text file, as you, mode 0600.
    #[arg(long, value_name = "FILE")]
    pub txt: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EnrollArgs {
    #[command(flatten)]
    pub user: UserArg,
    /// Move to a new phone: the old authenticator keeps working until the new one is verified.
    #[arg(long)]
    pub replace: bool,
    /// Provision without asking for a code (root only); with --json prints the key.
    #[arg(long)]
    pub no_verify: bool,
    /// Also write the QR code as a PNG image to this file.
    #[arg(long, value_name = "FILE", conflicts_with = "qr_svg")]
    pub qr_png: Option<PathBuf>,
    /// Also write the QR code as an SVG image to this file.
    #[arg(long, value_name = "FILE")]
    pub qr_svg: Option<PathBuf>,
    /// Draw the terminal QR code for dark text on a light background.
    #[arg(long)]
    pub invert: bool,
    #[command(flatten)]
    pub paper: PaperArgs,
}

#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// List trusted hosts.
    List(UserArg),
    /// Revoke one trusted host by ID, or all of them.
    Revoke {
        #[command(flatten)]
        user: UserArg,
        /// The ID shown by `twofactor trust list`.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Revoke every trusted host.
        #[arg(long)]
        all: bool,
    },
}

/// The database a fleet shares. init, rotate-key and the host commands connect as a
/// superuser through --admin-url, over the server's Unix socket or verified TLS.
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Create or migrate the roles, schema and functions; running it again changes nothing.
    /// Prints the pg_hba.conf and pg_ident.conf lines to apply.
    Init(FleetInitArgs),
    /// Make a new key file the current encryption key and re-encrypt every secret with it;
    /// list the users whose backup codes still use an older key, or retire that key.
    RotateKey(FleetRotateArgs),
    /// Copy this host's file-store users into the database, with the admin config: the
    /// key moves (enabled or not); backup codes and trusted hosts do not. The file store
    /// is left as it is.
    Import(FleetImportArgs),
    /// Give a host a login role of its own, named after its certificate's CN, in the
    /// group twofactor_hosts; prints the exact pg_ident.conf line to add.
    AddHost(FleetAddHostArgs),
    /// List the hosts' roles with their last activity, sessions and open transactions
    /// (a host can hold a user's row for as long as its transaction stays open).
    Hosts(FleetServer),
    /// End a host's sessions and drop its role, then say which files to change.
    RemoveHost(FleetHostArgs),
}

#[derive(Debug, Args)]
pub struct FleetServer {
    /// A superuser's connection: a URL (postgresql://postgres@db1.example/twofactor) or
    /// key=value pairs (host=/var/run/postgresql user=postgres dbname=twofactor). Over
    /// TCP the server's certificate is always verified; there is no plaintext fallback.
    #[arg(long, value_name = "URL")]
    pub admin_url: String,
    /// Verify the server's TLS certificate against this CA file instead of the system's.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FleetHostArgs {
    /// The host's name, exactly as its certificate's CN has it (web1.example.com).
    #[arg(value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    pub server: FleetServer,
}

#[derive(Debug, Args)]
pub struct FleetAddHostArgs {
    #[command(flatten)]
    pub host: FleetHostArgs,
    /// How many connections the host may hold at once (a login holds one): 10 for a new
    /// host; for a host there already, its limit changes only when this is given. The
    /// hosts' limits together must fit in the server's max_connections.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub connection_limit: Option<u32>,
}

#[derive(Debug, Args)]
pub struct FleetImportArgs {
    /// The file store to read (default: the config's storage.state_dir).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Only show what would be done.
    #[arg(long)]
    pub dry_run: bool,
    /// Where the database has another key for a user, this host's key replaces it.
    #[arg(long)]
    pub replace: bool,
}

#[derive(Debug, Args)]
pub struct FleetArgs {
    #[command(flatten)]
    pub server: FleetServer,
    /// The encryption key: a file on the database server, readable only by its postgres
    /// user, holding 64 hex digits. init registers it when the database has no key yet.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_KEY_FILE)]
    pub key_file: String,
}

#[derive(Debug, Args)]
pub struct FleetInitArgs {
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// The name authenticator apps show for this fleet's accounts ("Example Corp"): one
    /// enrollment serves every host, so it names the fleet, not a host. Stored in the
    /// database; doctor checks each host's enroll.issuer against it.
    #[arg(long, value_name = "NAME")]
    pub issuer: Option<String>,
}

#[derive(Debug, Args)]
pub struct FleetRotateArgs {
    #[command(flatten)]
    pub server: FleetServer,
    /// The new encryption key: a file on the database server, readable only by its
    /// postgres user, holding 64 hex digits. Always named: rotating to the old file by
    /// default would only be refused.
    #[arg(long, value_name = "PATH", required = true)]
    pub key_file: String,
    /// Retire this older key file: void the backup codes still hashed with it (their
    /// users are told at their next login to make new ones) and forget the file, which
    /// can then be deleted from every database node.
    #[arg(long, value_name = "OLD_KEY_FILE")]
    pub retire: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Only rows about this user.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Only rows written by this host (its certificate's CN).
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Only rows with this outcome: totp, backup code, wrong code, replayed, locked,
    /// saved...
    #[arg(long, value_name = "OUTCOME")]
    pub outcome: Option<String>,
    /// Only rows since then: an age (30m, 2h, 7d), a UTC date (2026-12-01), a UTC date
    /// and time (2026-12-01 14:30) or @UNIXSECONDS.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// At most this many rows, the newest.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit: u32,
}

/// Where the fleet's encryption key is looked for on the database server.
pub const DEFAULT_KEY_FILE: &str = "/etc/postgresql/twofactor-fleet.key";

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Read PAM service files from this directory instead of /etc/pam.d.
    #[arg(long, value_name = "DIR")]
    pub pam_dir: Option<PathBuf>,
    /// Check this sshd_config instead of /etc/ssh/sshd_config.
    #[arg(long, value_name = "FILE")]
    pub sshd_config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The user whose file to import.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub user: Option<String>,
    /// Read this file instead of the user's ~/.google_authenticator.
    #[arg(long, value_name = "PATH", conflicts_with = "all")]
    pub file: Option<PathBuf>,
    /// Keep the old file (it is removed after a successful import by default).
    #[arg(long)]
    pub keep: bool,
    /// Import every local user (from /etc/passwd) who has a ~/.google_authenticator file.
    #[arg(long)]
    pub all: bool,
}
