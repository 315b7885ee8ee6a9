#!/usr/bin/env bash
# Builds the .deb and .rpm and checks them for real on this (Debian) machine, as root:
# file list and modes, conffiles, pam-auth-update enabling the module in common-auth,
# a login through a stack that includes common-auth asking for the code, dpkg -r
# restoring common-auth exactly, state surviving remove and reinstall, purge keeping
# enrolled users' state, and the rpm inspected and installed into a --root directory.
# Ends with "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."

passed=0
failed=0
check() { # check "what" command...
    local what=$1; shift
    if "$@" >/tmp/twofactor-pkgtest.out 2>&1; then
        passed=$((passed + 1)); echo "ok   $what"
    else
        failed=$((failed + 1)); echo "FAIL $what"
        # The end says why; a long banner before it would push the reason out of view.
        local lines; lines=$(wc -l < /tmp/twofactor-pkgtest.out)
        if [ "$lines" -gt 20 ]; then echo "     ($((lines - 20)) earlier lines left out)"; fi
        tail -n 20 /tmp/twofactor-pkgtest.out | sed 's/^/     /'
    fi
}

user=tfpkg$$
service=twofactor-pkgtest
work=$(mktemp -d)
cp -a /etc/pam.d/common-auth "$work/common-auth.orig"
cleanup() {
    dpkg --purge libpam-twofactor >/dev/null 2>&1 || true
    rm -f "/etc/pam.d/$service"
    userdel --remove "$user" >/dev/null 2>&1 || true
    rm -rf /var/lib/twofactor /etc/twofactor "$work"
}
trap cleanup EXIT

if dpkg -s libpam-twofactor >/dev/null 2>&1; then
    echo "libpam-twofactor is already installed here; refusing to test over it" >&2
    exit 1
fi

make deb rpm >"$work/build.log" 2>&1 || { cat "$work/build.log"; echo "0 passed, 1 failed"; exit 1; }
target=${CARGO_TARGET_DIR:-target}
deb=$(ls -t "$target"/debian/libpam-twofactor_*.deb | head -1)
rpm=$(ls -t "$target"/generate-rpm/pam_twofactor-*.rpm | head -1)
echo "built $deb ($(stat -c %s "$deb") bytes) and $rpm ($(stat -c %s "$rpm") bytes)"
dpkg -c "$deb" > "$work/deb.list"
cat "$work/deb.list"

# --- the .deb's contents
check "deb: setuid root twofactor" grep -Eq '^-rwsr-xr-x (root/root|0/0) .* \./usr/bin/twofactor$' "$work/deb.list"
check "deb: module in the multiarch security dir" grep -q '\./usr/lib/x86_64-linux-gnu/security/pam_twofactor.so$' "$work/deb.list"
check "deb: fleet client beside the security dir" grep -q '\./usr/lib/x86_64-linux-gnu/twofactor/fleet.so$' "$work/deb.list"
# The module links no TLS: a login on the file store loads neither library; the fleet
# client, loaded only for backend = "postgresql", does.
check "deb: module links no libssl or libcrypto" sh -c "dpkg-deb --fsys-tarfile '$deb' | tar -xO ./usr/lib/x86_64-linux-gnu/security/pam_twofactor.so > '$work/module.so' && readelf -d '$work/module.so' | tee '$work/module.needed' | grep -q NEEDED && ! grep -Eq 'libssl|libcrypto' '$work/module.needed'"
check "deb: the fleet client links libssl" sh -c "dpkg-deb --fsys-tarfile '$deb' | tar -xO ./usr/lib/x86_64-linux-gnu/twofactor/fleet.so > '$work/fleet.so' && readelf -d '$work/fleet.so' | grep -q libssl"
check "deb: pam-auth-update profile" grep -q '\./usr/share/pam-configs/twofactor$' "$work/deb.list"
check "deb: man pages" sh -c "grep -q man1/twofactor.1 '$work/deb.list' && grep -q man5/twofactor.toml.5 '$work/deb.list' && grep -q man8/pam_twofactor.8 '$work/deb.list'"
check "deb: completions" sh -c "grep -q bash-completion/completions/twofactor '$work/deb.list' && grep -q _twofactor '$work/deb.list' && grep -q twofactor.fish '$work/deb.list'"
check "deb: conffiles" sh -c "dpkg-deb -I '$deb' conffiles | grep -qx /etc/twofactor/config.toml && dpkg-deb -I '$deb' conffiles | grep -qx /etc/pam.d/twofactor"
check "deb: profile is Default: no" sh -c "dpkg-deb --fsys-tarfile '$deb' | tar -xO ./usr/share/pam-configs/twofactor | grep -qx 'Default: no'"

