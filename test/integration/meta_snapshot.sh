#!/usr/bin/env bash
# meta_snapshot.sh - raft snapshots through metad's own log storage: with a
# tiny snapshot threshold and small log segments, a few thousand namespace
# changes produce snapshots, old segments are removed, and after kill -9 the
# namespace comes back from snapshot + remaining log, exactly.
source "$(dirname "$0")/lib.sh"

start() {
    dfs_start_metad -o snapshot_threshold=64 -o raft_segment_size=64K "$@"
}
start
for i in 1 2 3; do dfs_start_chunkd "$i"; done
wait_until 30 servers_up_ge 3 || fail "only $(dfs_servers_up) of 3 chunk servers registered"
dfs_mount

log "3000 changes in 30 directories"
for d in $(seq 1 30); do
    mkdir "$MNT/d$d" || fail "mkdir d$d"
    for f in $(seq 1 50); do : >"$MNT/d$d/f$f" || fail "create d$d/f$f"; done
    for f in $(seq 1 25); do rm "$MNT/d$d/f$f" || fail "rm d$d/f$f"; done
    echo "dir $d" >"$MNT/d$d/tag" || fail "tag d$d"
done
(cd "$MNT" && find . | sort) >"$T/before"

snaps() { ls "$T/metad" | grep -c '^snap-'; }
check "a snapshot was written" [ "$(snaps)" -ge 1 ]
check "older snapshots were removed" [ "$(snaps)" -le 2 ]
first=$(ls "$T/metad" | grep '^log-' | head -n1)
check "log segments before the snapshot's trailing window were removed" [ "$first" != "log-00000000000000000001" ]
log "segments: $(ls "$T/metad" | grep -c '^log-'), first $first; snapshots: $(ls "$T/metad" | grep '^snap-' | tr '\n' ' ')"

log "kill -9 metad and start it again"
kill -KILL "$METAD_PID"; wait "$METAD_PID" 2>/dev/null; METAD_PID=
start
wait_until 30 servers_up_ge 3 || fail "chunkd did not re-register"
grep -q 'rlog: loaded term [0-9]*, snapshot at [1-9]' "$T/metad.log" || fail "metad did not load a snapshot"
(cd "$MNT" && find . | sort) >"$T/after"
check "the namespace is identical" cmp -s "$T/before" "$T/after"
check "file contents kept" [ "$(cat "$MNT/d30/tag")" = "dir 30" ]
log "pass"
