#!/usr/bin/env bash
# bench/l4.sh - Switchyard's L4 benchmark (issue 4 item 6): Switchyard vs HAProxy `mode tcp`
# vs nginx `stream` vs direct, in ONE run of the shared side-by-side harness
# (../shared/bench/l4-peers.sh, see its README), with Switchyard in the harness's LB_* slot.
#
#   bench/l4.sh                      # full run (ROUNDS=3 DURATION=5), ~6.5 min
#   bench/l4.sh --smoke              # ROUNDS=1 DURATION=2 TESTS="conn bulk1": does the slot work?
#   bench/l4.sh --no-udp             # drop Switchyard's UDP listener (udp still runs for nginx/direct)
#   bench/l4.sh --out FILE           # report path (default bench/results/l4-<UTC date>.md)
#   bench/l4.sh --no-build           # skip `cargo build --release --locked`
#
# What it does: builds the release binary, refuses to run unless everything is on loopback,
# renders bench/conf/switchyard-l4.toml and validates it with `switchyard check`, runs the
# harness (which pins load generators to cpu0 and proxy + backends to cpu1), and writes a
# Markdown report: a header (commit, load average at start and end, UDP status), a summary
# table of Switchyard against HAProxy and nginx from the same run, then the harness's own
# report unchanged (medians, raw per-run numbers, exact commands).
#
# UDP: without --no-udp or --udp, the full template is checked first; if `switchyard check`
# rejects it (no UDP listeners in this build) the UDP block is dropped, LB_UDP_PORT="" is
# passed so the harness skips only Switchyard's udp test, and the report says so.
#
# Every harness knob passes through the environment (ROUNDS DURATION WARMUP CONNS TESTS
# PEERS UDP_FLOWS UDP_BURST LOADGEN_CPU PROXY_CPU BACKEND_CPU ...). SHARED_BENCH points at
# the harness (default ../shared/bench from the project root). Needs the harness's tools
# (../shared/bench/setup.sh, or apt: haproxy nginx libnginx-mod-stream iperf3 sockperf wrk).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
TEMPLATE=$ROOT/bench/conf/switchyard-l4.toml
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release/switchyard

