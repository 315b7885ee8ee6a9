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
# HA=1: the database is three PostgreSQL nodes run by Patroni with etcd (synchronous
# mode, strict), every node listed in each host's config; the command that kills the
# leader is printed, to watch a failover from an ssh session.
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
    # HA=1: Patroni stops its PostgreSQL on SIGTERM; anything left is stopped at once.
    pkill -TERM -f "patroni $dir/pg/node" 2>/dev/null || true
    for _ in $(seq 100); do
        pgrep -f "patroni $dir/pg/node" >/dev/null || break
        sleep 0.1
    done
    pkill -KILL -f "patroni $dir/pg/node" 2>/dev/null || true
    pkill -f "etcd --name demo --data-dir $dir/pg/etcd" 2>/dev/null || true
    for data in "$dir/pg/data" "$dir"/pg/node*/data; do
        if [ -f "$data/postmaster.pid" ]; then
            runuser -u postgres -- "$pg_bin/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
        fi
    done
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
for n in 0 1 2; do issue "node$n" localhost "IP:127.0.0.1,DNS:localhost"; done
issue host-a host-a.fleet.demo
issue host-b host-b.fleet.demo
issue admin admin-demo
chmod 0644 "$pki/ca.crt" "$pki"/*.crt

single_setup() {
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
    # What fleet init asked for, with this demo's addresses and certificate names: each
    # host logs in as a role of its own, and add-host prints its exact pg_ident.conf line.
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
    db_hosts="\"127.0.0.1:$pg_port\""
    db_log() { tail -n 3 "$pg/data/server.log"; }
}
# --- 2 (HA=1). Three PostgreSQL nodes run by Patroni, with etcd, as the README's
# "High availability" chapter sets them up: one server certificate per node, the key
# file at the same path on every node, pg_hba and pg_ident written by Patroni.
ha_nodes=(0 1 2)
ha_port() { echo $((pg_port + $1)); }
ha_rest() { echo $((pg_port + 100 + $1)); }
ha_setup() {
    pg=$dir/pg
    install -d -m 0755 "$pg"
    install -d -m 0700 -o postgres -g postgres "$pg/etcd"
    (umask 077; openssl rand -hex 32 > "$pg/fleet.key")
    chown postgres:postgres "$pg/fleet.key"
    chmod 0400 "$pg/fleet.key"
    runuser -u postgres -- etcd --name demo --data-dir "$pg/etcd" \
        --listen-client-urls "http://127.0.0.1:$((pg_port + 200))" \
        --advertise-client-urls "http://127.0.0.1:$((pg_port + 200))" \
        --listen-peer-urls "http://127.0.0.1:$((pg_port + 201))" \
        --initial-advertise-peer-urls "http://127.0.0.1:$((pg_port + 201))" \
        --initial-cluster "demo=http://127.0.0.1:$((pg_port + 201))" \
        --log-level warn > "$pg/etcd.log" 2>&1 &
    pids+=($!)
    for n in "${ha_nodes[@]}"; do
        nd=$pg/node$n
        install -d -m 0700 -o postgres -g postgres "$nd"
        install -m 0600 -o postgres -g postgres "$pki/node$n.crt" "$pki/node$n.key" "$pki/ca.crt" "$nd/"
        cat > "$nd/patroni.yml" <<YML
scope: twofactor-demo
name: node$n
log:
  level: WARNING
restapi:
  listen: 127.0.0.1:$(ha_rest "$n")
  connect_address: 127.0.0.1:$(ha_rest "$n")
etcd3:
  hosts: 127.0.0.1:$((pg_port + 200))
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 2
    retry_timeout: 3
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    synchronous_mode_strict: true
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_log_hints: 'on'
  initdb:
  - encoding: UTF8
  - data-checksums
postgresql:
  listen: 127.0.0.1:$(ha_port "$n")
  connect_address: 127.0.0.1:$(ha_port "$n")
  data_dir: $nd/data
  bin_dir: $pg_bin
  pgpass: $nd/pgpass
  authentication:
    superuser: {username: postgres, password: demo-super}
    replication: {username: replicator, password: demo-repl}
    rewind: {username: rewinder, password: demo-rewind}
  parameters:
    unix_socket_directories: $nd
    ssl: 'on'
    ssl_cert_file: $nd/node$n.crt
    ssl_key_file: $nd/node$n.key
    ssl_ca_file: $nd/ca.crt
  pg_hba:
  - local all all trust
  - host replication replicator 127.0.0.1/32 scram-sha-256
  - host all postgres,rewinder 127.0.0.1/32 scram-sha-256
  - hostssl twofactor +twofactor_hosts,twofactor_admin 127.0.0.1/32 cert map=twofactor
  pg_ident:
  - twofactor admin-demo twofactor_admin
YML
        chown postgres:postgres "$nd/patroni.yml"
        HOME=$nd runuser -u postgres -- patroni "$nd/patroni.yml" > "$pg/node$n.log" 2>&1 &
        pids+=($!)
    done
    leader=
    for _ in $(seq 300); do
        for n in "${ha_nodes[@]}"; do
            if curl -sf -o /dev/null "http://127.0.0.1:$(ha_rest "$n")/primary"; then leader=$n; fi
        done
        [ -n "$leader" ] && break
        sleep 0.3
    done
    if [ -z "$leader" ]; then
        echo "demo-fleet: Patroni elected no leader:" >&2
        tail -n 5 "$pg"/node*.log >&2
        exit 1
    fi
    runuser -u postgres -- "$pg_bin/createdb" -h "$pg/node$leader" -p "$(ha_port "$leader")" twofactor
    admin_url="host=$pg/node$leader port=$(ha_port "$leader") user=postgres dbname=twofactor"
    "$twofactor" fleet init --admin-url "$admin_url" --key-file "$pg/fleet.key" > "$dir/fleet-init.txt"
    # Patroni owns pg_ident on every node: the lines add-host prints go into its config,
    # and a SIGHUP makes each Patroni write them out and reload PostgreSQL.
    for h in host-a host-b; do
        line=$("$twofactor" --json fleet add-host "$h.fleet.demo" --admin-url "$admin_url" \
            | sed -n 's/.*"pg_ident": *"\([^"]*\)".*/\1/p' | tr -s ' ')
        for n in "${ha_nodes[@]}"; do echo "  - $line" >> "$pg/node$n/patroni.yml"; done
    done
    pkill -HUP -f "patroni $pg/node" || true
    # Every standby running, one of them synchronous, before anyone logs in: with
    # synchronous_mode_strict a commit waits until Patroni has named a synchronous
    # standby, and a login would meet its deadline first.
    for _ in $(seq 300); do
        replicas=0 sync=0
        for n in "${ha_nodes[@]}"; do
            curl -sf -o /dev/null "http://127.0.0.1:$(ha_rest "$n")/replica" && replicas=$((replicas + 1))
            curl -sf -o /dev/null "http://127.0.0.1:$(ha_rest "$n")/sync" && sync=1
        done
        [ "$replicas" = 2 ] && [ "$sync" = 1 ] && break
        sleep 0.3
    done
    if [ "$replicas" != 2 ] || [ "$sync" != 1 ]; then
        echo "demo-fleet: $replicas of 2 standbys running, synchronous standby named: $sync" >&2
        tail -n 5 "$pg"/node*.log >&2
        exit 1
    fi
    db_hosts=$(for n in "${ha_nodes[@]}"; do printf '"127.0.0.1:%s", ' "$(ha_port "$n")"; done)
    db_hosts=${db_hosts%, }
    db_log() { tail -n 3 "$pg"/node*.log; }
}

