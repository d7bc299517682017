# Shared by bench/l7.sh and bench/tls.sh (sourced): parse --no-build / --out / --help, check
# the shared harness is there, build the release binary, and run the harness with Switchyard
# in its LB slot, writing a report with the commit and the load average around the run.
#
# run_with_switchyard NAME HARNESS DEFAULT_PEERS TITLE LB_ENV [script arguments...]
#   NAME           report prefix (bench/results/NAME-<UTC date>.md) and message prefix
#   HARNESS        the script in ../shared/bench (peers.sh, tls-peers.sh)
#   DEFAULT_PEERS  PEERS when the environment sets none
#   TITLE          the report's heading
#   LB_ENV         the harness's slot variables besides LB_NAME and LB_CMD ("LB_PORT=...")
run_with_switchyard() {
    local name=$1 harness=$2 default_peers=$3 title=$4 lb_env=$5
    shift 5
    ROOT=$(cd "$(dirname "$0")/.." && pwd)
    local shared=${SHARED_BENCH:-$ROOT/../shared/bench}
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
    local bin=$CARGO_TARGET_DIR/release/switchyard
    local build=1 out=""
    while (($#)); do
        case $1 in
        --no-build) build=0 ;;
        --out) out=$2; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench/$name.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
        esac
        shift
    done
    [[ -x $shared/$harness ]] || { echo "bench/$name.sh: no harness at $shared/$harness" >&2; exit 1; }
    ((build)) && cargo build --release --locked --manifest-path "$ROOT/Cargo.toml"
    mkdir -p "$ROOT/bench/results"
    out=${out:-$ROOT/bench/results/$name-$(date -u +%Y-%m-%d).md}
    export PEERS=${PEERS:-$default_peers}
    {
        echo "# Switchyard $title benchmark, $(date -u +%FT%TZ)"
        echo
        echo "commit $(git -C "$ROOT" rev-parse --short HEAD), loadavg at start $(cut -d' ' -f1-3 /proc/loadavg)"
        echo
        cd "$shared"
        # shellcheck disable=SC2086 # LB_ENV is a list of assignments
        env LB_NAME=switchyard $lb_env LB_CMD="$bin run -c \$LB_CONFIG" "./$harness"
        echo
        echo "loadavg at end $(cut -d' ' -f1-3 /proc/loadavg)"
    } > "$out"
    echo "report: $out" >&2
}
