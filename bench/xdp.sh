#!/usr/bin/env bash
# The packet tier's cost per packet: BPF_PROG_TEST_RUN of xdp_lb on crafted packets, in a
# namespace of its own (the test tears it down), for a flow-table hit, a Maglev miss and a
# passed non-VIP packet, DSR and IPIP. Root only. Prints the kernel's ns/packet averages and
# writes them to bench/results/xdp-<UTC date>.md.
#
#   bench/xdp.sh                 # ROUNDS=5 rounds of REPEAT=5000000 packets per figure
#   REPEAT=1000000 ROUNDS=3 bench/xdp.sh
#
# veth throughput says nothing about a NIC, so no Gbit/s figure is produced here.
set -euo pipefail
cd "$(dirname "$0")/.."
REPEAT=${REPEAT:-5000000}
ROUNDS=${ROUNDS:-5}
if [ "$(id -u)" != 0 ]; then
    echo "bench/xdp.sh needs root (BPF_PROG_TEST_RUN, network namespaces)" >&2
    exit 2
fi
export SWITCHYARD_REQUIRE_BPF=1
# the same target directory as the caller's builds, when one is set
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
out=$(mktemp)
for round in $(seq "$ROUNDS"); do
    XDP_BENCH_REPEAT=$REPEAT cargo nextest run -p switchyard --no-capture \
        -E 'test(xdp_testrun_cost_per_packet)' 2>&1 | grep '^xdp cost:' | sed "s/^/round $round: /" | tee -a "$out"
done
date=$(date -u +%Y-%m-%d)
result="bench/results/xdp-$date.md"
{
    echo "# XDP cost per packet, $date"
    echo
    echo "BPF_PROG_TEST_RUN, repeat $REPEAT, $ROUNDS rounds; kernel $(uname -r); $(nproc) CPUs;"
    echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo
    echo "| path | median ns/packet | min | max |"
    echo "|---|---|---|---|"
    sed 's/^round [0-9]*: xdp cost: //; s/ ns\/packet.*//' "$out" | awk -F': ' '
        { v[$1] = v[$1] " " $2; if (!($1 in seen)) { order[++n] = $1; seen[$1] = 1 } }
        END {
            for (i = 1; i <= n; i++) {
                k = order[i]; m = split(substr(v[k], 2), a, " ");
                for (x = 1; x <= m; x++) for (y = x + 1; y <= m; y++) if (a[y] + 0 < a[x] + 0) { t = a[x]; a[x] = a[y]; a[y] = t }
                printf "| %s | %d | %d | %d |\n", k, a[int((m + 1) / 2)], a[1], a[m]
            }
        }'
} > "$result"
rm -f "$out"
cat "$result"
