#!/usr/bin/env bash
# `make demo`: twofactor for real on loopback, without touching the system's logins.
#
# Builds twofactor, then starts a throwaway sshd on 127.0.0.1:2222 with its own
# sshd_config, its own PAM service (/etc/pam.d/twofactor-demo, a new file) and its own
# twofactor config and state, with 2FA required for a new user "demo". The system's
# sshd, PAM stacks and users are left alone. Ctrl-C removes everything it created.
#
# DEMO_CHECK=1: instead of waiting, log in twice through ssh (enrol, then a fresh code
# from oathtool), report, and tear down. DEMO_PORT changes the port.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

port=${DEMO_PORT:-2222}
user=demo
password=twofactor-demo
service=twofactor-demo

if [ "$(id -u)" -ne 0 ]; then
    echo "demo: run as root (it starts sshd and creates a throwaway user)" >&2
    exit 1
fi
if id "$user" >/dev/null 2>&1; then
    echo "demo: a user named '$user' already exists; not touching it. Remove it or edit this script." >&2
    exit 1
fi
if [ -e "/etc/pam.d/$service" ]; then
    echo "demo: /etc/pam.d/$service exists (another demo running?)" >&2
    exit 1
fi

bash tests/setup
cargo build --release --workspace --locked
# Cargo's output directory, as cargo itself picks it.
target=${CARGO_TARGET_DIR:-$repo/target}

dir=$(mktemp -d /tmp/twofactor-demo.XXXXXX)
chmod 0755 "$dir"
sshd_pid=
cleanup() {
    trap - EXIT INT TERM
    echo
    echo "Stopping the demo and removing what it created..."
    [ -n "$sshd_pid" ] && kill "$sshd_pid" 2>/dev/null && wait "$sshd_pid" 2>/dev/null || true
    pkill -f "^$dir/$service" 2>/dev/null || true
    userdel --remove "$user" 2>/dev/null || true
    rm -f "/etc/pam.d/$service"
    rm -rf "$dir"
    echo "Done: the demo user, PAM service, sshd and files are gone."
}
trap cleanup EXIT
trap 'exit 130' INT TERM

install -d -m 0700 "$dir/state"
cat > "$dir/config.toml" <<TOML
version = 1
[enforce]
users = ["$user"]
[enroll]
issuer = "twofactor demo"
[storage]
state_dir = "$dir/state"
TOML
chmod 0644 "$dir/config.toml"

useradd --create-home --home-dir "$dir/home" --shell /bin/bash "$user"
echo "$user:$password" | chpasswd

# sshd names its PAM service after the program, so a link named $service gives this
# demo a PAM service of its own instead of /etc/pam.d/sshd.
cat > "/etc/pam.d/$service" <<PAM
# twofactor demo (removed when the demo stops)
auth     requisite pam_unix.so
auth     required  $target/release/libpam_twofactor.so config=$dir/config.toml
account  required  pam_unix.so
session  required  pam_unix.so
password required  pam_deny.so
PAM
ln -s /usr/sbin/sshd "$dir/$service"
ssh-keygen -q -t ed25519 -N '' -f "$dir/host_ed25519"
cat > "$dir/sshd_config" <<SSHD
Port $port
ListenAddress 127.0.0.1
HostKey $dir/host_ed25519
PidFile $dir/sshd.pid
UsePAM yes
KbdInteractiveAuthentication yes
PasswordAuthentication no
PubkeyAuthentication no
AuthenticationMethods keyboard-interactive
PermitRootLogin no
AllowUsers $user
SSHD
mkdir -p /run/sshd
"$dir/$service" -D -e -f "$dir/sshd_config" 2>"$dir/sshd.log" &
sshd_pid=$!
for _ in $(seq 50); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    if ! kill -0 "$sshd_pid" 2>/dev/null; then
        echo "demo: sshd did not start:" >&2; cat "$dir/sshd.log" >&2; exit 1
    fi
    sleep 0.1
done

cat <<TEXT

twofactor demo is running: sshd on 127.0.0.1:$port asks for a TOTP code after the password.

  Log in:    ssh -p $port $user@127.0.0.1
  Password:  $password

The first login sets up the authenticator: scan the QR code with an app (Google
Authenticator, FreeOTP, ...) or type the key, then enter the code it shows. Note the
backup codes. Later logins ask for "Authentication code". Without a phone, compute codes
with:  oathtool --totp -b KEY

Look at the state:  TWOFACTOR_CONFIG=$dir/config.toml $target/release/twofactor status $user
Audit log:          journalctl -t pam_twofactor (or /var/log/auth.log)

Press Ctrl-C to stop; the demo user, PAM service, sshd and files are removed.
TEXT

if [ "${DEMO_CHECK:-0}" = 1 ]; then
    echo
    echo "DEMO_CHECK: first login (enrolment) through ssh..."
    # A refused login must still show its conversation, so no exit on ssh's status here.
    first=$(LC_ALL=C.UTF-8 expect tests/e2e/ssh_login.exp "$port" "$user" "$password" - | tr -d '\r' || true)
    grep -q "LOGGED-IN-AS-$user" <<<"$first" || { echo "$first"; echo "DEMO_CHECK: enrolment login failed" >&2; exit 1; }
    key=$(sed -n 's/^.*Key: *\([A-Z2-7 ]*\)$/\1/p' <<<"$first" | head -1 | tr -d ' ')
    used=$(oathtool --totp -b "$key")
    echo "DEMO_CHECK: enrolled; waiting for a fresh code for the second login..."
    code=$used
    while [ "$code" = "$used" ]; do sleep 1; code=$(oathtool --totp -b "$key"); done
    second=$(LC_ALL=C.UTF-8 expect tests/e2e/ssh_login.exp "$port" "$user" "$password" "$code" | tr -d '\r' || true)
    if ! grep -q "LOGGED-IN-AS-$user" <<<"$second"; then
        echo "$second"
        echo "DEMO_CHECK: code $code from key $key refused at $(date -u +%T) (step $(( $(date +%s) / 30 ))); the state:"
        TWOFACTOR_CONFIG="$dir/config.toml" "$target/release/twofactor" status "$user" --json || true
        echo "DEMO_CHECK: code login failed" >&2
        exit 1
    fi
    echo "DEMO_CHECK: ok: enrolled at the first login, then logged in with a code from oathtool."
    exit 0
fi

wait "$sshd_pid"