udp=auto build=1 out="" smoke=0
while (($#)); do
    case $1 in
    --no-udp) udp=no ;;
    --udp) udp=yes ;;
    --no-build) build=0 ;;
    --smoke) smoke=1 ;;
    --out) out=$2; shift ;;
    --out=*) out=${1#--out=} ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/l4.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
if ((smoke)); then
    export ROUNDS=${ROUNDS:-1} DURATION=${DURATION:-2} TESTS=${TESTS:-"conn bulk1"}
fi
log() { printf '[%(%H:%M:%S)T] l4.sh: %s\n' -1 "$*" >&2; }
die() { echo "bench/l4.sh: $*" >&2; exit 1; }

[[ -x $SHARED/l4-peers.sh ]] || die "shared harness not found at $SHARED/l4-peers.sh (set SHARED_BENCH)"
[[ $(uname -s) == Linux ]] || die "Linux only (taskset, /proc)"

# ---------------------------------------------------------------- loopback only
# The harness binds and connects to 127.0.0.1 only; make sure of it before anything starts:
# 127.0.0.1 must be on the loopback interface, the harness must name no other IPv4 address,
# and every address in the rendered Switchyard config must be a loopback one.
loopback_only() {            # loopback_only FILE...: every IPv4/IPv6 literal is loopback
    local bad
    bad=$(grep -ohE '([0-9]{1,3}\.){3}[0-9]{1,3}|\[[0-9a-fA-F]*:[0-9a-fA-F:]*\]' "$@" | sort -u |
          grep -vE '^127\.|^\[::1\]$' || true)
    [[ -z $bad ]] || { echo "non-loopback address(es) in $*: $bad" >&2; return 1; }
}
loopback_config() {          # loopback_config TOML: the above, and every listen = / endpoint is 127.x or [::1]
    local bad
    loopback_only "$1" || return 1
    bad=$(grep -oE '"[^"]*:[0-9@A-Z]+"' "$1" | tr -d '"' | grep -vE '^127\.[0-9.]+:|^\[::1\]:' || true)
    [[ -z $bad ]] || { echo "non-loopback listen/endpoint address(es) in $1: $bad" >&2; return 1; }
}
if command -v ip > /dev/null; then
    lo_addrs=$(ip -o addr show dev lo 2>/dev/null || true)   # not piped into grep -q: SIGPIPE + pipefail
    [[ $lo_addrs == *"inet 127.0.0.1/"* ]] ||
        die "127.0.0.1 is not on the loopback interface: refusing to run"
fi
loopback_only "$SHARED/l4-peers.sh" "$SHARED/lib.sh" || die "the harness is not loopback-only: refusing to run"
for v in LB_BACKENDS LB_BULK_BACKEND LB_UDP_BACKENDS; do   # the harness sets these itself
    [[ -z ${!v:-} ]] || die "$v is set in the environment; unset it (the harness picks loopback backends)"
done

# ---------------------------------------------------------------- build
if ((build)); then
    log "cargo build --release --locked (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    (cd "$ROOT" && cargo build --release --locked) || die "release build failed"
fi
[[ -x $BIN ]] || die "no release binary at $BIN (run without --no-build)"

# ---------------------------------------------------------------- config
export LB_PORT=${LB_PORT-18206} LB_BULK_PORT=${LB_BULK_PORT-18216} LB_UDP_PORT=${LB_UDP_PORT-18226}
SCRATCH=$(mktemp -d -t switchyard-l4.XXXXXX)
# Rendered the way l4-peers.sh renders it (same placeholders, same fixed backend ports).
render() {                   # render TEMPLATE OUT UDPPORT
    sed -e "s|@RUN@|$SCRATCH|g" -e "s|@PORT@|$LB_PORT|g" -e "s|@BULKPORT@|$LB_BULK_PORT|g" \
        -e "s|@UDPPORT@|$3|g" -e "s|@B1@|18081|g" -e "s|@B2@|18082|g" -e "s|@BH2@|18091|g" \
        -e "s|@BIPERF@|18083|g" -e "s|@U1@|18084|g" -e "s|@U2@|18085|g" -e "s|@STREAM_MODULE@||g" \
        "$1" > "$2"
}
drop_udp() { sed '/^# udp:begin/,/^# udp:end/d' "$1" > "$2"; }
check() { "$BIN" check -c "$1" > "$SCRATCH/check.out" 2>&1; }

udp_note=""
NOUDP=$SCRATCH/tpl/switchyard-l4.toml
mkdir -p "$SCRATCH/tpl"
drop_udp "$TEMPLATE" "$NOUDP"
[[ -z $LB_UDP_PORT ]] && udp=no
if [[ $udp != no ]]; then
    render "$TEMPLATE" "$SCRATCH/check-full.toml" "$LB_UDP_PORT"
    loopback_config "$SCRATCH/check-full.toml" || die "rendered config is not loopback-only"
    if check "$SCRATCH/check-full.toml"; then
        LB_TEMPLATE=$TEMPLATE; udp=yes
        udp_note="Switchyard UDP listener: enabled (\`switchyard check\` accepts it)."
    elif [[ $udp == yes ]]; then
        cat "$SCRATCH/check.out" >&2; die "--udp given but switchyard check rejects the config"
    else
        log "switchyard check rejects the UDP listener; running without it:"
        sed 's/^/    /' "$SCRATCH/check.out" >&2
        udp=no
        udp_note="Switchyard UDP listener: dropped (\`switchyard check\` rejected it in this build: $(tr '\n' ' ' < "$SCRATCH/check.out" | cut -c1-300)); the udp test runs for nginx and direct only."
    fi
fi
if [[ $udp == no ]]; then
    LB_TEMPLATE=$NOUDP; LB_UDP_PORT=""
    [[ -n $udp_note ]] || udp_note="Switchyard UDP listener: dropped (--no-udp); the udp test runs for nginx and direct only."
fi
render "$LB_TEMPLATE" "$SCRATCH/check.toml" "$LB_UDP_PORT"
loopback_config "$SCRATCH/check.toml" || die "rendered config is not loopback-only"
check "$SCRATCH/check.toml" || { cat "$SCRATCH/check.out" >&2; die "switchyard check rejects $LB_TEMPLATE"; }
log "switchyard check: ok ($(basename "$LB_TEMPLATE"), udp=$udp)"

# ---------------------------------------------------------------- run
date_tag=$(date -u +%Y-%m-%d)
if [[ -z $out ]]; then
    out=$ROOT/bench/results/l4-$date_tag.md
    ((smoke)) && out=$ROOT/bench/results/l4-$date_tag-smoke.md
fi
mkdir -p "$(dirname "$out")"
RUN_DIR=${RUN_DIR:-$SCRATCH/run}; export RUN_DIR
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
code_commit=$(git -C "$ROOT" log -1 --format=%h -- crates Cargo.toml Cargo.lock 2>/dev/null || echo unknown)
dirty=$(git -C "$ROOT" status --porcelain --untracked-files=no -- crates Cargo.toml Cargo.lock 2>/dev/null | wc -l)
busiest() {                  # the five busiest processes over one second, "comm cpu%; ..."
    top -b -n2 -d1 -o %CPU -w 200 2>/dev/null |
        awk '/^top -/{n++} n == 2 && /^ *[0-9]+ /{printf "%s %s%%; ", $12, $9; if (++k == 5) exit}'
}
load0=$(cut -d' ' -f1-3 /proc/loadavg); t0=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
top0=$(busiest)
log "running $SHARED/l4-peers.sh (loadavg $load0); report -> $out"

harness=$SCRATCH/harness.md
set +e
(cd "$SHARED" && LB_NAME=switchyard LB_CONF="$LB_TEMPLATE" \
    LB_CMD="$BIN run -c \$LB_CONFIG" ./l4-peers.sh) > "$harness"
rc=$?
set -e
load1=$(cut -d' ' -f1-3 /proc/loadavg); t1=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
top1=$(busiest)
((rc == 0)) || die "harness failed (rc $rc); partial report in $harness, scratch in $RUN_DIR"
[[ -s $RUN_DIR/raw.tsv ]] || die "harness produced no measurements; see $harness and $RUN_DIR"

# ---------------------------------------------------------------- report
summary() {                  # Switchyard vs HAProxy / nginx / direct, from the harness's raw.tsv
    python3 - "$RUN_DIR/raw.tsv" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
# round peer test rate work p50_us p99_us errors rss_kb cpu_s be_cpu_s loadgen% proxycore% other_s note
tests = [("bulk1", "Gbit/s", "CPU s/GB", 1e9, "%.2f", False),
         ("bulk4", "Gbit/s", "CPU s/GB", 1e9, "%.2f", False),
         ("conn", "conn/s", "CPU us/conn", 1e6, "%.0f", True),
         ("udp", "datagrams/s", "CPU us/dgram", 1e6, "%.0f", True)]
peers = ["switchyard", "haproxy", "nginx", "direct"]
def med(xs): return statistics.median(xs) if xs else None
def fmt(v, f): return "-" if v is None else f % v
def ratio(a, b): return "-" if a is None or not b else "%.2f" % (a / b)
for test, rl, cl, scale, rf, lat in tests:
    m = {}
    for p in peers:
        rs = [r for r in rows if r[1] == p and r[2] == test]
        if not rs: continue
        m[p] = dict(rate=med([float(r[3]) for r in rs]),
                    cpu=None if p == "direct" else med([float(r[9]) * scale / float(r[4]) for r in rs if float(r[4]) > 0]),
                    p99=med([float(r[6]) for r in rs]), err=sum(int(float(r[7])) for r in rs),
                    px=med([float(r[12]) for r in rs]), n=len(rs))
    if not m: continue
    print(f"\n### {test}\n")
    hdr = f"| | {rl} | {cl} |" + (" p99 us |" if lat else "") + " proxy core | errors | runs |"
    print(hdr); print("|---" * (hdr.count("|") - 1) + "|")
    for p in peers:
        if p not in m: continue
        v = m[p]
        print(f"| {p} | {fmt(v['rate'], rf)} | {fmt(v['cpu'], '%.2f')} |" + (f" {fmt(v['p99'], '%.0f')} |" if lat else "")
              + f" {v['px']:.0f}% | {v['err']} | {v['n']} |")
    s = m.get("switchyard")
    for other in ("haproxy", "nginx", "direct"):
        if s is None or other not in m: continue
        o = m[other]
        cells = [ratio(s["rate"], o["rate"]), ratio(s["cpu"], o["cpu"]) if other != "direct" else "-"]
        if lat: cells.append(ratio(s["p99"], o["p99"]))
        print(f"| **switchyard / {other}** | {' | '.join(cells)} | | | |")
    if s is None:
        print("\nSwitchyard did not run this test (see the UDP note / skipped runs).")
print("\nRatios are of medians (CPU per unit: median of per-run values). Rate and p99: higher rate is"
      " better, lower CPU and p99 are better; a rate ratio < 1.00 or a CPU ratio > 1.00 means"
      " Switchyard is behind that peer.")
PY
}

{
    echo "# Switchyard L4 benchmark ($t0)"
    echo
    echo "Produced by \`bench/l4.sh\` (project commit \`$commit\`, last code change \`$code_commit\`$( ((dirty)) && echo ", with uncommitted changes under crates/"), \`cargo build --release --locked\`: thin LTO) running the shared harness \`../shared/bench/l4-peers.sh\` with Switchyard in its LB slot; one run, all on 127.0.0.1."
    echo
    echo "- Invocation: \`$( ((smoke)) && echo "--smoke ")ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-5} TESTS=\"${TESTS:-bulk1 bulk4 conn udp}\" bench/l4.sh$( [[ $udp == no ]] && echo " (udp dropped)")\`"
    echo "- Switchyard: \`$BIN run -c \$LB_CONFIG\`, config rendered from \`bench/conf/$(basename "$TEMPLATE")\`$( [[ $udp == no ]] && echo " minus its udp block"), \`[runtime] workers = 1\`, access log off."
    echo "- $udp_note"
    echo "- Load average (1/5/15 min) at start: $load0 ($t0); at end: $load1 ($t1). The machine has $(nproc) cores and is shared with other builds, so absolute numbers are noisy; compare peers within this run (they are interleaved, order rotated per round)."
    echo "- Busiest processes (1 s sample) at start: ${top0%; }; at end: ${top1%; }."
    echo
    echo "## Switchyard against the peers (same run)"
    summary
    echo
    echo "## Harness report (unchanged)"
    echo
    sed 's/^#/##/' "$harness"
} > "$out"
log "report written to $out"
