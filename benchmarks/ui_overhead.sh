#!/usr/bin/env bash
# /search throughput with and without the catalog page (issue 17): the page must add nothing measurable.
#   bash benchmarks/ui_overhead.sh [RUNS] [SECONDS]
# Runs wrk (2 threads x 32 connections) against /search?prerelease=true on the bundled test packages,
# alternating three servers started from this checkout: BEFORE = the tree of `main` (git archive, no
# /ui code at all), OFF = this tree with -ui=false, ON = this tree with -ui=true and a catalog page's
# event stream held open during the run. Prints requests/s and the server's CPU time per request
# (user+system, from /proc: less disturbed than requests/s by other load on a shared machine) of
# every run, and the medians per server.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
seconds=${2:-10}
py=$PWD/.venv/bin/python
before=$(mktemp -d)
git archive "${BEFORE_REF:-main}" | tar -x -C "$before"
pids=()
declare -A server_pid
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$before"; }
trap cleanup EXIT

start() { # name dir port args...
  local name=$1 dir=$2 port=$3; shift 3
  (cd "$dir" && PYTHONPATH="$dir" exec "$py" -m eprd -address "127.0.0.1:$port" -config "$PWD/config/config.yml" \
    -require-package-signatures=false -log-level error -package-paths-enable-watcher=false \
    -cache-dir "$(mktemp -d)" "$@") &
  pids+=($!)
  server_pid[$name]=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && return; sleep 0.1; done
  echo "server on $port did not start" >&2; exit 1
}
start before "$before" 18201
start off "$PWD" 18202 -ui=false
start on "$PWD" 18203 -ui=true
curl -sN "http://127.0.0.1:18203/ui/events" >/dev/null & pids+=($!)   # an open page's event stream

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A rates costs
ticks=$(getconf CLK_TCK)
for run in $(seq "$runs"); do
  for server in before:18201 off:18202 on:18203; do
    name=${server%%:*} port=${server##*:}
    cpu0=$(cpu_ticks "${server_pid[$name]}")
    out=$(wrk -t2 -c32 -d"${seconds}s" "http://127.0.0.1:$port/search?prerelease=true")
    cpu1=$(cpu_ticks "${server_pid[$name]}")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    count=$(awk '/requests in/ {print $1}' <<<"$out")
    us=$(awk -v a="$cpu0" -v b="$cpu1" -v n="$count" -v t="$ticks" 'BEGIN {printf "%.1f", (b - a) / t * 1e6 / n}')
    rates[$name]="${rates[$name]:-} $rps"
    costs[$name]="${costs[$name]:-} $us"
    echo "run $run $name: $rps req/s, $us us CPU/request"
  done
done
for name in before off on; do
  echo "median $name: $(echo "${rates[$name]}" | median) req/s, $(echo "${costs[$name]}" | median) us CPU/request"
done
