#!/usr/bin/env bash
# `make demo-fleet`: one enrolment for two hosts, for real, on loopback.
#
# Builds twofactor, then starts a throwaway PostgreSQL 15 on 127.0.0.1 with TLS and a
# throwaway CA, sets it up with `twofactor fleet init`, and starts two sshd "hosts" on
# 127.0.0.1:2222 and :2223. Each host has its own client certificate, PAM service
# (/etc/pam.d/twofactor-fleet-a and -b, new files) and twofactor config, as the README's
# fleet guide sets them up. The system's sshd, PAM stacks, PostgreSQL and users are left
# alone. Ctrl-C removes everything it created.
#
# DEMO_CHECK=1: instead of waiting, enrol at the first login on A, log in on B with the
# next code, see that code refused on A, list users through the admin role, and tear
# down. DEMO_PORT_A, DEMO_PORT_B and DEMO_PG_PORT change the ports.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

port_a=${DEMO_PORT_A:-2222}
port_b=${DEMO_PORT_B:-2223}
pg_port=${DEMO_PG_PORT:-55432}
user=fleetdemo
password=twofactor-fleet-demo
pg_bin=/usr/lib/postgresql/15/bin

if [ "$(id -u)" -ne 0 ]; then
    echo "demo-fleet: run as root (it starts sshd and PostgreSQL and creates a throwaway user)" >&2
    exit 1
fi
if id "$user" >/dev/null 2>&1; then
    echo "demo-fleet: a user named '$user' already exists; not touching it." >&2
    exit 1
fi
for host in a b; do
    if [ -e "/etc/pam.d/twofactor-fleet-$host" ]; then
        echo "demo-fleet: /etc/pam.d/twofactor-fleet-$host exists (another demo running?)" >&2
        exit 1
    fi
done

bash tests/setup
cargo build --release --workspace --locked
target=${CARGO_TARGET_DIR:-$repo/target}
twofactor=$target/release/twofactor

