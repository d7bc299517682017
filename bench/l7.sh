#!/usr/bin/env bash
# bench/l7.sh - Switchyard's HTTP benchmark (issue 5 item 11): Switchyard vs HAProxy vs
# nginx (and any other installed peer) in ONE run of the shared side-by-side harness
# (../shared/bench/peers.sh: wrk for HTTP/1.1, h2load for h2c, loopback only, the load
# generator pinned to cpu0, proxy and backend to cpu1), Switchyard in its LB_* slot with
# the harness's own template ../shared/bench/conf/switchyard.toml (`[runtime] workers = 1`
# like every peer, access log off like every peer).
#
#   bench/l7.sh                       # PEERS="direct haproxy nginx" ROUNDS=3 DURATION=10
#   bench/l7.sh --no-build            # skip `cargo build --release --locked`
#   bench/l7.sh --out FILE            # report path (default bench/results/l7-<UTC date>.md)
#
# Every harness knob passes through the environment (ROUNDS DURATION WARMUP CONNS H2_CONNS
# H2_STREAMS PEERS ...). Needs haproxy, nginx, wrk and h2load (apt: haproxy nginx wrk
# nghttp2-client).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release/switchyard
build=1 out=""
while (($#)); do
    case $1 in
    --no-build) build=0 ;;
    --out) out=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/l7.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ -x $SHARED/peers.sh ]] || { echo "bench/l7.sh: no harness at $SHARED/peers.sh" >&2; exit 1; }
((build)) && cargo build --release --locked --manifest-path "$ROOT/Cargo.toml"
mkdir -p "$ROOT/bench/results"
out=${out:-$ROOT/bench/results/l7-$(date -u +%Y-%m-%d).md}
export PEERS=${PEERS:-"direct haproxy nginx"}
{
    echo "# Switchyard L7 benchmark, $(date -u +%FT%TZ)"
    echo
    echo "commit $(git -C "$ROOT" rev-parse --short HEAD), loadavg at start $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    cd "$SHARED"
    LB_NAME=switchyard LB_PORT=18106 LB_H2_PORT=18156 LB_CONF=conf/switchyard.toml \
        LB_CMD="$BIN run -c \$LB_CONFIG" ./peers.sh
    echo
    echo "loadavg at end $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$out"
echo "report: $out" >&2
