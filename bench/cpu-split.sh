#!/usr/bin/env bash
# bench/cpu-split.sh - where a proxied request's CPU goes: the proxy's user space, the
# proxy's kernel time, and the backend that shares the proxy's core, Switchyard vs HAProxy.
# The harness (bench/l7.sh) reports one CPU figure per request; this splits it, from
# utime and stime in /proc/<pid>/stat around one load run, so a gap can be put on the side
# it is on (system calls cost the same for both proxies when they make the same calls; the
# rest is user time; the backend's share is what the proxy makes it do).
#
#   bench/cpu-split.sh                   # PROTO="h1 h2" DURATION=8 ROUNDS=1, both proxies
#   PROTO=h1 PROXIES=switchyard DURATION=5 bench/cpu-split.sh
#   PROXIES="haproxy haproxy-fwd switchyard" ROUNDS=5 PROTO=h1 bench/cpu-split.sh
#
# Proxies: `switchyard`, `haproxy` (the shared harness's configuration, which adds no
# field to a request) and `haproxy-fwd` (the same plus conf/haproxy-forwarding.cfg: the
# forwarding fields Switchyard adds per SPEC section 4, so both send the backend the same
# request). Rounds are interleaved (each proxy once per round); with ROUNDS > 1 a table of
# medians follows the runs. Columns: requests per second; the proxy's user, system and
# total CPU per request; the backend's CPU per request; "core" = proxy + backend, the
# whole cost per request on the shared core, which is what sets the rate when the core is
# saturated; context switches per 1,000 requests (voluntary / preempted) of the proxy.
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
ROUNDS=${ROUNDS:-1}
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
worker=$(pgrep -P "$backend" | head -1)
[ -n "$worker" ] || { echo "bench/cpu-split.sh: the nginx backend has no worker" >&2; exit 1; }
tick=$(getconf CLK_TCK)

# load PROTO SECONDS: runs the load generator, prints the number of completed requests
load() {
    if [ "$1" = h1 ]; then
        taskset -c 0 wrk -t1 -c64 -d"$2"s "$h1_url" | awk '/requests in/ {print $1}'
    else
        taskset -c 0 h2load -t1 -c16 -m8 -D "$2" "$h2_url" | awk '/^requests:/ {print $8}'
    fi
}

# counters PID: "utime stime voluntary-switches preempted-switches" of one process
counters() {
    echo "$(awk '{print $14, $15}' "/proc/$1/stat")" \
        "$(awk '/^voluntary_ctxt/ {v = $2} /^nonvoluntary_ctxt/ {n = $2} END {print v, n}' "/proc/$1/status")"
}

rows="$run/rows.tsv"
: >"$rows"
printf '| round | proxy | protocol | req/s | user us/req | system us/req | proxy us/req | backend us/req | core us/req | switches /1000 req |\n'
printf '|---:|---|---|---:|---:|---:|---:|---:|---:|---:|\n'
for round in $(seq "$ROUNDS"); do
    for proto in $PROTO; do
        for name in $PROXIES; do
            case $name in
            switchyard) taskset -c 1 "$bin" run -c "$run/switchyard.toml" >"$run/proxy.log" 2>&1 & ;;
            haproxy) taskset -c 1 haproxy -db -f "$run/haproxy.cfg" >"$run/proxy.log" 2>&1 & ;;
            haproxy-fwd) taskset -c 1 haproxy -db -f "$run/haproxy-fwd.cfg" >"$run/proxy.log" 2>&1 & ;;
            *) echo "bench/cpu-split.sh: unknown proxy $name" >&2; exit 2 ;;
            esac
            proxy=$!
            for _ in $(seq 50); do
                curl -s -o /dev/null "$h1_url" && break
                sleep 0.2
            done
            load "$proto" 1 >/dev/null
            read -r pu0 ps0 pv0 pn0 < <(counters "$proxy")
            read -r bu0 bs0 _ _ < <(counters "$worker")
            requests=$(load "$proto" "$DURATION")
            read -r pu1 ps1 pv1 pn1 < <(counters "$proxy")
            read -r bu1 bs1 _ _ < <(counters "$worker")
            kill "$proxy"
            wait "$proxy" 2>/dev/null || true
            proxy=""
            awk -v r="$round" -v p="$name" -v proto="$proto" -v n="$requests" -v d="$DURATION" \
                -v u=$((pu1 - pu0)) -v s=$((ps1 - ps0)) -v b=$((bu1 + bs1 - bu0 - bs0)) \
                -v v=$((pv1 - pv0)) -v x=$((pn1 - pn0)) -v t="$tick" -v rows="$rows" 'BEGIN {
                us = 1e6 / t / n
                printf "| %d | %s | %s | %.0f | %.2f | %.2f | %.2f | %.2f | %.2f | %.0f / %.0f |\n",
                    r, p, proto, n / d, u * us, s * us, (u + s) * us, b * us, (u + s + b) * us,
                    v * 1000 / n, x * 1000 / n
                printf "%s\t%s\t%f\t%f\t%f\t%f\t%f\n", p, proto, n / d, u * us, s * us, b * us,
                    (u + s + b) * us >>rows }'
        done
    done
done

if [ "$ROUNDS" -gt 1 ]; then
    printf '\nMedians over %d rounds (ratios against haproxy):\n\n' "$ROUNDS"
    printf '| proxy | protocol | req/s | proxy us/req | backend us/req | core us/req | req/s x haproxy | proxy CPU x haproxy |\n'
    printf '|---|---|---:|---:|---:|---:|---:|---:|\n'
    # median PROXY PROTO EXPR: the median of an awk expression over one proxy's rows
    # ($3 req/s, $4 user, $5 system, $6 backend, $7 core; per request)
    median() {
        awk -F'\t' -v p="$1" -v proto="$2" "\$1 == p && \$2 == proto {print $3}" "$rows" | sort -g |
            awk '{v[NR] = $1} END {if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
    }
    for proto in $PROTO; do
        h_rate=$(median haproxy "$proto" '$3')
        h_cpu=$(median haproxy "$proto" '$4 + $5')
        for name in $PROXIES; do
            awk -v p="$name" -v proto="$proto" -v rate="$(median "$name" "$proto" '$3')" \
                -v cpu="$(median "$name" "$proto" '$4 + $5')" -v b="$(median "$name" "$proto" '$6')" \
                -v core="$(median "$name" "$proto" '$7')" -v hr="${h_rate:-0}" -v hc="${h_cpu:-0}" 'BEGIN {
                printf "| %s | %s | %.0f | %.2f | %.2f | %.2f | %s | %s |\n", p, proto, rate, cpu, b, core,
                    (hr > 0 ? sprintf("%.2f", rate / hr) : "-"), (hc > 0 ? sprintf("%.2f", cpu / hc) : "-") }'
        done
    done
fi
