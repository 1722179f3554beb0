#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what is missing
# (Mosquitto, a Python venv with the ACME CSE for the interop tests), then
# runs rustfmt, clippy and every test, then builds, installs and purges the
# Debian package (packaging/test-deb.sh, as root). CI runs exactly this
# (.ci/run).
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n== %s\n' "$*"; }

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    step "installing mosquitto"
    if [ "$(id -u)" -ne 0 ]; then
        echo "mosquitto is missing and this is not root: apt-get install mosquitto" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
fi
# The package may start a system broker on 1883; the tests use their own.
if ! command -v openssl >/dev/null 2>&1; then
    step "installing openssl (certificates for the mqtts:// test)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
fi

if ! command -v systemd-analyze >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
    step "installing systemd and dpkg (the package test checks the unit)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd dpkg >/dev/null
fi

for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        step "installing $component"
        rustup component add "$component"
    fi
done

step "ACME CSE for the interop tests"
bash tests/acme/install.sh >/dev/null

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

step "cargo test --all-targets"
cargo test --all-targets

step "Debian package: build, inspect, install, check, remove, purge"
bash packaging/test-deb.sh
