#!/usr/bin/env bash
# Yjs documents: the gateway (rooms protocol yjs, documents in JetStream) against the
# y-websocket reference server @y/websocket-server (npm), same clients, same machine.
#
#   e2e/bench/yjs/run.sh            # release gateway (built when missing), 100 editors
#   e2e/bench/yjs/run.sh --quick    # small sizes: a smoke test of the script
#   SB_GATEWAY_BIN=target/debug/switchboard-gateway e2e/bench/yjs/run.sh --quick
#
# Measures, for each server: the RSS growth per editor (100 editors on one document) and per
# open document (200 documents of one editor each), update fan-out latency p50/p99 to 99
# editors of one document, and the time a new editor takes to load a document of 10,000
# updates: on the gateway from JetStream after its replica was dropped, without compaction and
# with compaction every 500 updates; on @y/websocket-server (no persistence: it forgets a
# document when its last editor leaves) from memory with the writer still connected.
# Prints a Markdown table and writes e2e/bench/yjs/results/latest.{md,json}. Numbers are
# measured, never asserted; a debug build is not representative.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
cd "$root"
export PATH="$PATH:/usr/sbin"

editors=100 updates=200 docs=200 load_updates=10000
if [ "${1:-}" = --quick ]; then editors=10 updates=20 docs=20 load_updates=1000; fi

command -v node >/dev/null || { echo "yjs/run.sh: Node.js 20+ is required" >&2; exit 1; }
command -v nats-server >/dev/null || { echo "yjs/run.sh: nats-server is required" >&2; exit 1; }
[ -d e2e/yjs/node_modules/y-websocket ] || (cd e2e/yjs && npm ci --no-audit --no-fund --loglevel=error)
[ -d "$here/node_modules/@y/websocket-server" ] \
  || (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)

gw="${SB_GATEWAY_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/switchboard-gateway}"
if [ ! -x "$gw" ]; then
  echo "yjs/run.sh: building the release gateway" >&2
  cargo build --release -p switchboard-gateway
fi

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; [ "${SB_KEEP_WORK:-0}" = 1 ] || rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 400); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 not up (logs: $work)" >&2; return 1; }

nats_port=$(free_port)
nats-server -a 127.0.0.1 -p "$nats_port" -js -sd "$work/js" >"$work/nats.log" 2>&1 &
pids+=($!)
wait_port "$nats_port"

gw_port=$(free_port) admin_port=$(free_port)
route() { # name compactAfterUpdates
  cat <<YAML
  - name: $1
    path: {type: Prefix, value: /$1}
    mode: rooms
    rooms:
      protocol: yjs
      pathRoom: "/$1/{room}"
      join: ["*"]
      publish: ["*"]
      maxQueueBytes: 67108864
      documents: {compactAfterUpdates: $2, idleUnload: 1s, maxDocumentBytes: 67108864}
    transports: {websocket: true, sse: false, longPolling: false}
    limits: {maxMessageBytes: 16777216, messagesPerSecond: 100000, messageBurst: 100000}
YAML
}
cat >"$work/gateway.yaml" <<YAML
apiVersion: switchboard.dev/v1alpha1
kind: GatewayConfig
listeners: [{name: public, address: "127.0.0.1:$gw_port"}]
admin: {address: "127.0.0.1:$admin_port"}
limits: {maxConnections: 100000}
bus: {nats: {urls: ["nats://127.0.0.1:$nats_port"], subjectPrefix: ybench}}
routes:
$(route docs 500)
$(route nocompact 1000000)
YAML
"$gw" --config "$work/gateway.yaml" >"$work/gateway.log" 2>&1 &
gw_pid=$!
pids+=($gw_pid)
wait_port "$gw_port"

npm_port=$(free_port)
HOST=127.0.0.1 PORT=$npm_port node "$here/node_modules/@y/websocket-server/src/server.js" >"$work/npm.log" 2>&1 &
npm_pid=$!
pids+=($npm_pid)
wait_port "$npm_port"

fan() { node "$here/fanout.js" "{\"url\":\"$1\",\"editors\":$editors,\"updates\":$updates,\"docs\":$docs,\"pid\":$2}"; }
load() { node "$here/loadtime.js" "{\"url\":\"$1\",\"updates\":$load_updates,\"idleMs\":2500,$2}"; }

echo "yjs/run.sh: fan-out and memory (gateway)" >&2
g_fan=$(fan "ws://127.0.0.1:$gw_port/docs" "$gw_pid")
echo "yjs/run.sh: fan-out and memory (@y/websocket-server)" >&2
n_fan=$(fan "ws://127.0.0.1:$npm_port" "$npm_pid")
echo "yjs/run.sh: load of $load_updates updates (gateway, no compaction)" >&2
g_raw=$(load "ws://127.0.0.1:$gw_port/nocompact" '"keep":false')
echo "yjs/run.sh: load of $load_updates updates (gateway, compacted every 500)" >&2
g_cmp=$(load "ws://127.0.0.1:$gw_port/docs" '"keep":false')
echo "yjs/run.sh: load of $load_updates updates (@y/websocket-server, in memory)" >&2
n_mem=$(load "ws://127.0.0.1:$npm_port" '"keep":true')

mkdir -p "$here/results"
python3 - "$here/results" "$gw" "$g_fan" "$n_fan" "$g_raw" "$g_cmp" "$n_mem" <<'PY'
import json, sys
out, gw, *rows = sys.argv[1:]
g_fan, n_fan, g_raw, g_cmp, n_mem = (json.loads(r) for r in rows)
kib = lambda b: "n/a" if b != b else f"{b / 1024:.1f} KiB"
md = [
    f"Gateway binary: `{gw}`; {g_fan['editors']} editors, {g_fan['updates']} updates; load: {g_raw['updates']} updates.",
    "",
    "| measure | gateway | @y/websocket-server |",
    "| --- | --- | --- |",
    f"| RSS per editor (one document) | {kib(g_fan['rss_per_editor_bytes'])} | {kib(n_fan['rss_per_editor_bytes'])} |",
    f"| RSS per open document | {kib(g_fan['rss_per_document_bytes'])} | {kib(n_fan['rss_per_document_bytes'])} |",
    f"| fan-out p50 / p99 | {g_fan['p50_ms']:.1f} / {g_fan['p99_ms']:.1f} ms | {n_fan['p50_ms']:.1f} / {n_fan['p99_ms']:.1f} ms |",
    f"| load {g_raw['updates']} updates, not compacted | {g_raw['load_ms_best']} ms (JetStream) | n/a (no store) |",
    f"| load {g_cmp['updates']} updates, compacted every 500 | {g_cmp['load_ms_best']} ms (JetStream) | {n_mem['load_ms_best']} ms (in memory, writer connected) |",
    f"| write {g_raw['updates']} updates (one editor, stored before the next is read) | {g_raw['write_ms']} ms | {n_mem['write_ms']} ms |",
]
text = "\n".join(md) + "\n"
print(text)
open(f"{out}/latest.md", "w").write(text)
json.dump({"gateway": {"fanout": g_fan, "load_raw": g_raw, "load_compacted": g_cmp},
           "npm": {"fanout": n_fan, "load_memory": n_mem}}, open(f"{out}/latest.json", "w"), indent=2)
PY
