#!/usr/bin/env bash
# bench/callgrind.sh - user-space instructions per proxied request, Switchyard vs HAProxy,
# counted by valgrind's callgrind. Instruction counts do not depend on what else the
# machine is doing (this VM's wall-clock figures swing 2x with host steal), so this is
# the figure to track between commits; the harness (bench/l7.sh) gives the real rates.
#
#   bench/callgrind.sh                 # PROTO="h1 h2" N=12000, both proxies
#   PROXIES=switchyard PROTO=h2 bench/callgrind.sh
#   KEEP=1 PROTO=h1 bench/callgrind.sh  # keep the outputs (callgrind_annotate FILE)
#   CALLGRIND_ARGS=--cache-sim=yes KEEP=1 bench/callgrind.sh  # also simulate the caches
#
# Each proxy runs under callgrind with the shared harness's configuration (one worker,
# round robin over two nginx backends on loopback); h2load sends N requests (HTTP/1.1:
# `--h1 -c16`; h2c: `-c16 -m8`). The figure is (total - total for 16 requests) / (N - 16),
# so start-up cost drops out. Kernel time (the syscalls) is not counted: it is about the
# same for both proxies (2 reads and 2 writes per request). Needs valgrind, nginx,
# haproxy, h2load; builds nothing (run `cargo build --release` first).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
shared=${SHARED:-$here/../shared/bench}
bin=${SWITCHYARD_BIN:-$here/target/release/switchyard}
N=${N:-12000}
PROTO=${PROTO:-"h1 h2"}
PROXIES=${PROXIES:-"switchyard haproxy"}
run=$(mktemp -d /tmp/sy-callgrind.XXXXXX)
trap 'rm -rf "$run"' EXIT

# shellcheck source=bench/lib/peer-configs.sh
source "$here/bench/lib/peer-configs.sh"
render_peer_configs "$shared" "$run" 18300

# count PROXY PROTO REQUESTS: prints the callgrind total of one run
count() {
    local proxy=$1 proto=$2 requests=$3 out="$run/$1.$2.$3.out" pid
    case $proxy in
    switchyard) valgrind --tool=callgrind ${CALLGRIND_ARGS:-} --callgrind-out-file="$out" "$bin" run -c "$run/switchyard.toml" >"$run/proxy.log" 2>&1 & ;;
    haproxy) valgrind --tool=callgrind ${CALLGRIND_ARGS:-} --callgrind-out-file="$out" haproxy -db -f "$run/haproxy.cfg" >"$run/proxy.log" 2>&1 & ;;
    esac
    pid=$!
    for _ in $(seq 100); do
        curl -s -o /dev/null http://127.0.0.1:18306/ && break
        sleep 0.3
    done
    if [ "$proto" = h1 ]; then
        h2load --h1 -t1 -c16 -n "$requests" http://127.0.0.1:18306/ >"$run/load.log"
    else
        h2load -t1 -c16 -m8 -n "$requests" http://127.0.0.1:18356/ >"$run/load.log"
    fi
    grep -q "$requests succeeded" "$run/load.log" || { echo "$proxy/$proto: not every request succeeded" >&2; cat "$run/load.log" >&2; }
    kill -INT "$pid"
    sleep 1
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'
}

nginx -p "$run" -e "$run/backend.error.log" -c "$run/backend.conf" &
backend=$!
# KEEP=1 leaves the callgrind outputs for callgrind_annotate (the directory is printed).
trap 'kill "$backend" 2>/dev/null; wait "$backend" 2>/dev/null; if [ -n "${KEEP:-}" ]; then echo "kept: $run" >&2; else rm -rf "$run"; fi' EXIT
sleep 0.5

printf '| proxy | protocol | instructions per request |\n|---|---|---:|\n'
for proto in $PROTO; do
    for proxy in $PROXIES; do
        base=$(count "$proxy" "$proto" 16)
        full=$(count "$proxy" "$proto" "$N")
        printf '| %s | %s | %d |\n' "$proxy" "$proto" $(((full - base) / (N - 16)))
    done
done
