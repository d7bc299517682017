#!/usr/bin/env bash
# bench/tls.sh - Switchyard's TLS termination benchmark (issue 6 item 6): Switchyard vs
# HAProxy (and any other installed peer) in ONE run of the shared side-by-side harness
# (../shared/bench/tls-peers.sh: full TLS 1.3 handshakes with ab, resumed handshakes with
# wrk, keepalive HTTPS with wrk (HTTP/1.1) and h2load (h2 via ALPN); loopback only, the
# load generator pinned to cpu0, proxy and backend to cpu1), Switchyard in its LB_* slot
# with the harness's own template ../shared/bench/conf/switchyard-tls.toml
# (`[runtime] workers = 1` like every peer, access log off like every peer).
#
#   bench/tls.sh                      # PEERS="direct haproxy" ROUNDS=3 DURATION=5
#   bench/tls.sh --no-build           # skip `cargo build --release --locked`
#   bench/tls.sh --out FILE           # report path (default bench/results/tls-<UTC date>.md)
#
# Every harness knob passes through the environment (ROUNDS DURATION WARMUP HS_CONNS CONNS
# H2_CONNS H2_STREAMS TESTS PEERS ...). Needs haproxy, nginx (the backends), ab, wrk,
# h2load, curl and openssl (apt: haproxy nginx apache2-utils wrk nghttp2-client curl).
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
    *) echo "bench/tls.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ -x $SHARED/tls-peers.sh ]] || { echo "bench/tls.sh: no harness at $SHARED/tls-peers.sh" >&2; exit 1; }
((build)) && cargo build --release --locked --manifest-path "$ROOT/Cargo.toml"
mkdir -p "$ROOT/bench/results"
out=${out:-$ROOT/bench/results/tls-$(date -u +%Y-%m-%d).md}
export PEERS=${PEERS:-"direct haproxy"}
{
    echo "# Switchyard TLS benchmark, $(date -u +%FT%TZ)"
    echo
    echo "commit $(git -C "$ROOT" rev-parse --short HEAD), loadavg at start $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    cd "$SHARED"
    LB_NAME=switchyard LB_PORT=18306 LB_CONF=conf/switchyard-tls.toml \
        LB_CMD="$BIN run -c \$LB_CONFIG" ./tls-peers.sh
    echo
    echo "loadavg at end $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$out"
echo "report: $out" >&2