# --- install: nothing is enabled by itself
check "dpkg -i" dpkg -i "$deb"
check "state dir is root 0700" sh -c '[ "$(stat -c %U:%a /var/lib/twofactor)" = root:700 ]'
check "installed twofactor is setuid root" sh -c '[ "$(stat -c %U:%a /usr/bin/twofactor)" = root:4755 ]'
check "installing enabled nothing (common-auth unchanged)" cmp /etc/pam.d/common-auth "$work/common-auth.orig"
check "installed config is valid" twofactor check-config
# Every finding doctor shows right after install is in the README's sample, word for word.
check "doctor after install matches the README's sample" sh -c '
    twofactor doctor > "$1/doctor.out" 2>&1; rc=$?; cat "$1/doctor.out"
    [ "$rc" = 1 ] || exit 1
    grep -q "pam_twofactor.so is in no PAM stack" "$1/doctor.out" || exit 1
    grep -q "^ok       config /etc/twofactor/config.toml: valid" "$1/doctor.out" || exit 1
    grep -E "^(         |ok       )" "$1/doctor.out" | while IFS= read -r line; do
        grep -qF -- "$line" README.md || { echo "not in README: $line"; exit 1; }
    done' sh "$work"

# --- pam-auth-update puts the module into common-auth, and logins ask for the code
check "pam-auth-update --enable twofactor" pam-auth-update --enable twofactor
check "common-auth has pam_twofactor.so" grep -q 'pam_twofactor.so' /etc/pam.d/common-auth
useradd --create-home --shell /bin/sh "$user" && echo "$user:Pkg-Test-Pass-1" | chpasswd
printf 'version = 1\n[enforce]\nusers = ["%s"]\n' "$user" > /etc/twofactor/config.toml
printf '@include common-auth\naccount required pam_permit.so\n' > "/etc/pam.d/$service"
secret=$(twofactor enroll --user "$user" --no-verify --json | sed -n 's/.*"secret": "\([A-Z2-7]*\)".*/\1/p')
check "enrolled through the installed CLI" test -n "$secret"
check "login via common-auth asks for the code and accepts it" sh -c \
    "printf 'Pkg-Test-Pass-1\n%s\n' \$(oathtool --totp -b $secret) | pamtester $service $user authenticate 2>&1 | tee /dev/stderr | grep -q 'Authentication code' "
check "login via common-auth refuses a wrong code" sh -c \
    "! printf 'Pkg-Test-Pass-1\n000000\n000000\n000000\n' | pamtester $service $user authenticate"
check "a wrong password ends common-auth before the module asks anything" sh -c \
    "out=\$(printf 'not-the-password\n000000\n' | pamtester $service $user authenticate 2>&1); echo \"\$out\"; echo \"\$out\" | grep -q 'Authentication failure' && ! echo \"\$out\" | grep -q 'Authentication code'"

# --- remove restores common-auth exactly and keeps state; reinstall finds it
check "dpkg -r" dpkg -r libpam-twofactor
check "dpkg -r restored common-auth exactly" cmp /etc/pam.d/common-auth "$work/common-auth.orig"
check "state survives remove" test -f "/var/lib/twofactor/$user.json"
check "config kept on remove" test -f /etc/twofactor/config.toml
check "reinstall" dpkg -i --force-confold "$deb"
check "state still enrolled after reinstall" sh -c "twofactor status $user --json | grep -q '\"enrolled\": true'"
check "reinstall did not enable the module" cmp /etc/pam.d/common-auth "$work/common-auth.orig"
# The README's fleet setup, with the installed package, on a cluster as pg_createcluster
# makes it.
check "fleet on a stock Debian cluster: the README's CA, fleet init as root, add-host, the admin view, log, revocation, --retire" \
    bash packaging/test-stock-fleet.sh
