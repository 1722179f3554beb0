#!/usr/bin/env bash
# What one request costs the node and the bare echo it is compared with:
# runs the load bench (benches/load.rs) with `perf stat` attached to the
# node and to the echo process, and prints per request: CPU time, write
# and read system calls, context switches. With --record it also records
# the node (call graphs) into target/profile/node.perf.data for
# `perf report -i target/profile/node.perf.data --no-children`.
# Needs perf (linux-perf) and permission to attach (root, or
# kernel.perf_event_paranoid <= 1). Environment as for the bench
# (M2M_LOAD_REQUESTS, M2M_LOAD_ROUNDS).
set -euo pipefail
cd "$(dirname "$0")/.."
record=false
[[ "${1:-}" == "--record" ]] && record=true
command -v perf >/dev/null || { echo "profile.sh: perf is not installed (apt-get install linux-perf)" >&2; exit 2; }
cargo build --release --quiet
bench=$(cargo bench --bench load --no-run --message-format=json 2>/dev/null \
    | sed -n 's/.*"executable":"\([^"]*load-[^"]*\)".*/\1/p' | tail -1)
[[ -x "$bench" ]] || { echo "profile.sh: cannot find the load bench binary" >&2; exit 1; }
out=target/profile
mkdir -p "$out"
"$bench" --bench >"$out/bench.txt" 2>&1 &
meter=$!
comm=$(basename "$bench" | cut -c1-15)
node="" echo=""
for _ in $(seq 1000); do
    node=$(pgrep -f "release/m2mnode run --config" | head -1 || true)
    echo=$(pgrep -x "$comm" | grep -vx "$meter" | head -1 || true)
    [[ -n "$node" && -n "$echo" ]] && break
    sleep 0.01
done
[[ -n "$node" && -n "$echo" ]] || { echo "profile.sh: the node or the echo did not start" >&2; kill "$meter"; exit 1; }
events=task-clock,context-switches,syscalls:sys_enter_writev,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom
perf stat -x, -e "$events" -p "$echo" -o "$out/echo.stat" &
if $record; then
    perf record -q -F 999 -g -p "$node" -o "$out/node.perf.data" &
fi
perf stat -x, -e "$events" -p "$node" -o "$out/node.stat"
wait "$meter"
wait
cat "$out/bench.txt"
requests=$(sed -n 's/.*each system answered \([0-9]*\) requests.*/\1/p' "$out/bench.txt")
per_request() {
    awk -F, -v n="$requests" -v who="$1" '
        $3 == "task-clock" { cpu = $1 }
        $3 == "context-switches" { cs = $1 }
        $3 ~ /writev|sendto/ { w += $1 }
        $3 ~ /recvfrom/ { r = $1 }
        END { printf "  %-7s %6.1f us CPU, %.2f writes, %.2f reads, %.2f context switches a request\n", who, cpu * 1000 / n, w / n, r / n, cs / n }
    ' "$2"
}
echo "per request ($requests requests each):"
per_request m2mnode "$out/node.stat"
per_request echo "$out/echo.stat"
