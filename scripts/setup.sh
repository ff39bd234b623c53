#!/usr/bin/env bash
# Install what building and testing Switchboard needs, and only what is missing.
#
#   scripts/setup.sh            everything `make test` needs
#   scripts/setup.sh --gateway  only what building and running the gateway needs (`make run`)
#
# Idempotent and quiet: prints nothing when everything is already there, one line per thing it
# installs, and the installer's log when something fails. Safe to run on every `make` call.
#
# What it sees to:
#   - Debian packages: cmake (pingora's libz-ng-sys), make (jemalloc: tikv-jemalloc-sys),
#     pkg-config; nats-server and chromium (tests, full only); podman and runc (the container
#     image build and tests, full only: podman runs containers with runc here, since crun fails
#     on hybrid cgroups)
#   - rustup components rustfmt and clippy (reported, not fatal, if rustup cannot fetch them)
#   - cargo-deny (cargo install from crates.io, full only): `make test` checks deny.toml with it
#   - e2e/browser/node_modules: playwright-core (npm) driving the system Chromium (full only)
#   - e2e/socketio/node_modules: socket.io and socket.io-client (npm) for the Socket.IO migration
#     test, gateway/tests/socketio.rs (full only)
#   - clients/js/node_modules: typescript and esbuild (npm) to build and size the JS client (full only)
#   - e2e/proto/node_modules: protobufjs and ws (npm) for the Node client of the binary room
#     protocol, gateway/tests/rooms_proto_node.rs (full only)
#   - e2e/yjs/node_modules: yjs, y-websocket and ws (npm) for gateway/tests/documents.rs
#   - .venv-chart/: the Helm chart tests' Python packages, charts/tests/requirements.txt (full only)
#   - .venv-autobahn/: Autobahn|Testsuite (`wstest`) in a Python 2.7 virtualenv (full only);
#     Python 2.7 is pyenv's 2.7.18, or $SWITCHBOARD_PYTHON2.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE=full
case "${1:-}" in
    "") ;;
    --gateway) MODE=gateway ;;
    -h | --help)
        sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "setup: unknown argument '$1' (expected --gateway or nothing)" >&2
        exit 64
        ;;
esac

# Pinned so every machine checks deny.toml with the same rules.
CARGO_DENY_VERSION=0.20.2

LOG="$(mktemp -t switchboard-setup.XXXXXX)"
trap 'rm -f "$LOG"' EXIT

say() { echo "setup: $*" >&2; }
fail() {
    say "FAILED: $*"
    if [ -s "$LOG" ]; then
        say "last lines of the installer output:"
        tail -n 40 "$LOG" >&2
    fi
    exit 1
}

# --- Debian packages -------------------------------------------------------------------------

missing_apt=()
have() { command -v "$1" >/dev/null 2>&1; }
have cmake || missing_apt+=(cmake)
have make || missing_apt+=(make)
have pkg-config || missing_apt+=(pkg-config)
if [ "$MODE" = full ] && ! have nats-server && [ ! -x /usr/sbin/nats-server ]; then
    missing_apt+=(nats-server)
fi
if [ "$MODE" = full ] && [ ! -x /usr/bin/chromium ]; then
    missing_apt+=(chromium)
fi
if [ "$MODE" = full ]; then
    have podman || missing_apt+=(podman)
    have runc || [ -x /usr/sbin/runc ] || missing_apt+=(runc)
fi

if [ "${#missing_apt[@]}" -gt 0 ]; then
    SUDO=()
    if [ "$(id -u)" -ne 0 ]; then
        have sudo || fail "need root (or sudo) to install: ${missing_apt[*]}"
        SUDO=(sudo -n)
    fi
    have apt-get || fail "apt-get not found; install by hand: ${missing_apt[*]}"
    say "installing ${missing_apt[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    # Package lists may be missing or stale on a fresh machine: refresh once, then install.
    "${SUDO[@]}" apt-get update -qq >>"$LOG" 2>&1 || fail "apt-get update"
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing_apt[@]}" >>"$LOG" 2>&1 ||
        fail "apt-get install ${missing_apt[*]}"
fi

# --- Rust toolchain components ---------------------------------------------------------------

have cargo || fail "cargo not found: install the Rust toolchain with rustup first"
if have rustup; then
    installed="$(rustup component list --installed 2>/dev/null || true)"
    for component in rustfmt clippy; do
        if ! grep -q "^${component}-" <<<"$installed"; then
            say "adding rustup component ${component}"
            if ! rustup component add "$component" >>"$LOG" 2>&1; then
                say "WARNING: could not add rustup component ${component} (offline?);" \
                    "\`make test\` needs it"
            fi
        fi
    done
fi
if [ "$MODE" = full ] && ! cargo nextest --version >/dev/null 2>&1; then
    say "note: cargo-nextest not found; \`make test\` falls back to \`cargo test\`"
fi
# cargo-deny: `make test` checks the dependency graph's licenses, bans and sources (deny.toml).
if [ "$MODE" = full ] && ! cargo deny --version >/dev/null 2>&1; then
    say "installing cargo-deny ${CARGO_DENY_VERSION} (cargo install from crates.io, a few minutes)"
    cargo install --locked --quiet "cargo-deny@${CARGO_DENY_VERSION}" >>"$LOG" 2>&1 ||
        fail "cargo install cargo-deny@${CARGO_DENY_VERSION}"
fi

[ "$MODE" = gateway ] && exit 0

