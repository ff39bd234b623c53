#!/usr/bin/env bash
# Heap profile of idle rooms connections: starts the gateway under heaptrack, opens N idle
# WebSocket connections (JSON room protocol), each joined to a room of its own (the `user:<sub>`
# shape: one room of one member per connection), and writes the top allocation sites by peak
# consumption to e2e/bench/results/heap-profile.md. A second run with no connections gives the
# baseline, so the report can say what one connection costs on the heap.
#
#   CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
#     cargo build --release -p switchboard-gateway --no-default-features --target-dir target/heap
#   e2e/bench/heap-profile.sh target/heap/release/switchboard-gateway [CONNECTIONS]   # default 2000
#
# heaptrack follows malloc, so the binary must be built without the `jemalloc` feature (the
# shipped allocator, which heaptrack cannot see): the allocation sites are the same, the
# allocator's slack is not (RSS with jemalloc is measured by `e2e/bench/run.sh`). The line
# tables let the report name the gateway's code that made each allocation (without them every
# site is "outside the gateway's code").
# Needs heaptrack (apt-get install heaptrack), python3, and Node with e2e/proto's node_modules
# (npm ci). KEEP=1 keeps the heaptrack files (heaptrack_gui, heaptrack_print) and logs.
set -euo pipefail

bin=${1:?usage: heap-profile.sh GATEWAY_BINARY [CONNECTIONS]}
n=${2:-2000}
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$root/e2e/bench/results/heap-profile.md
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
[ -x "$bin" ] || { echo "$bin is not an executable" >&2; exit 1; }
# jemalloc, asked to, prints the settings it applied (`<jemalloc>: ...`); malloc prints nothing.
# (Read whole first: `grep -q` in a pipe may end the binary with SIGPIPE, which pipefail counts.)
conf=$(_RJEM_MALLOC_CONF=confirm_conf:true "$bin" --version 2>&1 || true)
if grep -q '^<jemalloc>' <<<"$conf"; then
  echo "$bin allocates with jemalloc, which heaptrack cannot follow: build it with --no-default-features (see the top of this script)" >&2
  exit 1
fi
command -v heaptrack >/dev/null || { echo "heaptrack is not installed (apt-get install heaptrack)" >&2; exit 1; }
[ -d "$root/e2e/proto/node_modules/ws" ] || { echo "run npm ci in e2e/proto first (the client uses its ws)" >&2; exit 1; }

