#!/usr/bin/env bash
# heal_kill.sh - goal 2 on 3 chunkd: kill -9 one chunkd while a 512 MiB write and
# a read of another file run -> both complete with the right sha256; then every
# chunk gets back to 2 copies on the survivors plus a fourth server.
source "$(dirname "$0")/lib.sh"
SERVER_TIMEOUT_MS=2000
dfs_cluster_up 3
dfs_mount
W_MB=${DFS_HEAL_MB:-512}

head -c $((256 << 20)) /dev/urandom >"$T/r.src"
cp "$T/r.src" "$MNT/r" && sync "$MNT/r" || fail "prepare read file"
rsum=$(sha256sum <"$T/r.src" | cut -d' ' -f1)
head -c $((W_MB << 20)) /dev/urandom >"$T/w.src"
wsum=$(sha256sum <"$T/w.src" | cut -d' ' -f1)
echo 3 >/proc/sys/vm/drop_caches

s=$SECONDS
(cp "$T/w.src" "$MNT/w" && sync "$MNT/w") >"$T/writer.out" 2>&1 &
wpid=$!
(sha256sum <"$MNT/r" | cut -d' ' -f1) >"$T/reader.out" 2>"$T/reader.err" &
rpid=$!
sleep 1.5
log "kill -9 chunkd 2 (pid ${CHUNKD_PID[2]}) during the write and the read"
kill -KILL "${CHUNKD_PID[2]}"; wait "${CHUNKD_PID[2]}" 2>/dev/null; CHUNKD_PID[2]=

wait_until 300 sh -c "! kill -0 $wpid" || fail "writer hung"
wait $wpid; wrc=$?
wait_until 300 sh -c "! kill -0 $rpid" || fail "reader hung"
wait $rpid; rrc=$?
log "writer rc=$wrc reader rc=$rrc after $((SECONDS - s)) s"
check "writer succeeded" [ $wrc = 0 ]
check "reader succeeded" [ $rrc = 0 ]
check "read during the failure returned the right data" [ "$(cat "$T/reader.out")" = "$rsum" ]
echo 3 >/proc/sys/vm/drop_caches
check "written file is intact" [ "$(sha256sum <"$MNT/w" | cut -d' ' -f1)" = "$wsum" ]

log "start a fourth chunkd; wait for every chunk to have 2 copies again"
dfs_start_chunkd 4
s=$SECONDS
wait_until 240 all_healthy || { dfsctl status; fail "chunks not back to goal: $(dfs_chunk_health)"; }
log "back to goal in $((SECONDS - s)) s"
dfsctl status
check "no chunk file left only on the dead server's disk is needed" [ "$(dfs_chunk_health | cut -d' ' -f5)" = 0 ]
echo 3 >/proc/sys/vm/drop_caches
check "data still intact after repair" [ "$(sha256sum <"$MNT/w" | cut -d' ' -f1)" = "$wsum" ]
