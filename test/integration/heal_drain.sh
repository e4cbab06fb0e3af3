#!/usr/bin/env bash
# heal_drain.sh - drain moves every chunk off a server without ever dropping
# below the goal; a new empty server gets chunks until usage evens out; a
# deleted 1 GiB file's space returns on all servers; goal changes apply.
source "$(dirname "$0")/lib.sh"
dfs_cluster_up 3
dfs_mount
GB_MB=${DFS_DRAIN_MB:-1024}
head -c $((GB_MB << 20)) /dev/urandom >"$MNT/big" && sync "$MNT/big" || fail "write big"
for i in $(seq 1 20); do head -c $((1 << 20)) /dev/urandom >"$MNT/s$i"; done; sync
du_all() { local i t=0; for i in "$@"; do t=$((t + $(du -sm "${CHUNKD_DIR[$i]}" | cut -f1))); done; echo $t; }
before=$(du_all 1 2 3)
log "data on disk before delete: ${before} MiB"
rm "$MNT/big"
wait_until 120 sh -c "[ \$(du -sm '${CHUNKD_DIR[1]}' '${CHUNKD_DIR[2]}' '${CHUNKD_DIR[3]}' | awk '{s+=\$1} END {print s}') -lt $((before - GB_MB * 2 + 200)) ]" ||
    fail "space of the deleted file did not come back: $(du_all 1 2 3) MiB still used"
log "space returned: $(du_all 1 2 3) MiB used after delete"
# ... on every server, not just in total (20 MiB of small files x 2 copies remain)
for i in 1 2 3; do
    wait_until 60 sh -c "[ \$(du -sm '${CHUNKD_DIR[$i]}' | cut -f1) -lt 150 ]" ||
        fail "chunkd $i still uses $(du -sm "${CHUNKD_DIR[$i]}" | cut -f1) MiB after the delete"
done
log "ok: space returned on every server"

# ok copies per chunk of a file, one number per chunk
copies_per_chunk() { dfsctl fileinfo "$1" | awk '$1 == "chunk" {if (id) print n; id = $4; n = 0} $1 == "replica" && $NF == "ok" {n++} END {if (id) print n}'; }
log "goal 3 on s1..s20, then back to 2"
dfsctl setgoal 3 "$MNT" -r >/dev/null || fail "setgoal 3"
wait_until 120 all_healthy || fail "goal 3 not reached: $(dfs_chunk_health)"
check "s1: 3 ok copies of every chunk" [ "$(copies_per_chunk "$MNT/s1" | sort -u)" = 3 ]
dfsctl setgoal 2 "$MNT" -r >/dev/null || fail "setgoal 2"
wait_until 120 all_healthy || fail "goal 2 not reached: $(dfs_chunk_health)"
check "s1: 2 ok copies of every chunk" [ "$(copies_per_chunk "$MNT/s1" | sort -u)" = 2 ]

log "rebalance onto an empty fourth server"
for i in $(seq 21 80); do head -c $((1 << 20)) /dev/urandom >"$MNT/s$i"; done; sync
dfs_start_chunkd 4
wait_until 180 sh -c "[ \$(find '${CHUNKD_DIR[4]}' -name '*.chk' | wc -l) -ge 20 ]" || fail "nothing moved to the new server"
log "new server holds $(chunk_files "${CHUNKD_DIR[4]}") chunk files"

log "drain server 1"
sid=$(dfsctl status | awk '$0 ~ /host1|127.0.0.1:'"${CHUNKD_PORT[1]}"'/ {print $1; exit}')
[ -n "$sid" ] || fail "cannot find server id of chunkd 1 in dfsctl status"
wait_until 120 all_healthy || fail "not healthy before drain: $(dfs_chunk_health)"
dfsctl drain "$sid" || fail "dfsctl drain"
# Sample chunk health while the drain runs: under-goal must stay 0 throughout.
( end=$((SECONDS + 240)); while [ $SECONDS -lt $end ]; do dfs_chunk_health; sleep 0.2; done ) >"$T/drain-health.txt" 2>/dev/null &
sampler=$!
wait_until 240 sh -c "[ \$(find '${CHUNKD_DIR[1]}' -name '*.chk' | wc -l) -eq 0 ]" || { kill $sampler; fail "drain left $(chunk_files "${CHUNKD_DIR[1]}") chunks"; }
kill $sampler 2>/dev/null; wait $sampler 2>/dev/null
check "never below goal during the drain" awk '$3 != 0 || $5 != 0 {bad=1} END {exit bad}' "$T/drain-health.txt"
# Moves started by rebalancing may still be finishing (a confirmed copy
# briefly makes 3 before the surplus one is deleted): wait for them.
wait_until 30 all_healthy || fail "not healthy after the drain: $(dfs_chunk_health)"
log "ok: healthy after drain"
dfs_stop_chunkd 1
echo 3 >/proc/sys/vm/drop_caches
for i in $(seq 1 80); do cat "$MNT/s$i" >/dev/null || fail "read s$i after drain"; done
check "still healthy with the drained server gone" all_healthy
