#!/usr/bin/env bash
# fs.sh - the reference workload (../shared/bench/fsbench.sh) on a dfs mount, next
# to a local directory, a FUSE passthrough (bindfs) and MooseFS when those are
# installed, interleaved in one run.  Prints the fsbench table.
set -u
cd "$(dirname "$0")/.."
SHARED=${SHARED:-$(cd .. && pwd)/shared/bench}
[ -d "$SHARED" ] || { echo "fs.sh: $SHARED not found"; exit 1; }
ROUNDS=${ROUNDS:-2}
OUT=$(mktemp -d /tmp/dfs-fsbench.XXXXXX)
BIN=${DFS_BIN_DIR:-$PWD/build/bin}
VAR=$OUT/var MNT=$OUT/mnt METAD_PORT=29520 RAFT_PORT=29521 HTTP_PORT=29580 CHUNKD_BASE=29530 \
    DFS_BIN_DIR=$BIN bash tools/dfs-cluster.sh start >/dev/null || { echo "cluster did not start"; exit 1; }
cleanup() {
    VAR=$OUT/var MNT=$OUT/mnt DFS_BIN_DIR=$BIN bash tools/dfs-cluster.sh stop >/dev/null
    [ -n "${MFS:-}" ] && bash "$SHARED/moosefs-down.sh" >/dev/null 2>&1
    [ -n "${BINDFS:-}" ] && bash "$SHARED/bindfs-down.sh" >/dev/null 2>&1
}
trap cleanup EXIT
targets="local=/tmp/anchor-local dfs=$OUT/mnt"
mkdir -p /tmp/anchor-local
if command -v bindfs >/dev/null && bash "$SHARED/bindfs-up.sh" >/dev/null 2>&1; then
    BINDFS=1; targets="$targets bindfs=/tmp/anchor-bindfs/mnt"
fi
if command -v mfsmaster >/dev/null && bash "$SHARED/moosefs-up.sh" >/dev/null 2>&1; then
    MFS=1; targets="$targets moosefs=/tmp/anchor-mfs/mnt"
fi
bash "$SHARED/fsbench-rounds.sh" "$OUT/results" "$ROUNDS" $targets
bash "$SHARED/fsbench-table.sh" "$OUT"/results/*.txt