dir=$(mktemp -d /tmp/twofactor-fleet-demo.XXXXXX)
chmod 0755 "$dir"
pids=()
cleanup() {
    trap - EXIT INT TERM
    # A check's last lines are its verdict; a person at the terminal is told what happens.
    [ "${DEMO_CHECK:-0}" = 1 ] || { echo; echo "Stopping the fleet demo and removing what it created..."; }
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
    pkill -f "^$dir/twofactor-fleet-" 2>/dev/null || true
    # Connection processes still carry the demo's path until they exit: wait for them.
    for _ in $(seq 50); do
        pgrep -f "^$dir/" >/dev/null || break
        sleep 0.1
    done
    if [ -f "$dir/pg/data/postmaster.pid" ]; then
        runuser -u postgres -- "$pg_bin/pg_ctl" -D "$dir/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    userdel --remove "$user" 2>/dev/null || true
    rm -f /etc/pam.d/twofactor-fleet-a /etc/pam.d/twofactor-fleet-b
    rm -rf "$dir"
    [ "${DEMO_CHECK:-0}" = 1 ] || echo "Done: the demo user, PAM services, sshd hosts, database and files are gone."
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. A CA, the database server's certificate, one per host and one for the admin.
pki=$dir/pki
install -d -m 0700 "$pki"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj "/CN=twofactor fleet demo CA" -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
issue() { # NAME CN [subjectAltName]
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj "/CN=$2" -keyout "$pki/$1.key" -out "$pki/$1.csr" 2>/dev/null
    printf '%s\n' "${3:+subjectAltName=$3}" > "$pki/$1.ext"
    openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
        -CAcreateserial -days 30 -extfile "$pki/$1.ext" -out "$pki/$1.crt" 2>/dev/null
    chmod 0600 "$pki/$1.key"
}
issue db localhost "IP:127.0.0.1,DNS:localhost"
issue host-a host-a.fleet.demo
issue host-b host-b.fleet.demo
issue admin admin-demo
chmod 0644 "$pki/ca.crt" "$pki"/*.crt

# --- 2. PostgreSQL: its own cluster, TLS only from outside, client certificates only.
pg=$dir/pg
install -d -m 0755 "$pg"
install -d -m 0700 -o postgres -g postgres "$pg/data" "$pg/sock"
install -m 0600 -o postgres -g postgres "$pki/db.crt" "$pki/db.key" "$pki/ca.crt" "$pg/"
# The key that encrypts secrets at rest: outside the data directory, postgres only.
(umask 077; openssl rand -hex 32 > "$pg/fleet.key")
chown postgres:postgres "$pg/fleet.key"
chmod 0400 "$pg/fleet.key"
runuser -u postgres -- "$pg_bin/initdb" -D "$pg/data" -U postgres --auth-local=trust \
    --auth-host=reject -E UTF8 >/dev/null
cat >> "$pg/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$pg/sock'
ssl = on
ssl_cert_file = '$pg/db.crt'
ssl_key_file = '$pg/db.key'
ssl_ca_file = '$pg/ca.crt'
CONF
runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg/data" -l "$pg/data/server.log" -w start >/dev/null
runuser -u postgres -- "$pg_bin/createdb" -h "$pg/sock" -p "$pg_port" twofactor
admin_url="host=$pg/sock port=$pg_port user=postgres dbname=twofactor"
"$twofactor" fleet init --admin-url "$admin_url" --key-file "$pg/fleet.key" > "$dir/fleet-init.txt"
# What fleet init asked for, with this demo's addresses and certificate names: each host
# logs in as a role of its own, and add-host prints its exact pg_ident.conf line.
cat > "$pg/data/pg_hba.conf" <<HBA
local     all        postgres                           trust
hostssl   twofactor  +twofactor_hosts,twofactor_admin  127.0.0.1/32  cert map=twofactor
HBA
echo "twofactor  admin-demo  twofactor_admin" > "$pg/data/pg_ident.conf"
for h in host-a host-b; do
  "$twofactor" --json fleet add-host "$h.fleet.demo" --admin-url "$admin_url" \
    | sed -n 's/.*"pg_ident": *"\([^"]*\)".*/\1/p' >> "$pg/data/pg_ident.conf"
done
runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg/data" reload >/dev/null

# --- 3. Two hosts, each with its own certificate, config, PAM service and sshd.
useradd --create-home --home-dir "$dir/home" --shell /bin/bash "$user"
echo "$user:$password" | chpasswd
config() { # NAME CERT
    cat > "$dir/$1.toml" <<TOML
version = 1
[enforce]
users = ["$user"]
[enroll]
issuer = "twofactor fleet demo"
[storage]
backend = "postgresql"
[storage.postgresql]
hosts = ["127.0.0.1:$pg_port"]
dbname = "twofactor"
ca = "$pki/ca.crt"
cert = "$pki/$2.crt"
key = "$pki/$2.key"
TOML
    chmod 0644 "$dir/$1.toml"
}
config admin admin
mkdir -p /run/sshd
for host in a b; do
    port=$port_a
    [ "$host" = b ] && port=$port_b
    config "host-$host" "host-$host"
    cat > "/etc/pam.d/twofactor-fleet-$host" <<PAM
# twofactor fleet demo, host $host (removed when the demo stops)
auth     requisite pam_unix.so
auth     required  $target/release/libpam_twofactor.so config=$dir/host-$host.toml
account  required  pam_unix.so
session  required  pam_unix.so
password required  pam_deny.so
PAM
    ln -s /usr/sbin/sshd "$dir/twofactor-fleet-$host"
    ssh-keygen -q -t ed25519 -N '' -f "$dir/ssh_host_$host"
    cat > "$dir/sshd_config_$host" <<SSHD
Port $port
ListenAddress 127.0.0.1
HostKey $dir/ssh_host_$host
PidFile $dir/sshd_$host.pid
UsePAM yes
KbdInteractiveAuthentication yes
PasswordAuthentication no
PubkeyAuthentication no
AuthenticationMethods keyboard-interactive
PermitRootLogin no
AllowUsers $user
SSHD
    "$dir/twofactor-fleet-$host" -D -e -f "$dir/sshd_config_$host" 2>"$dir/sshd_$host.log" &
    pids+=($!)
    # Ready when this sshd says it listens: a probe of the port could be answered by
    # another service still holding it.
    for _ in $(seq 100); do
        grep -q "Server listening on 127.0.0.1 port $port" "$dir/sshd_$host.log" && break
        kill -0 "${pids[-1]}" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q "Server listening on 127.0.0.1 port $port" "$dir/sshd_$host.log"; then
        echo "demo-fleet: sshd for host $host did not start on port $port:" >&2
        cat "$dir/sshd_$host.log" >&2
        exit 1
    fi
done

# The reload above is asynchronous: wait until the admin's certificate is let in, so a
# login never races the new pg_hba.conf, and a TLS or mapping mistake shows here by name.
for try in $(seq 50); do
    if "$twofactor" --config "$dir/admin.toml" status --all >"$dir/ready.txt" 2>&1; then break; fi
    if [ "$try" = 50 ]; then
        echo "demo-fleet: the database does not let the admin certificate in:" >&2
        cat "$dir/ready.txt" >&2
        tail -n 10 "$pg/data/server.log" >&2
        exit 1
    fi
    sleep 0.1
done

cat <<TEXT

twofactor fleet demo is running: two sshd hosts share one PostgreSQL database.

  Host A:    ssh -p $port_a $user@127.0.0.1
  Host B:    ssh -p $port_b $user@127.0.0.1
  Password:  $password

Enrol at the first login on either host (scan the QR code, or compute codes with
oathtool --totp -b KEY), then log in on the other host with the next code: one
enrolment, one replay guard and one lockout for both.

As the administrator:  $twofactor --config $dir/admin.toml status --all
A host's own check:    $twofactor --config $dir/host-a.toml doctor
The database:          runuser -u postgres -- $pg_bin/psql -h $pg/sock -p $pg_port twofactor

Press Ctrl-C to stop; the user, PAM services, sshd hosts and database are removed.
TEXT

if [ "${DEMO_CHECK:-0}" = 1 ]; then
    # At the client's default LogLevel, as a person runs it: what the module says shows.
    login() { LC_ALL=C.UTF-8 expect tests/e2e/ssh_login.exp "$@" default | tr -d '\r' || true; }
    # Says what failed, then the end of each log that could say why, in under 20 lines:
    # the package test shows only the end of a failing demo's output.
    fail() { # WHAT CONVERSATION
        echo "DEMO_CHECK: $1 at $(date -u +%T) (step $(( $(date +%s) / 30 )))"
        echo "--- the ssh client saw:"
        { grep -v '^[ █▀▄]*$' <<<"$2" | grep -v '^$' | tail -n 7; } || true
        echo "--- sshd on host A:"
        { grep -v '^debug' "$dir/sshd_a.log" | tail -n 3; } || true
        echo "--- PostgreSQL:"
        tail -n 3 "$pg/data/server.log" || true
        exit 1
    }
    echo
    echo "DEMO_CHECK: first login on host A (enrolment)..."
    first=$(login "$port_a" "$user" "$password" -)
    grep -q "LOGGED-IN-AS-$user" <<<"$first" || fail "the enrolment login on A failed" "$first"
    key=$(sed -n 's/^.*Key: *\([A-Z2-7 ]*\)$/\1/p' <<<"$first" | head -1 | tr -d ' ')
    used=$(oathtool --totp -b "$key")
    echo "DEMO_CHECK: enrolled on A; waiting for the next code to log in on host B..."
    code=$used
    while [ "$code" = "$used" ]; do sleep 1; code=$(oathtool --totp -b "$key"); done
    second=$(login "$port_b" "$user" "$password" "$code")
    grep -q "LOGGED-IN-AS-$user" <<<"$second" || fail "code $code refused on B" "$second"
    echo "DEMO_CHECK: logged in on B with the code from the enrolment made on A."
    third=$(login "$port_a" "$user" "$password" "$code,$code,$code")
    if grep -q "LOGGED-IN-AS-$user" <<<"$third" || ! grep -q "That code was already used" <<<"$third"; then
        fail "the code B accepted was not refused as a replay on A" "$third"
    fi
    echo "DEMO_CHECK: the same code replayed on A is refused: \"That code was already used\"."
    status=$("$twofactor" --config "$dir/admin.toml" status --all)
    echo "$status"
    grep -q "$user" <<<"$status" || { echo "DEMO_CHECK: status --all does not list $user" >&2; exit 1; }
    echo "DEMO_CHECK: ok: one enrolment on A served B, the replay was refused on A, the admin role lists the user."
    exit 0
fi
wait
