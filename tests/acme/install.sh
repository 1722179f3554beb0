#!/usr/bin/env bash
# Idempotent installer for the ACME oneM2M CSE (PyPI: acmecse) used by the
# integration tests. Creates a venv and installs a pinned acmecse into it.
# Prints the absolute path of the venv's python on stdout (last line); all
# other output goes to stderr.
#
#   M2M_ACME_VENV     venv directory (default: <repo>/target/acme-venv)
#   M2M_ACME_VERSION  acmecse version to install (default: pinned below)
set -euo pipefail

ACME_VERSION="${M2M_ACME_VERSION:-2026.5.3}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${M2M_ACME_VENV:-$repo/target/acme-venv}"
py="$venv/bin/python"
stamp="$venv/.acmecse-$ACME_VERSION"

log() { echo "install.sh: $*" >&2; }

# Fast path: already installed at the pinned version.
if [[ -x "$py" && -f "$stamp" ]]; then
    echo "$py"
    exit 0
fi

# Serialize concurrent installs (several test binaries may call us at once).
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi
if [[ -x "$py" && -f "$stamp" ]]; then
    echo "$py"
    exit 0
fi

base_python="${M2M_ACME_BASE_PYTHON:-$(command -v python3)}"
[[ -n "$base_python" ]] || { log "python3 not found"; exit 1; }

# Make sure venv (with ensurepip) works; Debian's system python needs python3-venv.
probe="$(mktemp -d)"
if ! "$base_python" -m venv "$probe/v" >/dev/null 2>&1; then
    log "python3 -m venv failed; installing python3-venv via apt-get"
    if command -v apt-get >/dev/null 2>&1; then
        apt-get install -y -q python3-venv >&2 || { apt-get update -q >&2 && apt-get install -y -q python3-venv >&2; }
    fi
    rm -rf "$probe/v"
    "$base_python" -m venv "$probe/v" >/dev/null 2>&1 || { rm -rf "$probe"; log "python3 -m venv still fails"; exit 1; }
fi
rm -rf "$probe"

if [[ ! -x "$py" ]]; then
    log "creating venv at $venv"
    "$base_python" -m venv "$venv" >&2
fi

# Transitive dependencies as resolved for acmecse 2026.5.3 on CPython 3.11 /
# x86_64 Linux (pip freeze of a working venv), so a new upstream release of
# some dependency cannot change ACME's behaviour under the tests.
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
cat >"$constraints" <<'PINS'
blinker==1.9.0
cachetools==8.0.2
cbor2==6.3.0
certifi==2026.10.19.post1
charset-normalizer==3.5.3
click==8.5.1
CoAPthon3-ACME-CSE==1.1.4
Flask==3.1.3
flask-cors==6.0.5
idna==3.20
inquirerpy==0.3.4
isodate==0.7.2
itsdangerous==2.2.0
Jinja2==3.1.6
kazoo==2.11.0
linkify-it-py==2.2.0
markdown-it-py==4.3.0
MarkupSafe==3.0.4
mdit-py-plugins==0.7.0
mdurl==0.1.2
numpy==2.4.6
paho-mqtt==2.2.0
pfzy==0.3.4
platformdirs==4.14.8
plotext==5.3.2
prompt_toolkit==3.0.53
psycopg2-binary==2.9.13
Pygments==2.21.0
pyparsing==3.3.3
pyperclip==1.11.0
python-dotenv==1.2.4
rdflib==7.6.0
requests==2.34.2
rich==15.0.0
shapely==2.2.0
textual==5.2.0
textual-plotext==1.0.1
tinydb==4.9.0
typing_extensions==4.16.0
urllib3==2.8.0
waitress==3.0.2
wcwidth==0.9.4
websockets==17.4
Werkzeug==3.1.9
PINS

log "installing acmecse==$ACME_VERSION"
pip_install() { "$py" -m pip install -q --disable-pip-version-check "$@" "acmecse==$ACME_VERSION" >&2; }
if [[ "$ACME_VERSION" != "2026.5.3" ]]; then
    pip_install
elif ! pip_install -c "$constraints"; then
    log "install with pinned dependencies failed (other platform/python?); retrying unpinned"
    pip_install
fi
# Sanity check: the package imports.
"$py" -c 'import acmecse' >&2 || { log "acmecse installed but 'import acmecse' fails"; exit 1; }
rm -f "$venv"/.acmecse-*
touch "$stamp"
echo "$py"