# --- Node packages the suites drive (pinned by each folder's package-lock.json) ------------------
# npm_dir DIR WHY PKG...: `npm ci` in DIR unless every PKG is already installed there.
npm_dir() {
    local dir="$ROOT/$1" why="$2" pkg missing=0
    shift 2
    for pkg in "$@"; do
        [ -f "$dir/node_modules/$pkg/package.json" ] || missing=1
    done
    [ "$missing" = 0 ] && return 0
    have npm || fail "npm not found ($why needs Node.js and npm)"
    say "installing $* into ${dir#"$ROOT"/}/node_modules (npm) for $why"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) >>"$LOG" 2>&1 ||
        fail "npm ci in ${dir#"$ROOT"/}"
}
# playwright-core drives the system Chromium (no browser download).
npm_dir e2e/browser "the browser tests" playwright-core
npm_dir e2e/socketio "the Socket.IO migration test" socket.io socket.io-client
npm_dir clients/js "the TypeScript client build" typescript esbuild
npm_dir e2e/proto "the protobuf Node test" protobufjs ws
npm_dir e2e/yjs "the Yjs documents test" yjs y-websocket

# --- CRD schema check: jsonschema + PyYAML for operator/tests/validate_examples.py ----------------

if ! python3 -c 'import jsonschema, yaml' >/dev/null 2>&1; then
    say "installing jsonschema and PyYAML (pip) for the CRD schema check"
    python3 -m pip install -q --disable-pip-version-check jsonschema pyyaml >>"$LOG" 2>&1 ||
        fail "pip install jsonschema pyyaml"
fi

# --- Helm chart tests: .venv-chart (Helm v4 SDK, kubernetes-validate, pytest; pinned) -----------

CHART_VENV="$ROOT/.venv-chart"
CHART_REQS="$ROOT/charts/tests/requirements.txt"
if ! cmp -s "$CHART_REQS" "$CHART_VENV/.switchboard-requirements"; then
    say "creating .venv-chart for the Helm chart tests (pip: charts/tests/requirements.txt)"
    rm -rf "$CHART_VENV"
    python3 -m venv "$CHART_VENV" >>"$LOG" 2>&1 || fail "python3 -m venv .venv-chart"
    "$CHART_VENV/bin/pip" install -q --disable-pip-version-check -r "$CHART_REQS" >>"$LOG" 2>&1 ||
        fail "pip install -r charts/tests/requirements.txt into .venv-chart"
    cp "$CHART_REQS" "$CHART_VENV/.switchboard-requirements"
fi

# --- Autobahn|Testsuite (Python 2.7 only) ------------------------------------------------------

VENV="$ROOT/.venv-autobahn"
# A set that resolves and installs on Python 2.7 from PyPI today, and runs the fuzzingclient.
# Pinned to the last py2.7-compatible release of each, so a new upload cannot break it.
AUTOBAHN_PINS=(
    autobahntestsuite==0.8.2
    autobahn==0.10.9
    txaio==2.1.0
    Twisted==20.3.0
    zope.interface==5.5.2
    Automat==22.10.0
    attrs==21.4.0
    constantly==15.1.0
    hyperlink==21.0.0
    idna==2.10
    incremental==22.10.0
    PyHamcrest==1.10.1
    typing==3.10.0.0
    six==1.17.0
    pyOpenSSL==21.0.0
    cryptography==3.3.2
    cffi==1.15.1
    pycparser==2.21
    enum34==1.1.10
    ipaddress==1.0.23
    service-identity==21.1.0
    pyasn1==0.5.1
    pyasn1-modules==0.3.0
    klein==20.6.0
    Tubes==0.2.1
    Werkzeug==1.0.1
    Jinja2==2.11.3
    MarkupSafe==1.1.1
    wsaccel==0.6.6
    ujson==2.0.3
    unittest2==1.1.0
    argparse==1.4.0
    linecache2==1.0.0
    traceback2==1.4.0
)
VIRTUALENV_PIN="virtualenv==20.15.1" # the last line (<20.22) that runs on Python 2.7
STAMP="$VENV/.switchboard-pins"
WANT="$(printf '%s\n' "$VIRTUALENV_PIN" "${AUTOBAHN_PINS[@]}")"

if [ -x "$VENV/bin/wstest" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
    exit 0
fi

PY2="${SWITCHBOARD_PYTHON2:-}"
if [ -z "$PY2" ]; then
    if have pyenv && [ -x "$(pyenv root)/versions/2.7.18/bin/python" ]; then
        PY2="$(pyenv root)/versions/2.7.18/bin/python"
    elif have python2.7; then
        PY2="$(command -v python2.7)"
    else
        fail "Python 2.7 not found (Autobahn|Testsuite needs it): install it with" \
            "\`pyenv install 2.7.18\` or point SWITCHBOARD_PYTHON2 at a python2.7"
    fi
fi
"$PY2" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' 2>/dev/null ||
    fail "$PY2 is not Python 2.7"

say "creating .venv-autobahn (Autobahn|Testsuite on $("$PY2" --version 2>&1)); takes ~1 min"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONWARNINGS=ignore
if ! "$PY2" -m virtualenv --version >/dev/null 2>&1; then
    "$PY2" -m pip install -q "$VIRTUALENV_PIN" >>"$LOG" 2>&1 ||
        fail "pip install $VIRTUALENV_PIN (for Python 2.7)"
fi
rm -rf "$VENV"
"$PY2" -m virtualenv -q "$VENV" >>"$LOG" 2>&1 || fail "virtualenv $VENV"
"$VENV/bin/pip" install -q "${AUTOBAHN_PINS[@]}" >>"$LOG" 2>&1 ||
    fail "pip install autobahntestsuite into $VENV"
"$VENV/bin/wstest" --help >>"$LOG" 2>&1 || fail "$VENV/bin/wstest --help does not run"
printf '%s\n' "$WANT" >"$STAMP"
