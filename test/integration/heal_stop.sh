#!/usr/bin/env bash
# heal_stop.sh - SIGSTOP a chunkd (hung, not dead) during reads: reads continue
# from the other replica within the configured deadline; after SIGCONT the
# server rejoins and never serves stale data.
source "$(dirname "$0")/lib.sh"
SERVER_TIMEOUT_MS=2000
dfs_cluster_up 3
# dfsmount has no separate per-RPC option: `timeout` bounds every call, and
# each chunkd call attempt gets min(timeout, 30 s) (fuse-client/data.c
# chunk_timeout_ms).  5 s: a hung replica costs at most 5 s before failover.
dfs_mount -o timeout=5
for i in 1 2 3 4; do head -c $((16 << 20)) /dev/urandom >"$T/f$i"; cp "$T/f$i" "$MNT/f$i"; done
sync
echo 3 >/proc/sys/vm/drop_caches
log "SIGSTOP chunkd 1"
kill -STOP "${CHUNKD_PID[1]}"
s=$SECONDS
for i in 1 2 3 4; do
    timeout 60 cmp -s "$T/f$i" "$MNT/f$i" || { kill -CONT "${CHUNKD_PID[1]}"; fail "read of f$i wrong or hung while chunkd 1 is stopped"; }
done
log "reads with a hung server took $((SECONDS - s)) s"
check "reads finished well within the deadline" [ $((SECONDS - s)) -lt 30 ]
log "overwrite f1 while chunkd 1 is stopped (its copy goes stale)"
head -c $((16 << 20)) /dev/urandom >"$T/f1"
cp "$T/f1" "$MNT/f1" && sync "$MNT/f1" || { kill -CONT "${CHUNKD_PID[1]}"; fail "write with a hung server"; }
kill -CONT "${CHUNKD_PID[1]}"
log "SIGCONT chunkd 1"
wait_until 30 servers_up_ge 3 || fail "stopped server did not rejoin"
for round in 1 2 3; do
    echo 3 >/proc/sys/vm/drop_caches
    for i in 1 2 3 4; do
        timeout 60 cmp -s "$T/f$i" "$MNT/f$i" || fail "round $round: f$i differs after SIGCONT (stale data served?)"
    done
done
wait_until 120 all_healthy || fail "not healthy after rejoin: $(dfs_chunk_health)"
log "ok: rejoined, no stale data, healthy"