work=$(mktemp -d)
gw_pid=""
client_pid=""
cleanup() {
  [ -n "$client_pid" ] && kill "$client_pid" 2>/dev/null || true
  [ -n "$gw_pid" ] && kill "$gw_pid" 2>/dev/null || true
  [ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/gateway.yaml" <<YAML
apiVersion: switchboard.dev/v1alpha1
kind: GatewayConfig
listeners:
  - name: public
    address: "127.0.0.1:0"
admin:
  address: "127.0.0.1:0"
limits: {maxConnections: $((n + 1000))}
routes:
  - name: solo
    path: {type: Prefix, value: /rooms}
    mode: rooms
    rooms:
      join: ["solo:*"]
      publish: ["solo:*"]
    transports: {websocket: true, sse: false, longPolling: false}
    drain: {window: 1s}
drain: {propagation: 0s, deadline: 5s}
YAML

# Runs the gateway under heaptrack with `conns` idle connections, then stops it; sets
# `heap_file` to the heaptrack data file.
profile() {
  local conns=$1 tag=$2 log=$work/$2.log addr="" i
  NO_COLOR=1 RUST_LOG=warn,switchboard_gateway::listener=info \
    heaptrack -o "$work/heap-$tag" "$bin" --config "$work/gateway.yaml" >"$log" 2>&1 &
  gw_pid=$!
  for i in $(seq 1 600); do
    addr=$(grep -a "listening" "$log" | grep -a "role=edge" | grep -ao 'addr=[0-9.:]*' | head -1 | cut -d= -f2 || true)
    [ -n "$addr" ] && break
    kill -0 "$gw_pid" 2>/dev/null || break # exited (a bad config, a missing library)
    sleep 0.1
  done
  [ -n "$addr" ] || { echo "gateway did not start:" >&2; tail -20 "$log" >&2; exit 1; }
  if [ "$conns" -gt 0 ]; then
    mkfifo "$work/hold-$tag"
    node "$root/e2e/bench/heap/idle-clients.mjs" "ws://$addr/rooms" "$conns" \
      <"$work/hold-$tag" >"$work/clients-$tag.out" &
    client_pid=$!
    exec 9>"$work/hold-$tag"
    for i in $(seq 1 1200); do
      grep -q '^ready' "$work/clients-$tag.out" 2>/dev/null && break
      sleep 0.25
    done
    read -r _ joined failed <"$work/clients-$tag.out"
    echo "$tag: $joined joined, $failed failed" >&2
    [ "$joined" = "$conns" ] || { echo "not every connection joined" >&2; exit 1; }
    sleep 2 # idle: keep-alive timers armed, nothing in flight
  else
    sleep 2
  fi
  if [ "$conns" -gt 0 ]; then
    exec 9>&- # the clients close their sockets and exit
    wait "$client_pid" || true
    client_pid=""
  fi
  # The gateway runs as heaptrack's child: stop it (graceful), heaptrack then finishes its file.
  local gw
  gw=$(pgrep -P "$gw_pid" -f -- "--config $work/gateway.yaml" | head -1 || true)
  [ -n "$gw" ] && kill -TERM "$gw"
  wait "$gw_pid" || true
  gw_pid=""
  heap_file=$(grep -ao 'heaptrack output will be written to "[^"]*"' "$log" | head -1 | cut -d'"' -f2)
}

peak_of() { heaptrack_print -f "$1" -p 0 -a 0 -T 0 -l 0 2>/dev/null | grep -a "^peak heap memory consumption" | sed 's/.*: //'; }
# heaptrack prints sizes like 12.34M / 456.78K / 123B.
to_bytes() {
  awk -v s="$1" 'BEGIN { n = s + 0; u = substr(s, length(s)); m = 1;
    if (u == "K") m = 1000; else if (u == "M") m = 1000000; else if (u == "G") m = 1000000000;
    printf "%d", n * m }'
}

profile 0 base
base_file=$heap_file
profile "$n" load
load_file=$heap_file
base_peak=$(peak_of "$base_file")
load_peak=$(peak_of "$load_file")
per_conn=$(( ( $(to_bytes "$load_peak") - $(to_bytes "$base_peak") ) / n ))

mkdir -p "$(dirname "$out")"
{
  echo "# Heap profile: $n idle rooms connections, each in a room of its own"
  echo
  echo "Generated by \`e2e/bench/heap-profile.sh $(basename "$bin") $n\` on $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "(binary: \`${bin#"$root"/}\`; heaptrack $(heaptrack --version 2>/dev/null | awk '{print $2}'))."
  echo "Heap only: sockets' kernel buffers, thread stacks and allocator slack are not in it (RSS is"
  echo "measured by \`e2e/bench/run.sh\`)."
  echo
  echo "| run | peak heap |"
  echo "|---|---:|"
  echo "| gateway, no connections | $base_peak |"
  echo "| gateway, $n idle connections | $load_peak |"
  echo "| per connection (difference / $n) | $per_conn B |"
  echo
  echo "## Top allocation sites at the peak ($n connections)"
  echo
  echo "Each backtrace is charged to its innermost frame in \`gateway/src\` (the code that made the"
  echo "allocation); bytes per connection divide the site's peak bytes by $n (sites that exist"
  echo "without connections are included: compare the first table)."
  echo
  heaptrack_print -f "$load_file" -p 1 -a 0 -T 0 -l 0 -n 60 -s 60 2>/dev/null \
    | python3 "$root/e2e/bench/heap/top-sites.py" "$n" 20
} >"$out"
echo "wrote $out ($per_conn B/connection on the heap)"
