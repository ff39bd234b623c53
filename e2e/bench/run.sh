#!/usr/bin/env bash
# Switchboard benchmark harness: one command.
#
#   e2e/bench/run.sh                          # everything (~15 min on 2 cores plus builds), 3 repetitions
#   e2e/bench/run.sh --only storm,idle15k     # some sections: latency,throughput,fanout,memory,
#                                             #   crosspod,storm,idle15k,fanout10k,compression
#   e2e/bench/run.sh --quick                  # tiny sizes, 1 repetition: a smoke test of the harness
#   SB_BENCH_SKIP_BUILD=1 SB_BENCH_PROFILE=debug e2e/bench/run.sh --quick \
#       --gateway target/debug/switchboard-gateway   # develop against debug builds
#
# Installs what it needs when missing (apt: nginx, nats-server; npm: ws, socket.io,
# socket.io-client), builds the release gateway and the load generator, raises the descriptor
# limit (15,000 proxied idle connections need 30,000 in the gateway), runs the gateway and its
# peers back-to-back on loopback, prints the tables and writes e2e/bench/results/latest.{md,json}
# and the plots; a complete full-size run also regenerates the results block of
# docs/benchmarks.md and docs/bench/*.svg (per-process logs: e2e/bench/results/logs/).
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

# 15,000 idle connections through a proxy need ~30,000 descriptors in the proxy process (root
# may raise the hard limit; otherwise the soft one goes up to the hard one and the idle15k
# section caps the proxies at what fits, saying so in its table).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 31000 ]; then
  echo "run.sh: warning: only $(ulimit -n) file descriptors per process; proxies at 15,000 idle connections need ~31,000 (they are capped)" >&2
fi

gateway_target="${CARGO_TARGET_DIR:-$root/target}"
# release (default) or debug: which build of the load generator runs (a later `--gateway PATH`
# argument overrides the gateway binary).
profile="${SB_BENCH_PROFILE:-release}"
profile_flag=(--release)
[ "$profile" = debug ] && profile_flag=()
if [ "${SB_BENCH_SKIP_BUILD:-0}" != 1 ]; then
  echo "run.sh: building the $profile gateway (the shared build directory may be locked for a while)" >&2
  cargo build "${profile_flag[@]}" -p switchboard-gateway
fi
if [ "${SB_BENCH_SKIP_BUILD:-0}" != 1 ] || [ ! -x "$here/target/$profile/sbbench" ]; then
  echo "run.sh: building the load generator" >&2
  CARGO_TARGET_DIR="$here/target" cargo build "${profile_flag[@]}" --manifest-path "$here/Cargo.toml"
fi

exec "$here/target/$profile/sbbench" \
  --gateway "$gateway_target/$profile/switchboard-gateway" \
  --peers "$here/peers" \
  --out "$here/results" \
  --docs "$root/docs/benchmarks.md" \
  "$@"
