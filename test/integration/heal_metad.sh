#!/usr/bin/env bash
# heal_metad.sh - restart metad under load: clients pause and carry on, no
# acknowledged (fsync'ed) write is lost.
source "$(dirname "$0")/lib.sh"
dfs_cluster_up 3
dfs_mount -o timeout=60
mkdir "$MNT/load"
# Writer: creates files, fsyncs each, records it as acknowledged only after sync.
(
    for i in $(seq 1 400); do
        head -c $((i * 1000)) /dev/urandom >"$T/src.$i" 2>/dev/null
        dd if="$T/src.$i" of="$MNT/load/f$i" conv=fsync status=none || { echo "fail $i"; exit 1; }
        echo "$i" >>"$T/acked"
    done
) >"$T/writer.out" 2>&1 &
wpid=$!
wait_until 60 test -s "$T/acked" || fail "writer made no progress"
sleep 1
log "kill -9 metad under load (after $(wc -l <"$T/acked") acked files)"
kill -KILL "$METAD_PID"; wait "$METAD_PID" 2>/dev/null; METAD_PID=
sleep 2
dfs_start_metad
wait_until 30 servers_up_ge 3 || fail "chunkd did not re-register"
sleep 1
log "second restart with SIGTERM"
dfs_stop_metad TERM
dfs_start_metad
wait_until 300 sh -c "! kill -0 $wpid" || fail "writer hung across metad restarts"
wait $wpid; rc=$?
check "writer finished without an error" [ $rc = 0 ]
n=$(wc -l <"$T/acked")
log "$n files acknowledged"
echo 3 >/proc/sys/vm/drop_caches
bad=0
while read -r i; do cmp -s "$T/src.$i" "$MNT/load/f$i" || { log "lost or wrong: f$i"; bad=$((bad + 1)); }; done <"$T/acked"
check "every acknowledged file is intact" [ $bad = 0 ]
