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
# every chunk file of f1..f6 left on chunkd 3 must be listed by metad as an
# ok copy on that server (current version); the stale ones must be gone.
leftover_stale() { # prints chunk ids with a file on chunkd 3 but no ok copy there
    local i id
    for i in $(seq 1 6); do
        dfsctl fileinfo "$MNT/f$i" | awk -v p=":${CHUNKD_PORT[3]}" '
            $1 == "chunk" { id = $4; ids[id] = 1 }
            $1 == "replica" && $4 ~ (p "$") && $5 == "ok" { ok[id] = 1 }
            END { for (k in ids) if (!(k in ok)) print k }'
    done | while read -r id; do
        [ -n "$(find "${CHUNKD_DIR[3]}/chunks" -name "$id.chk")" ] && echo "$id"
    done
}
end=$((SECONDS + 60))
while [ -n "$(leftover_stale)" ]; do
    [ $SECONDS -lt $end ] || fail "stale copies still on chunkd 3: $(leftover_stale | tr '\n' ' ')"
    sleep 0.5
done
ndel=$(grep -c "deleting stale copy" "$T/metad.log")
log "ok: no stale copy left on chunkd 3 ($ndel stale copies deleted by repair)"
check "repair deleted stale copies" [ "$ndel" -gt 0 ]