check "purge keeps enrolled users' state" sh -c "dpkg --purge libpam-twofactor && test -f /var/lib/twofactor/$user.json && ! test -e /usr/bin/twofactor"

# --- the .rpm, with Debian's rpm tool
rpm -qplv "$rpm" > "$work/rpm.list" 2>/dev/null
cat "$work/rpm.list"
check "rpm: setuid twofactor" grep -Eq '^-rwsr-xr-x .* /usr/bin/twofactor$' "$work/rpm.list"
check "rpm: module in /usr/lib64/security" grep -q ' /usr/lib64/security/pam_twofactor.so$' "$work/rpm.list"
check "rpm: fleet client in /usr/lib64/twofactor" grep -q ' /usr/lib64/twofactor/fleet.so$' "$work/rpm.list"
check "rpm: config files are noreplace" sh -c "rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' '$rpm' 2>/dev/null | grep -Eq '^/etc/twofactor/config.toml c.*n'"
check "rpm: requires" sh -c "rpm -qpR '$rpm' 2>/dev/null | tee /dev/stderr | grep -q ."
check "rpm: scriptlets leave PAM alone" sh -c "rpm -qp --scripts '$rpm' 2>/dev/null | tee /dev/stderr | grep -q 'install -d -m 0700' && ! rpm -qp --scripts '$rpm' 2>/dev/null | grep -Eq 'pam.d|authselect|pam-auth-update'"
root=$work/rpmroot
mkdir -p "$root"
check "rpm: install into --root" sh -c "rpm --root '$root' --initdb && rpm -i --root '$root' --nodeps --noscripts --nosignature '$rpm'"
check "rpm: files in the root" sh -c "[ \"\$(stat -c %a '$root/usr/bin/twofactor')\" = 4755 ] && test -f '$root/usr/lib64/security/pam_twofactor.so' && test -f '$root/etc/twofactor/config.toml'"

# --- the demo comes up, takes an ssh login with an oathtool code, and tears down
check "make demo (DEMO_CHECK=1)" sh -c "DEMO_CHECK=1 DEMO_PORT=2222 make demo"
check "demo left nothing behind" sh -c "! id demo && ! test -e /etc/pam.d/twofactor-demo && ! ls -d /tmp/twofactor-demo.* 2>/dev/null"
check "demo left no process" sh -c "! pgrep -fa '/tmp/[t]wofactor-demo\.'"

# --- the fleet demo: one database, two sshd hosts, enrol on one, log in on the other
# Ports of its own: nothing depends on the demo's sshd having let go of 2222.
check "make demo-fleet (DEMO_CHECK=1)" sh -c "DEMO_CHECK=1 DEMO_PORT_A=2232 DEMO_PORT_B=2233 make demo-fleet"
check "demo-fleet left nothing behind" sh -c "! id fleetdemo && ! test -e /etc/pam.d/twofactor-fleet-a && ! test -e /etc/pam.d/twofactor-fleet-b && ! ls -d /tmp/twofactor-fleet-demo.* 2>/dev/null"
# The pattern cannot match its own command line: the brackets are not in the path.
check "demo-fleet left no process" sh -c "! pgrep -fa '/tmp/[t]wofactor-fleet-demo'"

# --- the same on three Patroni nodes with etcd
check "make demo-fleet HA=1 (DEMO_CHECK=1)" sh -c "DEMO_CHECK=1 HA=1 DEMO_PORT_A=2242 DEMO_PORT_B=2243 DEMO_PG_PORT=56432 make demo-fleet"
check "demo-fleet HA=1 left nothing behind" sh -c "! id fleetdemo && ! ls -d /tmp/twofactor-fleet-demo.* 2>/dev/null"
check "demo-fleet HA=1 left no process" sh -c "! pgrep -fa '/tmp/[t]wofactor-fleet-demo' && ! pgrep -fa '[e]tcd --name demo'"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