if [ "${HA:-0}" = 1 ]; then ha_setup; else single_setup; fi

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
hosts = [$db_hosts]
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
        db_log >&2
        exit 1
    fi
    sleep 0.1
done

cat <<TEXT

twofactor fleet demo is running: two sshd hosts share one $(if [ "${HA:-0}" = 1 ]; then echo "database on three Patroni nodes"; else echo "PostgreSQL database"; fi).

  Host A:    ssh -p $port_a $user@127.0.0.1
  Host B:    ssh -p $port_b $user@127.0.0.1
  Password:  $password

Enrol at the first login on either host (scan the QR code, or compute codes with
oathtool --totp -b KEY), then log in on the other host with the next code: one
enrolment, one replay guard and one lockout for both.

$(if [ "${HA:-0}" = 1 ]; then cat <<HA
The database is three PostgreSQL nodes run by Patroni (ports $(ha_port 0), $(ha_port 1),
$(ha_port 2)); both hosts list all three. See who leads:

  patronictl -c $pg/node0/patroni.yml list

Kill the leader as a crash would (its Patroni and PostgreSQL, SIGKILL), then bring it
back as a reboot would; logins pause for about 15 s, then go on, and the old leader
rejoins as a replica:

  L=\$(for n in 0 1 2; do curl -sf -o /dev/null http://127.0.0.1:\$(($pg_port + 100 + n))/primary && echo node\$n; done)
  pkill -KILL -f "patroni $pg/\$L/"; kill -KILL \$(head -1 $pg/\$L/data/postmaster.pid)
  HOME=$pg/\$L runuser -u postgres -- patroni $pg/\$L/patroni.yml >> $pg/\$L.log 2>&1 &

HA
fi)
As the administrator:  $twofactor --config $dir/admin.toml status --all
A host's own check:    $twofactor --config $dir/host-a.toml doctor
The database:          runuser -u postgres -- $pg_bin/psql -h $(if [ "${HA:-0}" = 1 ]; then echo "$pg/node0 -p $(ha_port 0)"; else echo "$pg/sock -p $pg_port"; fi) twofactor

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
        db_log || true
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
