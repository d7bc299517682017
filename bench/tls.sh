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

# shellcheck source=bench/lib/harness.sh
source "$(dirname "$0")/lib/harness.sh"
run_with_switchyard tls tls-peers.sh "direct haproxy" TLS "LB_PORT=18306 LB_CONF=conf/switchyard-tls.toml" "$@"
