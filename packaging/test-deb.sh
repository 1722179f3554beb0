#!/usr/bin/env bash
# Builds the Debian package, inspects it, installs it on this machine, checks
# what it installed (the binary, the config passing check-config, the user,
# the state directory, man page, completions, the unit as systemd sees it and
# its sandboxing score) and removes and purges it. Needs root (CI is) and
# dpkg; test.sh runs it. Safe to run again: a copy left installed by an
# earlier run is purged first.
#
#   M2MNODE_DEB_DEBUG=1   package the debug binary (quicker; same files)
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "test-deb: FAIL: $*" >&2; exit 1; }
ok() { echo "test-deb: ok: $*"; }

[[ "$(id -u)" -eq 0 ]] || fail "installing a package needs root"
command -v systemd-analyze >/dev/null || fail "systemd-analyze is missing (apt-get install systemd)"

status="$(dpkg-query -W -f='${Status}' m2mnode 2>/dev/null || true)"
if [[ "$status" == *installed* || "$status" == *config-files* ]]; then
    echo "test-deb: purging the m2mnode left by an earlier run"
    dpkg --purge m2mnode >/dev/null
fi

deb="$(packaging/build-deb.sh ${M2MNODE_DEB_DEBUG:+--debug} | tail -1)"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
arch="$(dpkg --print-architecture)"
[[ "$(basename "$deb")" == "m2mnode_${version}_${arch}.deb" ]] || fail "package named $deb"
ok "built $deb"

# ----- inspect -----
info="$(dpkg-deb -I "$deb")"
for field in "Package: m2mnode" "Version: $version" "Architecture: $arch"; do
    grep -q "^ $field\$" <<<"$info" || fail "dpkg-deb -I: no '$field'"
done
contents="$(dpkg-deb -c "$deb" | awk '{print $NF}' | sed 's|^\./|/|')"
for path in \
    /usr/bin/m2mnode \
    /lib/systemd/system/m2mnode.service \
    /usr/lib/sysusers.d/m2mnode.conf \
    /etc/m2mnode/m2mnode.toml \
    /usr/share/man/man1/m2mnode.1.gz \
    /usr/share/man/man1/m2mnode-run.1.gz \
    /usr/share/bash-completion/completions/m2mnode \
    /usr/share/zsh/vendor-completions/_m2mnode \
    /usr/share/fish/vendor_completions.d/m2mnode.fish \
    /usr/share/doc/m2mnode/README.md \
    /usr/share/doc/m2mnode/operations.md \
    /usr/share/doc/m2mnode/copyright \
    /usr/share/doc/m2mnode/changelog.gz; do
    grep -qx "$path" <<<"$contents" || fail "dpkg-deb -c: $path missing"
done
if compgen -G "examples/*.toml" >/dev/null; then
    for e in examples/*.toml; do
        grep -qx "/usr/share/doc/m2mnode/examples/$(basename "$e")" <<<"$contents" \
            || fail "dpkg-deb -c: example $e missing"
    done
fi
# (Outputs are read whole before grep: with pipefail, grep -q closing the
# pipe early would fail the producer.)
owners="$(dpkg-deb -c "$deb" | awk '{print $2}' | sort -u)"
[[ "$owners" == root/root ]] || fail "files not owned by root:root: $owners"
conffiles="$(dpkg-deb --ctrl-tarfile "$deb" | tar -xOf - ./conffiles)"
[[ "$conffiles" == /etc/m2mnode/m2mnode.toml ]] || fail "conffiles: $conffiles"
ok "inspected: control fields, $(wc -l <<<"$contents") paths, conffiles"

# ----- install -----
dpkg -i "$deb" >/dev/null || fail "dpkg -i"
trap 'dpkg --purge m2mnode >/dev/null 2>&1 || true' EXIT
[[ "$(dpkg-query -W -f='${Status}' m2mnode)" == "install ok installed" ]] || fail "not installed"
out="$(/usr/bin/m2mnode --version)"
[[ "$out" == "m2mnode $version" ]] || fail "m2mnode --version: $out"
/usr/bin/m2mnode check-config /etc/m2mnode/m2mnode.toml || fail "check-config on the installed config"
getent passwd m2mnode >/dev/null || fail "no m2mnode user"
[[ "$(stat -c '%U:%G %a' /var/lib/m2mnode)" == "m2mnode:m2mnode 700" ]] \
    || fail "/var/lib/m2mnode is $(stat -c '%U:%G %a' /var/lib/m2mnode)"
[[ "$(stat -c '%U:%G %a' /etc/m2mnode/m2mnode.toml)" == "root:m2mnode 640" ]] \
    || fail "m2mnode.toml is $(stat -c '%U:%G %a' /etc/m2mnode/m2mnode.toml)"
[[ "$(stat -c '%U %a %s' /etc/m2mnode/mqtt-password)" == "root 600 0" ]] \
    || fail "mqtt-password is $(stat -c '%U %a %s' /etc/m2mnode/mqtt-password)"
# The service user can read its config and write its store.
runuser -u m2mnode -- /usr/bin/m2mnode check-config /etc/m2mnode/m2mnode.toml >/dev/null \
    || fail "check-config as the m2mnode user"
if compgen -G "/etc/systemd/system/*.wants/m2mnode.service" >/dev/null; then
    fail "the unit was enabled on install"
fi
if command -v man >/dev/null; then
    page="$(man -P cat m2mnode 2>/dev/null)" || fail "man m2mnode"
    grep -q "SIGHUP" <<<"$page" || fail "man m2mnode has no SIGNALS section"
    man_check=yes
else
    man_check=no
fi
ok "installed: --version, check-config (root and m2mnode), user, modes, not enabled, man ($man_check)"

# ----- the unit as installed -----
unit=/lib/systemd/system/m2mnode.service
verify="$(systemd-analyze verify --man="$man_check" "$unit" 2>&1)" || fail "systemd-analyze verify: $verify"
[[ -z "$verify" ]] || fail "systemd-analyze verify says: $verify"
security="$(systemd-analyze security --offline=yes "$unit" 2>&1)" || true
exposure="$(sed -n 's/.*Overall exposure level for m2mnode.service: \([0-9.]*\).*/\1/p' <<<"$security")"
[[ -n "$exposure" ]] || fail "no exposure level: $security"
awk -v e="$exposure" 'BEGIN { exit !(e <= 2.5) }' || fail "exposure $exposure > 2.5"
ok "unit: systemd-analyze verify clean, exposure $exposure"

# ----- again (an upgrade in place), then remove and purge -----
dpkg -i "$deb" >/dev/null || fail "dpkg -i over itself"
/usr/bin/m2mnode check-config /etc/m2mnode/m2mnode.toml >/dev/null || fail "check-config after reinstall"
dpkg --remove m2mnode >/dev/null || fail "dpkg --remove"
[[ ! -e /usr/bin/m2mnode && ! -e "$unit" ]] || fail "files left after remove"
[[ -f /etc/m2mnode/m2mnode.toml ]] || fail "remove took the conffile (only purge may)"
dpkg --purge m2mnode >/dev/null || fail "dpkg --purge"
trap - EXIT
dpkg-query -W m2mnode >/dev/null 2>&1 && fail "dpkg still knows m2mnode after purge"
[[ ! -e /etc/m2mnode && ! -e /var/lib/m2mnode ]] || fail "purge left /etc/m2mnode or /var/lib/m2mnode"
ok "reinstalled, removed (conffile kept), purged (nothing left)"
echo "test-deb: 1 passed, 0 failed"
