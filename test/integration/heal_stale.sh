#!/usr/bin/env bash
# heal_stale.sh - stop a chunkd, overwrite files it held, start it again: its
# stale copies are never served and are deleted.
source "$(dirname "$0")/lib.sh"
SERVER_TIMEOUT_MS=2000
dfs_cluster_up 3
dfs_mount
for i in $(seq 1 6); do head -c $((2 << 20)) /dev/urandom >"$MNT/f$i"; done
sync
dfs_stop_chunkd 3
wait_until 30 servers_up_eq 2 || fail "metad did not notice chunkd 3 stopped"
for i in $(seq 1 6); do head -c $((2 << 20)) /dev/urandom >"$T/f$i"; dd if="$T/f$i" of="$MNT/f$i" conv=notrunc,fsync status=none || fail "overwrite f$i"; done
dfs_start_chunkd 3
wait_until 30 servers_up_ge 3 || fail "chunkd 3 did not rejoin"
for round in 1 2 3 4; do
    echo 3 >/proc/sys/vm/drop_caches
    for i in $(seq 1 6); do cmp -s "$T/f$i" "$MNT/f$i" || fail "stale data served for f$i (round $round)"; done
done
wait_until 120 all_healthy || fail "not healthy: $(dfs_chunk_health)"
# Stale copies on chunkd 3 are deleted (or brought up to date by repair):
# every chunk file there must carry a current version per dfsctl.
wait_until 60 sh -c "grep -Eqi 'delet|stale' '$T/chunkd3.log' '$T/metad.log'" || fail "no stale copy was deleted"
log "ok"
