#!/usr/bin/env bash
# Switchboard benchmark harness: one command.
#
#   e2e/bench/run.sh                          # everything (~7 min on 2 cores), 3 repetitions
#   e2e/bench/run.sh --only latency,memory    # some sections: latency,throughput,fanout,memory,crosspod
#   e2e/bench/run.sh --quick                  # tiny sizes, 1 repetition: a smoke test of the harness
#
# Installs what it needs when missing (apt: nginx; npm: ws, socket.io, socket.io-client), builds
# the release gateway and the load generator, runs the gateway and its peers back-to-back on
# loopback, prints the tables and writes e2e/bench/results/latest.md and latest.json
# (per-process logs of the run: e2e/bench/results/logs/).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  as_root apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  echo "run.sh: installing nginx" >&2
  apt_install nginx-light || apt_install nginx
fi
if ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ]; then
  # Only the cross-pod section needs it; the rest runs without.
  apt_install nats-server || echo "run.sh: nats-server unavailable; the cross-pod section will be skipped" >&2
fi
export PATH="$PATH:/usr/sbin"
command -v node >/dev/null || { echo "run.sh: Node.js 20+ is required" >&2; exit 1; }

if [ ! -d "$here/peers/node_modules/ws" ] || [ ! -d "$here/peers/node_modules/socket.io" ] \
   || [ ! -d "$here/peers/node_modules/socket.io-client" ]; then
  echo "run.sh: installing Node peers (ws, socket.io, socket.io-client)" >&2
  (cd "$here/peers" && npm ci --no-audit --no-fund --loglevel=error)
fi

# 5,000 idle connections through a proxy need ~10,000 descriptors in one process.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 12000 ]; then
  echo "run.sh: warning: only $(ulimit -n) file descriptors per process; the memory section needs ~11,000" >&2
fi

gateway_target="${CARGO_TARGET_DIR:-$root/target}"
if [ "${SB_BENCH_SKIP_BUILD:-0}" != 1 ]; then
  echo "run.sh: building the release gateway (the shared build directory may be locked for a while)" >&2
  cargo build --release -p switchboard-gateway
  echo "run.sh: building the load generator" >&2
  CARGO_TARGET_DIR="$here/target" cargo build --release --manifest-path "$here/Cargo.toml"
fi

exec "$here/target/release/sbbench" \
  --gateway "$gateway_target/release/switchboard-gateway" \
  --peers "$here/peers" \
  --out "$here/results" \
  "$@"
