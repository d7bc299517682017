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

# shellcheck source=bench/lib/harness.sh
source "$(dirname "$0")/lib/harness.sh"
run_with_switchyard l7 peers.sh "direct haproxy nginx" L7 "LB_PORT=18106 LB_H2_PORT=18156 LB_CONF=conf/switchyard.toml" "$@"
