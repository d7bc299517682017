#!/usr/bin/env bash
# The ceiling of `switchyard bench` against wrk and h2load (docs/performance.md): one
# `switchyard backend` pinned to cpu1, each generator pinned to cpu0, interleaved rounds;
# prints each run's rate and the generator's own CPU time (user + sys).
#   ROUNDS=2 DURATION=5 bench/loadgen.sh
set -u
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/switchyard}
[ -x "$BIN" ] || cargo build --release --locked -p switchyard
PORT=${PORT:-19101}
D=${DURATION:-5}
taskset -c 1 "$BIN" backend --listen 127.0.0.1:$PORT --name b1 2>/dev/null &
BACKEND=$!
trap 'kill $BACKEND' EXIT
sleep 1
TIMEFORMAT='cpu %U user %S sys'
URL=http://127.0.0.1:$PORT/
for round in $(seq "${ROUNDS:-2}"); do
  echo "== round $round, $(uptime | sed 's/.*load/load/')"
  { time taskset -c 0 wrk -t1 -c64 -d${D}s "$URL" | grep Requests/sec; } 2>&1 | tr '\n' ' '; echo " <- wrk h1 c64"
  { time taskset -c 0 "$BIN" bench "$URL" -c 64 -d ${D}s | grep requests; } 2>&1 | tr '\n' ' '; echo " <- bench h1 c64"
  { time taskset -c 0 h2load -t1 -c4 -m16 -D "$D" "$URL" 2>/dev/null | grep "finished in"; } 2>&1 | tr '\n' ' '; echo " <- h2load h2c c4 m16"
  { time taskset -c 0 "$BIN" bench "$URL" --http 2 -c 4 --concurrency 64 -d ${D}s | grep requests; } 2>&1 | tr '\n' ' '; echo " <- bench h2c c4 x64"
  for rate in 10000 20000 30000; do
    { time taskset -c 0 "$BIN" bench "$URL" -c 64 --rate $rate -d ${D}s | grep -E "requests|latency"; } 2>&1 | tr '\n' ' '; echo " <- bench open loop $rate/s"
  done
done
