# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_twofactor_global_optspecs
    string join \n config= json h/help V/version
end

function __fish_twofactor_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_twofactor_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_twofactor_using_subcommand
    set -l cmd (__fish_twofactor_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c twofactor -n "__fish_twofactor_needs_command" -l config -d 'Read this config file instead of /etc/twofactor/config.toml (root only; also TWOFACTOR_CONFIG)' -r -F
complete -c twofactor -n "__fish_twofactor_needs_command" -l json -d 'Machine-readable JSON output, for commands that print data'
complete -c twofactor -n "__fish_twofactor_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c twofactor -n "__fish_twofactor_needs_command" -s V -l version -d 'Print version'
complete -c twofactor -n "__fish_twofactor_needs_command" -f -a "enroll" -d 'Set up an authenticator app: shows a QR code, asks for a code, then shows backup codes'
complete -c twofactor -n "__fish_twofactor_needs_command" -f -a "status" -d 'Show whether two-factor authentication is required and set up'
complete -c twofactor -n "__fish_twofactor_needs_command" -f -a "backup-codes" -d 'Make new backup codes; all old ones stop working'
complete -c twofactor -n "__fish_twofactor_needs_command" -f -a "disable" -d 'Turn two-factor authentication off for now (the key is kept), or remove the key'
complete -c twofactor -n "__fish_twofactor_needs_command" -f -a "enable" -d 'Turn a temporarily disabled authenticator back on'
complete -c twofactor -n "__fish_twofactor_needs_command" -f -a "reset" -d 'Remove a user\'s authenticator, backup codes, lock and trusted hosts (root only)'
complete -c twofactor -n "__fish_twofactor_needs_command" -f -a "unlock" -d 'Clear a user\'s lockout after too many wrong codes (root only)'
complete -c twofactor -n "__fish_twofactor_needs_command" -f -a "trust" -d 'List or revoke trusted hosts that skip the code'
complete -c twofactor -n "__fish_twofactor_needs_command" -f -a "check-config" -d 'Check a config file; errors are printed as FILE:LINE:COLUMN: message'
complete -c twofactor -n "__fish_twofactor_needs_command" -f -a "edit-config" -d 'Edit the config safely (root only): edits a copy in $VISUAL or $EDITOR, checks it, and installs it only when it is valid'
complete -c twofactor -n "__fish_twofactor_needs_command" -f -a "explain" -d 'Explain why a user must or need not use two-factor authentication'
complete -c twofactor -n "__fish_twofactor_needs_command" -f -a "doctor" -d 'Check PAM stacks, sshd and the policy for 2FA bypasses and lockouts (root only)'
complete -c twofactor -n "__fish_twofactor_needs_command" -f -a "tidy" -d 'Tidy the state directory: merge state kept under another name of an account into its canonical name, and remove leftover temp and lock files (root only)'
complete -c twofactor -n "__fish_twofactor_needs_command" -f -a "fleet" -d 'Set up and look after the PostgreSQL store a fleet shares (root only)'
complete -c twofactor -n "__fish_twofactor_needs_command" -f -a "log" -d 'Read the fleet\'s audit: logins, enrollments and admin changes from every host (root, with the admin config). A host of its own logs to journald or syslog'
complete -c twofactor -n "__fish_twofactor_needs_command" -f -a "import-google-authenticator" -d 'Take over a ~/.google_authenticator file: same key, scratch codes become backup codes (root only)'
complete -c twofactor -n "__fish_twofactor_needs_command" -f -a "generate-docs" -d 'Write the man page and shell completions into a directory'
complete -c twofactor -n "__fish_twofactor_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c twofactor -n "__fish_twofactor_using_subcommand enroll" -l user -d 'Act on this user instead of yourself (root only)' -r
complete -c twofactor -n "__fish_twofactor_using_subcommand enroll" -l qr-png -d 'Also write the QR code as a PNG image to this file' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand enroll" -l qr-svg -d 'Also write the QR code as an SVG image to this file' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand enroll" -l pdf -d 'Also write the codes to a printable one-page PDF (A4 and Letter), as you, mode 0600' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand enroll" -l config -d 'Read this config file instead of /etc/twofactor/config.toml (root only; also TWOFACTOR_CONFIG)' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand enroll" -l replace -d 'Move to a new phone: the old authenticator keeps working until the new one is verified'
complete -c twofactor -n "__fish_twofactor_using_subcommand enroll" -l no-verify -d 'Provision without asking for a code (root only); with --json prints the key'
complete -c twofactor -n "__fish_twofactor_using_subcommand enroll" -l invert -d 'Draw the terminal QR code for dark text on a light background'
complete -c twofactor -n "__fish_twofactor_using_subcommand enroll" -l json -d 'Machine-readable JSON output, for commands that print data'
complete -c twofactor -n "__fish_twofactor_using_subcommand enroll" -s h -l help -d 'Print help'
complete -c twofactor -n "__fish_twofactor_using_subcommand enroll" -s V -l version -d 'Print version'
complete -c twofactor -n "__fish_twofactor_using_subcommand status" -l config -d 'Read this config file instead of /etc/twofactor/config.toml (root only; also TWOFACTOR_CONFIG)' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand status" -l all -d 'Every user with twofactor state, as a table (root only)'
complete -c twofactor -n "__fish_twofactor_using_subcommand status" -l json -d 'Machine-readable JSON output, for commands that print data'
complete -c twofactor -n "__fish_twofactor_using_subcommand status" -s h -l help -d 'Print help'
complete -c twofactor -n "__fish_twofactor_using_subcommand status" -s V -l version -d 'Print version'
complete -c twofactor -n "__fish_twofactor_using_subcommand backup-codes" -l user -d 'Act on this user instead of yourself (root only)' -r
complete -c twofactor -n "__fish_twofactor_using_subcommand backup-codes" -l pdf -d 'Also write the codes to a printable one-page PDF (A4 and Letter), as you, mode 0600' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand backup-codes" -l txt -d 'Also write the codes to a text file, as you, mode 0600' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand backup-codes" -l config -d 'Read this config file instead of /etc/twofactor/config.toml (root only; also TWOFACTOR_CONFIG)' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand backup-codes" -l json -d 'Machine-readable JSON output, for commands that print data'
complete -c twofactor -n "__fish_twofactor_using_subcommand backup-codes" -s h -l help -d 'Print help'
complete -c twofactor -n "__fish_twofactor_using_subcommand backup-codes" -s V -l version -d 'Print version'
complete -c twofactor -n "__fish_twofactor_using_subcommand disable" -l user -d 'Act on this user instead of yourself (root only)' -r
complete -c twofactor -n "__fish_twofactor_using_subcommand disable" -l config -d 'Read this config file instead of /etc/twofactor/config.toml (root only; also TWOFACTOR_CONFIG)' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand disable" -l remove -d 'Delete the key and the backup codes instead of turning them off for now'
complete -c twofactor -n "__fish_twofactor_using_subcommand disable" -l json -d 'Machine-readable JSON output, for commands that print data'
complete -c twofactor -n "__fish_twofactor_using_subcommand disable" -s h -l help -d 'Print help'
complete -c twofactor -n "__fish_twofactor_using_subcommand disable" -s V -l version -d 'Print version'
complete -c twofactor -n "__fish_twofactor_using_subcommand enable" -l user -d 'Act on this user instead of yourself (root only)' -r
complete -c twofactor -n "__fish_twofactor_using_subcommand enable" -l config -d 'Read this config file instead of /etc/twofactor/config.toml (root only; also TWOFACTOR_CONFIG)' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand enable" -l json -d 'Machine-readable JSON output, for commands that print data'
complete -c twofactor -n "__fish_twofactor_using_subcommand enable" -s h -l help -d 'Print help'
complete -c twofactor -n "__fish_twofactor_using_subcommand enable" -s V -l version -d 'Print version'
complete -c twofactor -n "__fish_twofactor_using_subcommand reset" -l config -d 'Read this config file instead of /etc/twofactor/config.toml (root only; also TWOFACTOR_CONFIG)' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand reset" -l json -d 'Machine-readable JSON output, for commands that print data'
complete -c twofactor -n "__fish_twofactor_using_subcommand reset" -s h -l help -d 'Print help'
complete -c twofactor -n "__fish_twofactor_using_subcommand reset" -s V -l version -d 'Print version'
complete -c twofactor -n "__fish_twofactor_using_subcommand unlock" -l config -d 'Read this config file instead of /etc/twofactor/config.toml (root only; also TWOFACTOR_CONFIG)' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand unlock" -l json -d 'Machine-readable JSON output, for commands that print data'
complete -c twofactor -n "__fish_twofactor_using_subcommand unlock" -s h -l help -d 'Print help'
complete -c twofactor -n "__fish_twofactor_using_subcommand unlock" -s V -l version -d 'Print version'
complete -c twofactor -n "__fish_twofactor_using_subcommand trust; and not __fish_seen_subcommand_from list revoke help" -l config -d 'Read this config file instead of /etc/twofactor/config.toml (root only; also TWOFACTOR_CONFIG)' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand trust; and not __fish_seen_subcommand_from list revoke help" -l json -d 'Machine-readable JSON output, for commands that print data'
complete -c twofactor -n "__fish_twofactor_using_subcommand trust; and not __fish_seen_subcommand_from list revoke help" -s h -l help -d 'Print help'
complete -c twofactor -n "__fish_twofactor_using_subcommand trust; and not __fish_seen_subcommand_from list revoke help" -s V -l version -d 'Print version'
complete -c twofactor -n "__fish_twofactor_using_subcommand trust; and not __fish_seen_subcommand_from list revoke help" -f -a "list" -d 'List trusted hosts'
complete -c twofactor -n "__fish_twofactor_using_subcommand trust; and not __fish_seen_subcommand_from list revoke help" -f -a "revoke" -d 'Revoke one trusted host by ID, or all of them'
complete -c twofactor -n "__fish_twofactor_using_subcommand trust; and not __fish_seen_subcommand_from list revoke help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c twofactor -n "__fish_twofactor_using_subcommand trust; and __fish_seen_subcommand_from list" -l user -d 'Act on this user instead of yourself (root only)' -r
complete -c twofactor -n "__fish_twofactor_using_subcommand trust; and __fish_seen_subcommand_from list" -l config -d 'Read this config file instead of /etc/twofactor/config.toml (root only; also TWOFACTOR_CONFIG)' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand trust; and __fish_seen_subcommand_from list" -l json -d 'Machine-readable JSON output, for commands that print data'
complete -c twofactor -n "__fish_twofactor_using_subcommand trust; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c twofactor -n "__fish_twofactor_using_subcommand trust; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c twofactor -n "__fish_twofactor_using_subcommand trust; and __fish_seen_subcommand_from revoke" -l user -d 'Act on this user instead of yourself (root only)' -r
complete -c twofactor -n "__fish_twofactor_using_subcommand trust; and __fish_seen_subcommand_from revoke" -l config -d 'Read this config file instead of /etc/twofactor/config.toml (root only; also TWOFACTOR_CONFIG)' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand trust; and __fish_seen_subcommand_from revoke" -l all -d 'Revoke every trusted host'
complete -c twofactor -n "__fish_twofactor_using_subcommand trust; and __fish_seen_subcommand_from revoke" -l json -d 'Machine-readable JSON output, for commands that print data'
complete -c twofactor -n "__fish_twofactor_using_subcommand trust; and __fish_seen_subcommand_from revoke" -s h -l help -d 'Print help'
complete -c twofactor -n "__fish_twofactor_using_subcommand trust; and __fish_seen_subcommand_from revoke" -s V -l version -d 'Print version'
complete -c twofactor -n "__fish_twofactor_using_subcommand trust; and __fish_seen_subcommand_from help" -f -a "list" -d 'List trusted hosts'
complete -c twofactor -n "__fish_twofactor_using_subcommand trust; and __fish_seen_subcommand_from help" -f -a "revoke" -d 'Revoke one trusted host by ID, or all of them'
complete -c twofactor -n "__fish_twofactor_using_subcommand trust; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c twofactor -n "__fish_twofactor_using_subcommand check-config" -l config -d 'Read this config file instead of /etc/twofactor/config.toml (root only; also TWOFACTOR_CONFIG)' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand check-config" -l json -d 'Machine-readable JSON output, for commands that print data'
complete -c twofactor -n "__fish_twofactor_using_subcommand check-config" -s h -l help -d 'Print help'
complete -c twofactor -n "__fish_twofactor_using_subcommand check-config" -s V -l version -d 'Print version'
complete -c twofactor -n "__fish_twofactor_using_subcommand edit-config" -l config -d 'Read this config file instead of /etc/twofactor/config.toml (root only; also TWOFACTOR_CONFIG)' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand edit-config" -l json -d 'Machine-readable JSON output, for commands that print data'
complete -c twofactor -n "__fish_twofactor_using_subcommand edit-config" -s h -l help -d 'Print help'
complete -c twofactor -n "__fish_twofactor_using_subcommand edit-config" -s V -l version -d 'Print version'
complete -c twofactor -n "__fish_twofactor_using_subcommand explain" -l service -d 'Explain a login through this PAM service (enforce.services)' -r
complete -c twofactor -n "__fish_twofactor_using_subcommand explain" -l from -d 'Explain a login from this remote address (PAM_RHOST); without it, a local login such as the console, su or sudo' -r
complete -c twofactor -n "__fish_twofactor_using_subcommand explain" -l config -d 'Read this config file instead of /etc/twofactor/config.toml (root only; also TWOFACTOR_CONFIG)' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand explain" -l json -d 'Machine-readable JSON output, for commands that print data'
complete -c twofactor -n "__fish_twofactor_using_subcommand explain" -s h -l help -d 'Print help'
complete -c twofactor -n "__fish_twofactor_using_subcommand explain" -s V -l version -d 'Print version'
complete -c twofactor -n "__fish_twofactor_using_subcommand doctor" -l pam-dir -d 'Read PAM service files from this directory instead of /etc/pam.d' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand doctor" -l sshd-config -d 'Check this sshd_config instead of /etc/ssh/sshd_config' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand doctor" -l config -d 'Read this config file instead of /etc/twofactor/config.toml (root only; also TWOFACTOR_CONFIG)' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand doctor" -l json -d 'Machine-readable JSON output, for commands that print data'
complete -c twofactor -n "__fish_twofactor_using_subcommand doctor" -s h -l help -d 'Print help'
complete -c twofactor -n "__fish_twofactor_using_subcommand doctor" -s V -l version -d 'Print version'
complete -c twofactor -n "__fish_twofactor_using_subcommand tidy" -l config -d 'Read this config file instead of /etc/twofactor/config.toml (root only; also TWOFACTOR_CONFIG)' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand tidy" -l dry-run -d 'Only show what would be done'
complete -c twofactor -n "__fish_twofactor_using_subcommand tidy" -l json -d 'Machine-readable JSON output, for commands that print data'
complete -c twofactor -n "__fish_twofactor_using_subcommand tidy" -s h -l help -d 'Print help'
complete -c twofactor -n "__fish_twofactor_using_subcommand tidy" -s V -l version -d 'Print version'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and not __fish_seen_subcommand_from init rotate-key import add-host hosts remove-host help" -l config -d 'Read this config file instead of /etc/twofactor/config.toml (root only; also TWOFACTOR_CONFIG)' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and not __fish_seen_subcommand_from init rotate-key import add-host hosts remove-host help" -l json -d 'Machine-readable JSON output, for commands that print data'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and not __fish_seen_subcommand_from init rotate-key import add-host hosts remove-host help" -s h -l help -d 'Print help'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and not __fish_seen_subcommand_from init rotate-key import add-host hosts remove-host help" -s V -l version -d 'Print version'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and not __fish_seen_subcommand_from init rotate-key import add-host hosts remove-host help" -f -a "init" -d 'Create or migrate the roles, schema and functions; running it again changes nothing. Prints the pg_hba.conf and pg_ident.conf lines to apply'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and not __fish_seen_subcommand_from init rotate-key import add-host hosts remove-host help" -f -a "rotate-key" -d 'Make a new key file the current encryption key and re-encrypt every secret with it; list the users whose backup codes still use an older key, or retire that key'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and not __fish_seen_subcommand_from init rotate-key import add-host hosts remove-host help" -f -a "import" -d 'Copy this host\'s file-store users into the database, with the admin config: the key moves (enabled or not); backup codes and trusted hosts do not. The file store is left as it is'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and not __fish_seen_subcommand_from init rotate-key import add-host hosts remove-host help" -f -a "add-host" -d 'Give a host a login role of its own, named after its certificate\'s CN, in the group twofactor_hosts; prints the exact pg_ident.conf line to add'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and not __fish_seen_subcommand_from init rotate-key import add-host hosts remove-host help" -f -a "hosts" -d 'List the hosts\' roles with their last activity, sessions and open transactions (a host can hold a user\'s row for as long as its transaction stays open)'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and not __fish_seen_subcommand_from init rotate-key import add-host hosts remove-host help" -f -a "remove-host" -d 'End a host\'s sessions and drop its role, then say which files to change'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and not __fish_seen_subcommand_from init rotate-key import add-host hosts remove-host help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from init" -l admin-url -d 'A superuser\'s connection: a URL (postgresql://postgres@db1.example/twofactor) or key=value pairs (host=/var/run/postgresql user=postgres dbname=twofactor). Over TCP the server\'s certificate is always verified; there is no plaintext fallback' -r
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from init" -l ca -d 'Verify the server\'s TLS certificate against this CA file instead of the system\'s' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from init" -l key-file -d 'The encryption key: a file on the database server, readable only by its postgres user, holding 64 hex digits. init registers it when the database has no key yet' -r
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from init" -l issuer -d 'The name authenticator apps show for this fleet\'s accounts ("Example Corp"): one enrollment serves every host, so it names the fleet, not a host. Stored in the database; doctor checks each host\'s enroll.issuer against it' -r
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from init" -l config -d 'Read this config file instead of /etc/twofactor/config.toml (root only; also TWOFACTOR_CONFIG)' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from init" -l json -d 'Machine-readable JSON output, for commands that print data'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from init" -s h -l help -d 'Print help'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from init" -s V -l version -d 'Print version'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from rotate-key" -l admin-url -d 'A superuser\'s connection: a URL (postgresql://postgres@db1.example/twofactor) or key=value pairs (host=/var/run/postgresql user=postgres dbname=twofactor). Over TCP the server\'s certificate is always verified; there is no plaintext fallback' -r
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from rotate-key" -l ca -d 'Verify the server\'s TLS certificate against this CA file instead of the system\'s' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from rotate-key" -l key-file -d 'The new encryption key: a file on the database server, readable only by its postgres user, holding 64 hex digits. Always named: rotating to the old file by default would only be refused' -r
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from rotate-key" -l retire -d 'Retire this older key file: void the backup codes still hashed with it (their users are told at their next login to make new ones) and forget the file, which can then be deleted from every database node' -r
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from rotate-key" -l config -d 'Read this config file instead of /etc/twofactor/config.toml (root only; also TWOFACTOR_CONFIG)' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from rotate-key" -l json -d 'Machine-readable JSON output, for commands that print data'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from rotate-key" -s h -l help -d 'Print help'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from rotate-key" -s V -l version -d 'Print version'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from import" -l state-dir -d 'The file store to read (default: the config\'s storage.state_dir)' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from import" -l config -d 'Read this config file instead of /etc/twofactor/config.toml (root only; also TWOFACTOR_CONFIG)' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from import" -l dry-run -d 'Only show what would be done'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from import" -l replace -d 'Where the database has another key for a user, this host\'s key replaces it'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from import" -l json -d 'Machine-readable JSON output, for commands that print data'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from import" -s h -l help -d 'Print help'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from import" -s V -l version -d 'Print version'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from add-host" -l admin-url -d 'A superuser\'s connection: a URL (postgresql://postgres@db1.example/twofactor) or key=value pairs (host=/var/run/postgresql user=postgres dbname=twofactor). Over TCP the server\'s certificate is always verified; there is no plaintext fallback' -r
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from add-host" -l ca -d 'Verify the server\'s TLS certificate against this CA file instead of the system\'s' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from add-host" -l connection-limit -d 'How many connections the host may hold at once (a login holds one): 10 for a new host; for a host there already, its limit changes only when this is given. The hosts\' limits together must fit in the server\'s max_connections' -r
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from add-host" -l config -d 'Read this config file instead of /etc/twofactor/config.toml (root only; also TWOFACTOR_CONFIG)' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from add-host" -l json -d 'Machine-readable JSON output, for commands that print data'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from add-host" -s h -l help -d 'Print help'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from add-host" -s V -l version -d 'Print version'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from hosts" -l admin-url -d 'A superuser\'s connection: a URL (postgresql://postgres@db1.example/twofactor) or key=value pairs (host=/var/run/postgresql user=postgres dbname=twofactor). Over TCP the server\'s certificate is always verified; there is no plaintext fallback' -r
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from hosts" -l ca -d 'Verify the server\'s TLS certificate against this CA file instead of the system\'s' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from hosts" -l config -d 'Read this config file instead of /etc/twofactor/config.toml (root only; also TWOFACTOR_CONFIG)' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from hosts" -l json -d 'Machine-readable JSON output, for commands that print data'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from hosts" -s h -l help -d 'Print help'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from hosts" -s V -l version -d 'Print version'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from remove-host" -l admin-url -d 'A superuser\'s connection: a URL (postgresql://postgres@db1.example/twofactor) or key=value pairs (host=/var/run/postgresql user=postgres dbname=twofactor). Over TCP the server\'s certificate is always verified; there is no plaintext fallback' -r
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from remove-host" -l ca -d 'Verify the server\'s TLS certificate against this CA file instead of the system\'s' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from remove-host" -l config -d 'Read this config file instead of /etc/twofactor/config.toml (root only; also TWOFACTOR_CONFIG)' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from remove-host" -l json -d 'Machine-readable JSON output, for commands that print data'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from remove-host" -s h -l help -d 'Print help'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from remove-host" -s V -l version -d 'Print version'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from help" -f -a "init" -d 'Create or migrate the roles, schema and functions; running it again changes nothing. Prints the pg_hba.conf and pg_ident.conf lines to apply'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from help" -f -a "rotate-key" -d 'Make a new key file the current encryption key and re-encrypt every secret with it; list the users whose backup codes still use an older key, or retire that key'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from help" -f -a "import" -d 'Copy this host\'s file-store users into the database, with the admin config: the key moves (enabled or not); backup codes and trusted hosts do not. The file store is left as it is'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from help" -f -a "add-host" -d 'Give a host a login role of its own, named after its certificate\'s CN, in the group twofactor_hosts; prints the exact pg_ident.conf line to add'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from help" -f -a "hosts" -d 'List the hosts\' roles with their last activity, sessions and open transactions (a host can hold a user\'s row for as long as its transaction stays open)'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from help" -f -a "remove-host" -d 'End a host\'s sessions and drop its role, then say which files to change'
complete -c twofactor -n "__fish_twofactor_using_subcommand fleet; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c twofactor -n "__fish_twofactor_using_subcommand log" -l user -d 'Only rows about this user' -r
complete -c twofactor -n "__fish_twofactor_using_subcommand log" -l host -d 'Only rows written by this host (its certificate\'s CN)' -r
complete -c twofactor -n "__fish_twofactor_using_subcommand log" -l outcome -d 'Only rows with this outcome: totp, backup code, wrong code, replayed, locked, saved...' -r
complete -c twofactor -n "__fish_twofactor_using_subcommand log" -l since -d 'Only rows since then: an age (30m, 2h, 7d), a UTC date (2026-12-01), a UTC date and time (2026-12-01 14:30) or @UNIXSECONDS' -r
complete -c twofactor -n "__fish_twofactor_using_subcommand log" -l limit -d 'At most this many rows, the newest' -r
complete -c twofactor -n "__fish_twofactor_using_subcommand log" -l config -d 'Read this config file instead of /etc/twofactor/config.toml (root only; also TWOFACTOR_CONFIG)' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand log" -l json -d 'Machine-readable JSON output, for commands that print data'
complete -c twofactor -n "__fish_twofactor_using_subcommand log" -s h -l help -d 'Print help'
complete -c twofactor -n "__fish_twofactor_using_subcommand log" -s V -l version -d 'Print version'
complete -c twofactor -n "__fish_twofactor_using_subcommand import-google-authenticator" -l file -d 'Read this file instead of the user\'s ~/.google_authenticator' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand import-google-authenticator" -l config -d 'Read this config file instead of /etc/twofactor/config.toml (root only; also TWOFACTOR_CONFIG)' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand import-google-authenticator" -l keep -d 'Keep the old file (it is removed after a successful import by default)'
complete -c twofactor -n "__fish_twofactor_using_subcommand import-google-authenticator" -l all -d 'Import every local user (from /etc/passwd) who has a ~/.google_authenticator file'
complete -c twofactor -n "__fish_twofactor_using_subcommand import-google-authenticator" -l json -d 'Machine-readable JSON output, for commands that print data'
complete -c twofactor -n "__fish_twofactor_using_subcommand import-google-authenticator" -s h -l help -d 'Print help'
complete -c twofactor -n "__fish_twofactor_using_subcommand import-google-authenticator" -s V -l version -d 'Print version'
complete -c twofactor -n "__fish_twofactor_using_subcommand generate-docs" -l config -d 'Read this config file instead of /etc/twofactor/config.toml (root only; also TWOFACTOR_CONFIG)' -r -F
complete -c twofactor -n "__fish_twofactor_using_subcommand generate-docs" -l json -d 'Machine-readable JSON output, for commands that print data'
complete -c twofactor -n "__fish_twofactor_using_subcommand generate-docs" -s h -l help -d 'Print help'
complete -c twofactor -n "__fish_twofactor_using_subcommand generate-docs" -s V -l version -d 'Print version'
complete -c twofactor -n "__fish_twofactor_using_subcommand help; and not __fish_seen_subcommand_from enroll status backup-codes disable enable reset unlock trust check-config edit-config explain doctor tidy fleet log import-google-authenticator generate-docs help" -f -a "enroll" -d 'Set up an authenticator app: shows a QR code, asks for a code, then shows backup codes'
complete -c twofactor -n "__fish_twofactor_using_subcommand help; and not __fish_seen_subcommand_from enroll status backup-codes disable enable reset unlock trust check-config edit-config explain doctor tidy fleet log import-google-authenticator generate-docs help" -f -a "status" -d 'Show whether two-factor authentication is required and set up'
complete -c twofactor -n "__fish_twofactor_using_subcommand help; and not __fish_seen_subcommand_from enroll status backup-codes disable enable reset unlock trust check-config edit-config explain doctor tidy fleet log import-google-authenticator generate-docs help" -f -a "backup-codes" -d 'Make new backup codes; all old ones stop working'
complete -c twofactor -n "__fish_twofactor_using_subcommand help; and not __fish_seen_subcommand_from enroll status backup-codes disable enable reset unlock trust check-config edit-config explain doctor tidy fleet log import-google-authenticator generate-docs help" -f -a "disable" -d 'Turn two-factor authentication off for now (the key is kept), or remove the key'
complete -c twofactor -n "__fish_twofactor_using_subcommand help; and not __fish_seen_subcommand_from enroll status backup-codes disable enable reset unlock trust check-config edit-config explain doctor tidy fleet log import-google-authenticator generate-docs help" -f -a "enable" -d 'Turn a temporarily disabled authenticator back on'
complete -c twofactor -n "__fish_twofactor_using_subcommand help; and not __fish_seen_subcommand_from enroll status backup-codes disable enable reset unlock trust check-config edit-config explain doctor tidy fleet log import-google-authenticator generate-docs help" -f -a "reset" -d 'Remove a user\'s authenticator, backup codes, lock and trusted hosts (root only)'
complete -c twofactor -n "__fish_twofactor_using_subcommand help; and not __fish_seen_subcommand_from enroll status backup-codes disable enable reset unlock trust check-config edit-config explain doctor tidy fleet log import-google-authenticator generate-docs help" -f -a "unlock" -d 'Clear a user\'s lockout after too many wrong codes (root only)'
complete -c twofactor -n "__fish_twofactor_using_subcommand help; and not __fish_seen_subcommand_from enroll status backup-codes disable enable reset unlock trust check-config edit-config explain doctor tidy fleet log import-google-authenticator generate-docs help" -f -a "trust" -d 'List or revoke trusted hosts that skip the code'
complete -c twofactor -n "__fish_twofactor_using_subcommand help; and not __fish_seen_subcommand_from enroll status backup-codes disable enable reset unlock trust check-config edit-config explain doctor tidy fleet log import-google-authenticator generate-docs help" -f -a "check-config" -d 'Check a config file; errors are printed as FILE:LINE:COLUMN: message'
complete -c twofactor -n "__fish_twofactor_using_subcommand help; and not __fish_seen_subcommand_from enroll status backup-codes disable enable reset unlock trust check-config edit-config explain doctor tidy fleet log import-google-authenticator generate-docs help" -f -a "edit-config" -d 'Edit the config safely (root only): edits a copy in $VISUAL or $EDITOR, checks it, and installs it only when it is valid'
complete -c twofactor -n "__fish_twofactor_using_subcommand help; and not __fish_seen_subcommand_from enroll status backup-codes disable enable reset unlock trust check-config edit-config explain doctor tidy fleet log import-google-authenticator generate-docs help" -f -a "explain" -d 'Explain why a user must or need not use two-factor authentication'
complete -c twofactor -n "__fish_twofactor_using_subcommand help; and not __fish_seen_subcommand_from enroll status backup-codes disable enable reset unlock trust check-config edit-config explain doctor tidy fleet log import-google-authenticator generate-docs help" -f -a "doctor" -d 'Check PAM stacks, sshd and the policy for 2FA bypasses and lockouts (root only)'
complete -c twofactor -n "__fish_twofactor_using_subcommand help; and not __fish_seen_subcommand_from enroll status backup-codes disable enable reset unlock trust check-config edit-config explain doctor tidy fleet log import-google-authenticator generate-docs help" -f -a "tidy" -d 'Tidy the state directory: merge state kept under another name of an account into its canonical name, and remove leftover temp and lock files (root only)'
complete -c twofactor -n "__fish_twofactor_using_subcommand help; and not __fish_seen_subcommand_from enroll status backup-codes disable enable reset unlock trust check-config edit-config explain doctor tidy fleet log import-google-authenticator generate-docs help" -f -a "fleet" -d 'Set up and look after the PostgreSQL store a fleet shares (root only)'
complete -c twofactor -n "__fish_twofactor_using_subcommand help; and not __fish_seen_subcommand_from enroll status backup-codes disable enable reset unlock trust check-config edit-config explain doctor tidy fleet log import-google-authenticator generate-docs help" -f -a "log" -d 'Read the fleet\'s audit: logins, enrollments and admin changes from every host (root, with the admin config). A host of its own logs to journald or syslog'
complete -c twofactor -n "__fish_twofactor_using_subcommand help; and not __fish_seen_subcommand_from enroll status backup-codes disable enable reset unlock trust check-config edit-config explain doctor tidy fleet log import-google-authenticator generate-docs help" -f -a "import-google-authenticator" -d 'Take over a ~/.google_authenticator file: same key, scratch codes become backup codes (root only)'
complete -c twofactor -n "__fish_twofactor_using_subcommand help; and not __fish_seen_subcommand_from enroll status backup-codes disable enable reset unlock trust check-config edit-config explain doctor tidy fleet log import-google-authenticator generate-docs help" -f -a "generate-docs" -d 'Write the man page and shell completions into a directory'
complete -c twofactor -n "__fish_twofactor_using_subcommand help; and not __fish_seen_subcommand_from enroll status backup-codes disable enable reset unlock trust check-config edit-config explain doctor tidy fleet log import-google-authenticator generate-docs help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c twofactor -n "__fish_twofactor_using_subcommand help; and __fish_seen_subcommand_from trust" -f -a "list" -d 'List trusted hosts'
complete -c twofactor -n "__fish_twofactor_using_subcommand help; and __fish_seen_subcommand_from trust" -f -a "revoke" -d 'Revoke one trusted host by ID, or all of them'
complete -c twofactor -n "__fish_twofactor_using_subcommand help; and __fish_seen_subcommand_from fleet" -f -a "init" -d 'Create or migrate the roles, schema and functions; running it again changes nothing. Prints the pg_hba.conf and pg_ident.conf lines to apply'
complete -c twofactor -n "__fish_twofactor_using_subcommand help; and __fish_seen_subcommand_from fleet" -f -a "rotate-key" -d 'Make a new key file the current encryption key and re-encrypt every secret with it; list the users whose backup codes still use an older key, or retire that key'
complete -c twofactor -n "__fish_twofactor_using_subcommand help; and __fish_seen_subcommand_from fleet" -f -a "import" -d 'Copy this host\'s file-store users into the database, with the admin config: the key moves (enabled or not); backup codes and trusted hosts do not. The file store is left as it is'
complete -c twofactor -n "__fish_twofactor_using_subcommand help; and __fish_seen_subcommand_from fleet" -f -a "add-host" -d 'Give a host a login role of its own, named after its certificate\'s CN, in the group twofactor_hosts; prints the exact pg_ident.conf line to add'
complete -c twofactor -n "__fish_twofactor_using_subcommand help; and __fish_seen_subcommand_from fleet" -f -a "hosts" -d 'List the hosts\' roles with their last activity, sessions and open transactions (a host can hold a user\'s row for as long as its transaction stays open)'
complete -c twofactor -n "__fish_twofactor_using_subcommand help; and __fish_seen_subcommand_from fleet" -f -a "remove-host" -d 'End a host\'s sessions and drop its role, then say which files to change'
