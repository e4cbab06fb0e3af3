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
tkill=$(date +%s.%N)
# Time from the kill until every chunk is at its goal again (measured in the
# background while the writer and reader finish).
( while kill -0 $wpid 2>/dev/null; do sleep 0.1; done; date +%s.%N >"$T/writer.end"
  while ! all_healthy; do sleep 0.2; done; date +%s.%N >"$T/healthy.at" ) &
sampler=$!

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

wait_until 240 test -s "$T/healthy.at" || { kill $sampler 2>/dev/null; fail "chunks not back to goal on the survivors: $(dfs_chunk_health)"; }
wait $sampler 2>/dev/null
log "back to goal $(python3 -c "print('%.1f' % ($(cat "$T/healthy.at") - $tkill))") s after the kill: $(dfsctl status | grep '^repairs:')"
# The written file's chunks wait for the writer (its leases), but not longer:
# its leases end when it closes the file.
after_w=$(python3 -c "print(int($(cat "$T/healthy.at") - $(cat "$T/writer.end")))")
check "back to goal within 20 s of the writer's end (took ${after_w} s)" [ "$after_w" -lt 20 ]
log "start a fourth chunkd; wait for every chunk to have 2 copies again"
dfs_start_chunkd 4
s=$SECONDS
wait_until 240 all_healthy || { dfsctl status; fail "chunks not back to goal: $(dfs_chunk_health)"; }
log "back to goal in $((SECONDS - s)) s"
dfsctl status
check "no chunk file left only on the dead server's disk is needed" [ "$(dfs_chunk_health | cut -d' ' -f5)" = 0 ]
echo 3 >/proc/sys/vm/drop_caches
check "data still intact after repair" [ "$(sha256sum <"$MNT/w" | cut -d' ' -f1)" = "$wsum" ]
