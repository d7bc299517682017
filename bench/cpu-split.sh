#!/usr/bin/env bash
# bench/cpu-split.sh - where a proxied request's CPU goes: user space or the kernel,
# Switchyard vs HAProxy. The harness (bench/l7.sh) reports one CPU figure per request; this
# splits it, from the proxy's utime and stime in /proc/<pid>/stat around one load run, so
# a gap can be put on the side it is on (system calls cost the same for both proxies when
# they make the same calls; the rest is user time).
#
#   bench/cpu-split.sh                   # PROTO="h1 h2" DURATION=8, both proxies
#   PROTO=h1 PROXIES=switchyard DURATION=5 bench/cpu-split.sh
#
# Pinned like the shared harness: load generator on cpu0, proxy and backend (one nginx
# worker, the harness's configuration) on cpu1; one worker per proxy; loopback only. Load:
# HTTP/1.1 `wrk -t1 -c64`, h2c `h2load -t1 -c16 -m8`, after a 1 s warm-up. Needs nginx,
# haproxy, wrk, h2load; builds nothing (run `cargo build --release` first).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
shared=${SHARED:-$here/../shared/bench}
bin=${SWITCHYARD_BIN:-$here/target/release/switchyard}
PROTO=${PROTO:-"h1 h2"}
PROXIES=${PROXIES:-"haproxy switchyard"}
DURATION=${DURATION:-8}
run=$(mktemp -d /tmp/sy-cpu-split.XXXXXX)
base=18500

# shellcheck source=bench/lib/peer-configs.sh
source "$here/bench/lib/peer-configs.sh"
render_peer_configs "$shared" "$run" "$base"
h1_url=http://127.0.0.1:$((base + 6))/
h2_url=http://127.0.0.1:$((base + 56))/

taskset -c 1 nginx -p "$run" -e "$run/backend.error.log" -c "$run/backend.conf" &
backend=$!
proxy=""
trap 'for p in $proxy $backend; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$run"' EXIT
sleep 0.5
tick=$(getconf CLK_TCK)

# load PROTO SECONDS: runs the load generator, prints the number of completed requests
load() {
    if [ "$1" = h1 ]; then
        taskset -c 0 wrk -t1 -c64 -d"$2"s "$h1_url" | awk '/requests in/ {print $1}'
    else
        taskset -c 0 h2load -t1 -c16 -m8 -D "$2" "$h2_url" | awk '/^requests:/ {print $8}'
    fi
}

printf '| proxy | protocol | requests | user us/req | system us/req | total us/req |\n|---|---|---:|---:|---:|---:|\n'
for proto in $PROTO; do
    for name in $PROXIES; do
        case $name in
        switchyard) taskset -c 1 "$bin" run -c "$run/switchyard.toml" >"$run/proxy.log" 2>&1 & ;;
        haproxy) taskset -c 1 haproxy -db -f "$run/haproxy.cfg" >"$run/proxy.log" 2>&1 & ;;
        *) echo "bench/cpu-split.sh: unknown proxy $name" >&2; exit 2 ;;
        esac
        proxy=$!
        for _ in $(seq 50); do
            curl -s -o /dev/null "$h1_url" && break
            sleep 0.2
        done
        load "$proto" 1 >/dev/null
        read -r user0 system0 < <(awk '{print $14, $15}' "/proc/$proxy/stat")
        requests=$(load "$proto" "$DURATION")
        read -r user1 system1 < <(awk '{print $14, $15}' "/proc/$proxy/stat")
        kill "$proxy"
        wait "$proxy" 2>/dev/null || true
        proxy=""
        awk -v p="$name" -v proto="$proto" -v n="$requests" -v u=$((user1 - user0)) \
            -v s=$((system1 - system0)) -v t="$tick" 'BEGIN {
            printf "| %s | %s | %d | %.2f | %.2f | %.2f |\n", p, proto, n,
                u / t * 1e6 / n, s / t * 1e6 / n, (u + s) / t * 1e6 / n }'
    done
done
