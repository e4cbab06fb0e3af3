#!/bin/bash
# metad.sh - metadata ops/s (1 and 16 clients) and metad RSS per million files.
# Usage: bench/metad.sh [FILES_FOR_MEMORY (default 1000000)]
# The raft log lives under $BENCH_DIR (default: a dir under the repo's build/,
# i.e. on disk, not tmpfs) so its fsyncs are real.  Ops/s are measured with
# raft_sync = always and = batch.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${DFS_BIN_DIR:-build/bin}
BENCH=${DFS_BENCH_BIN:-build/bench/bench_metad}
MEMFILES=${1:-1000000}
DIR=$(mktemp -d "${BENCH_DIR:-$PWD/build}/bench-metad.XXXXXX")
PID=
start() { # raft_sync mode
    PORT=$((20000 + RANDOM % 20000)); RPORT=$((PORT + 1))
    rm -rf "$DIR/data"
    "$BIN/metad" -f -o data_dir="$DIR/data" -o listen=127.0.0.1:$PORT -o http_listen= \
        -o raft_listen=127.0.0.1:$RPORT -o raft_sync="$1" -o log_level=warning >"$DIR/metad.log" 2>&1 &
    PID=$!
    for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
}
stop() { kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; PID=; }
trap 'stop; rm -rf "$DIR"' EXIT
echo "== filesystem of the raft log: $(df -T "$DIR" | awk 'NR==2{print $2}')"
# always: every acknowledgement waits for fdatasync of the log (shared by
# the requests of one loop iteration); batch (the default): acknowledged once
# written, flushed within raft_sync_ms.
for mode in always batch; do
    echo "== raft_sync = $mode"
    start $mode
    "$BENCH" -m 127.0.0.1:$PORT -t 1 -n 20000
    "$BENCH" -m 127.0.0.1:$PORT -t 16 -n 10000
    [ $mode = batch ] || stop
done
rss0=$(awk '/VmRSS/{print $2}' /proc/$PID/status)
per=$((MEMFILES / 16))
"$BENCH" -m 127.0.0.1:$PORT -t 16 -n $per -k | grep -E "create|errors"
rss1=$(awk '/VmRSS/{print $2}' /proc/$PID/status)
echo "RSS before ${rss0} kB, after $((per * 16)) files ${rss1} kB:" \
     "$(( (rss1 - rss0) * 1024 / (per * 16) )) bytes/file"
