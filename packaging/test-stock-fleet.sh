#!/usr/bin/env bash
# The README's fleet setup on a PostgreSQL cluster exactly as Debian's pg_createcluster
# makes it (peer authentication on the socket, scram-sha-256 on TCP), with the installed
# twofactor: the README's CA block run as written, fleet init and add-host as root, a
# login of a required user who never enrolled on a host, then the admin view, the
# audit, a revoked certificate and rotate-key. Prints what an admin would see; exits
# non-zero at the first check that fails. Run as root, with the package installed.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

port=${STOCK_PG_PORT:-5499}
cluster=tfstock$$
user=tfwalk$$
password=Stock-Fleet-Pass-1
service=twofactor-stock-fleet
work=$(mktemp -d /tmp/twofactor-stock-fleet.XXXXXX)
key=/etc/postgresql/twofactor-stock-$$.key
key2=/etc/postgresql/twofactor-stock-$$-2.key
cleanup() {
    pg_dropcluster --stop 15 "$cluster" >/dev/null 2>&1 || true
    # pg_dropcluster leaves the files this script put beside the cluster's config.
    rm -rf "/etc/postgresql/15/$cluster"
    userdel --remove "$user" >/dev/null 2>&1 || true
    rm -f "/etc/pam.d/$service" "$key" "$key2"
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAILED: $*" >&2; exit 1; }
show() { printf '\n# %s\n' "$*"; } # a transcript heading

# --- The cluster as Debian makes it, and the README's CA, run as written.
pg_createcluster 15 "$cluster" -p "$port" >/dev/null
conf=/etc/postgresql/15/$cluster
grep -Eq '^local +all +postgres +peer' "$conf/pg_hba.conf" || fail "not a stock pg_hba.conf"
awk '/checked by packaging\/test-stock-fleet.sh/ {f = 1; next}
     f && /^```sh/ {b = 1; next}
     b && /^```/ {exit}
     b' "$repo/README.md" > "$work/ca.sh"
grep -q 'openssl ca -config ca.cnf' "$work/ca.sh" || fail "the README's CA block was not found"
# The server here answers on localhost: one more certificate through the README's issue().
(cd "$work" && bash -euo pipefail -c \
    '. ./ca.sh; issue localdb localhost server "DNS:localhost,IP:127.0.0.1"' >"$work/ca.log" 2>&1) \
    || { cat "$work/ca.log"; fail "the README's CA block"; }
ca=$work/fleet-ca
chmod 0600 "$ca"/*.key
for c in web1 admin-alice localdb; do
    openssl verify -CAfile "$ca/ca.crt" "$ca/$c.crt" >/dev/null || fail "$c.crt does not verify"
done
start=$(date -d "$(openssl x509 -in "$ca/web1.crt" -noout -startdate | cut -d= -f2)" +%s)
[ $(($(date +%s) - start)) -ge 3000 ] || fail "web1.crt does not start an hour back"
test -s "$ca/crl.pem" || fail "no CRL"

install -m 0600 -o postgres -g postgres "$ca/localdb.crt" "$ca/localdb.key" "$ca/ca.crt" \
    "$ca/crl.pem" "$conf/"
cat >> "$conf/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
ssl = on
ssl_cert_file = '$conf/localdb.crt'
ssl_key_file = '$conf/localdb.key'
ssl_ca_file = '$conf/ca.crt'
ssl_crl_file = '$conf/crl.pem'
CONF
pg_ctlcluster 15 "$cluster" start
runuser -u postgres -- createdb -p "$port" twofactor
(umask 077; openssl rand -hex 32 > "$key")
chown postgres: "$key"

# --- fleet init as root, over the socket, as the README says.
url="host=/var/run/postgresql port=$port user=postgres dbname=twofactor"
show "twofactor fleet init --admin-url '$url' --key-file $key --issuer 'Example Corp'"
twofactor fleet init --admin-url "$url" --key-file "$key" --issuer "Example Corp" | tee "$work/init.txt"
line=$(sed -n 's/.*put the pg_hba.conf lines above line \([0-9]*\) (host all all 127.0.0.1\/32 scram-sha-256).*/\1/p' "$work/init.txt")
[ -n "$line" ] || fail "fleet init did not say above which pg_hba.conf line its lines go"
# First as a hurried admin does it: appended, below Debian's broader lines.
grep '^hostssl' "$work/init.txt" > "$work/hba"
cp "$conf/pg_hba.conf" "$work/pg_hba.stock"
cat "$work/hba" >> "$conf/pg_hba.conf"

show "twofactor fleet add-host web1.example.com --admin-url '$url'"
twofactor fleet add-host web1.example.com --admin-url "$url" | tee "$work/add.txt"
grep -q 'openssl ca -config ca.cnf -batch -extensions client -in web1.example.com.csr' "$work/add.txt" \
    || fail "add-host did not print the signing line"
grep '^twofactor  web1.example.com  ' "$work/add.txt" >> "$conf/pg_ident.conf" \
    || fail "add-host printed no pg_ident line"
echo "twofactor  admin-alice  twofactor_admin" >> "$conf/pg_ident.conf"
pg_ctlcluster 15 "$cluster" reload

# --- A host (web1) and the admin machine (admin-alice), each with its own config.
config() { # NAME CERT EXTRA
    cat > "$work/$1.toml" <<TOML
version = 1
$3
[enroll]
issuer = "Example Corp"
at_login = false
grace_logins = 3
[storage]
backend = "postgresql"
[storage.postgresql]
hosts = ["localhost:$port"]
dbname = "twofactor"
ca = "$ca/ca.crt"
cert = "$ca/$2.crt"
key = "$ca/$2.key"
TOML
    chmod 0644 "$work/$1.toml"
}
config web1 web1 "[enforce]
users = [\"$user\"]"
config admin admin-alice ""
show "doctor on web1 while the lines sit below Debian's 'host all all 127.0.0.1/32 scram-sha-256'"
twofactor --config "$work/web1.toml" --json doctor --pam-dir /etc/pam.d --sshd-config /nonexistent \
    > "$work/doctor-order.json" || true
grep -o 'password missing[^"]*' "$work/doctor-order.json" | head -1
grep -q "move twofactor's lines above it" "$work/doctor-order.json" \
    || { cat "$work/doctor-order.json"; fail "doctor does not explain the pg_hba.conf order"; }
# Then where fleet init said.
cp "$work/pg_hba.stock" "$conf/pg_hba.conf"
sed -i "$((line - 1))r $work/hba" "$conf/pg_hba.conf"
pg_ctlcluster 15 "$cluster" reload
twofactor fleet init --admin-url "$url" --key-file "$key" > "$work/init2.txt"
grep -q "already has twofactor's certificate lines" "$work/init2.txt" \
    || fail "a second fleet init does not see its pg_hba.conf lines in place"

# A host's file store moved from the admin machine, as the README says: a copy of the
# state directory, --state-dir, and the admin key never on the host.
show "twofactor --config admin.toml fleet import --state-dir (a copy of a host's state)"
useradd --create-home --shell /bin/sh "$user"
mkdir -m 0700 "$work/state"
cat > "$work/files.toml" <<TOML
version = 1
[storage]
state_dir = "$work/state"
TOML
twofactor --config "$work/files.toml" enroll --user "$user" --no-verify --json > /dev/null
tar -C "$work" -czf "$work/state.tar.gz" state
mkdir -m 0700 "$work/copy" && tar -C "$work/copy" -xzf "$work/state.tar.gz"
twofactor --config "$work/admin.toml" fleet import --state-dir "$work/copy/state" | tee "$work/import.txt"
twofactor --config "$work/admin.toml" --json status "$user" > "$work/imported.json"
grep -q '"enrolled": true' "$work/imported.json" || fail "fleet import --state-dir did not move $user"
twofactor --config "$work/admin.toml" reset "$user" > /dev/null
echo "$user:$password" | chpasswd
cat > "/etc/pam.d/$service" <<PAM
auth     requisite pam_unix.so
auth     required  ${TWOFACTOR_MODULE:-pam_twofactor.so} config=$work/web1.toml
account  required  pam_permit.so
PAM

show "a login on web1 of $user, required there and never enrolled (a grace login)"
printf '%s\n' "$password" | pamtester "$service" "$user" authenticate 2>&1 | tee "$work/login.txt"
grep -q "successfully authenticated" "$work/login.txt" || fail "the grace login failed"

show "twofactor --config admin.toml status --all"
twofactor --config "$work/admin.toml" status --all | tee "$work/all.txt"
grep -Eq "^  $user: required by web1.example.com" "$work/all.txt" \
    || fail "status --all does not list $user as required by web1 and not enrolled"

show "twofactor --config admin.toml status $user"
twofactor --config "$work/admin.toml" status "$user" | tee "$work/one.txt"
grep -q "required by 1 host" "$work/one.txt" || fail "status USER with the admin config"

show "twofactor --config admin.toml enroll --user $user --no-verify --json (the issuer)"
twofactor --config "$work/admin.toml" --json enroll --user "$user" --no-verify > "$work/enrol.json"
grep -q 'issuer=Example%20Corp' "$work/enrol.json" || fail "the enrolment is not labelled with the fleet's issuer"
grep -q 'issuer=Example%20Corp' "$work/enrol.json" && echo "otpauth URI names issuer Example Corp"

show "twofactor --config admin.toml log --user $user"
twofactor --config "$work/admin.toml" log --user "$user" | tee "$work/log.txt"
grep -q "web1.example.com .* grace" "$work/log.txt" || fail "the audit lacks web1's grace login"

show "twofactor fleet hosts --admin-url '$url'"
twofactor fleet hosts --admin-url "$url" | tee "$work/hosts.txt"
grep -q "^CRL $conf/crl.pem: next update due" "$work/hosts.txt" || fail "fleet hosts does not show the CRL"

show "doctor on web1"
twofactor --config "$work/web1.toml" --json doctor --pam-dir /etc/pam.d --sshd-config /nonexistent \
    > "$work/doctor.json" || true
grep -o '"fleet: database reachable as tf_host_web1_example_com[^"]*"' "$work/doctor.json" \
    || { cat "$work/doctor.json"; fail "doctor on web1 does not say the database is fine"; }

show "twofactor fleet rotate-key ... --retire the old key"
(umask 077; openssl rand -hex 32 > "$key2")
chown postgres: "$key2"
twofactor fleet rotate-key --admin-url "$url" --key-file "$key2" | tee "$work/rotate.txt"
grep -q "Their users: $user" "$work/rotate.txt" || fail "rotate-key does not name $user"
twofactor fleet rotate-key --admin-url "$url" --key-file "$key2" --retire "$key" | tee "$work/retire.txt"
grep -q "Retired $key: the backup codes of 1 user voided: $user" "$work/retire.txt" || fail "--retire"

show "the next login of $user on web1: told that the backup codes are void"
secret=$(sed -n 's/.*"secret": "\([A-Z2-7]*\)".*/\1/p' "$work/enrol.json")
[ -n "$secret" ] || fail "no secret in the enrolment's JSON"
printf '%s\n%s\n' "$password" "$(oathtool --totp -b "$secret")" \
    | pamtester "$service" "$user" authenticate 2>&1 | tee "$work/voided.txt"
grep -q "successfully authenticated" "$work/voided.txt" || fail "the login after --retire failed"
grep -q "Your backup codes no longer work" "$work/voided.txt" || fail "the user was not told"

show "web1's certificate revoked as the README says: the database refuses it"
serial=$(awk -F'\t' '$6 == "/CN=web1.example.com" {print $4}' "$ca/index.txt")
(cd "$ca" && openssl ca -config ca.cnf -revoke "newcerts/$serial.pem" \
    && openssl ca -config ca.cnf -gencrl -out crl.pem) >"$work/revoke.log" 2>&1 \
    || { cat "$work/revoke.log"; fail "openssl ca -revoke with the README's CA"; }
install -m 0600 -o postgres -g postgres "$ca/crl.pem" "$conf/crl.pem"
pg_ctlcluster 15 "$cluster" reload
sleep 1
if printf '%s\n' "$password" | pamtester "$service" "$user" authenticate >"$work/revoked.txt" 2>&1; then
    fail "a revoked certificate still logs in"
fi
grep -q "cannot retrieve authentication info" "$work/revoked.txt" || { cat "$work/revoked.txt"; fail "not refused as unreachable"; }
echo "refused: the two-factor server cannot be reached (certificate revoked)"

echo
echo "stock-cluster fleet: all checks passed"
