#!/usr/bin/env bash
# meta_durability.sh - metad's raft log in batch mode (raft_sync=batch): changes
# are acknowledged without a flush each, kill -9 of metad loses none of them
# (they are written before raft counts them), fsync and fsyncdir wait for the
# flush, and a bad raft_sync value is refused with a clear message.
source "$(dirname "$0")/lib.sh"

HTTP_PORT=$(dfs_free_port)
URL=http://127.0.0.1:$HTTP_PORT
# A flush interval far longer than the test: every flush seen is one that
# somebody asked for.
dfs_start_metad -o http_listen=127.0.0.1:$HTTP_PORT -o raft_sync=batch -o raft_sync_ms=10000
for i in 1 2 3; do dfs_start_chunkd "$i"; done
wait_until 30 servers_up_ge 3 || fail "only $(dfs_servers_up) of 3 chunk servers registered"
wait_until 10 port_open "$HTTP_PORT" || fail "http port $HTTP_PORT not open"
dfs_mount

metric() { curl -sf --max-time 5 "$URL/metrics" | sed -n "s/^$1 \([0-9]*\)$/\1/p"; }

mkdir "$MNT/d" || fail "mkdir"
f0=$(metric dfs_raft_log_flushes_total); b0=$(metric dfs_raft_log_bytes_total)
[ -n "$f0" ] && [ -n "$b0" ] || fail "no raft log metrics"
log "flushes $f0, log bytes $b0 before the creates"
for i in $(seq 1 300); do echo "file $i" >"$MNT/d/f$i" || fail "create f$i"; done
mkdir "$MNT/d/sub" && ln -s f1 "$MNT/d/link" && mv "$MNT/d/f2" "$MNT/d/moved" || fail "namespace ops"
f1=$(metric dfs_raft_log_flushes_total); b1=$(metric dfs_raft_log_bytes_total)
log "flushes $f1, log bytes $b1 after 300 creates"
check "300 creates wrote to the log" [ "$b1" -gt $((b0 + 300 * 64)) ]
check "and asked for no flush (batch mode)" [ "$f1" = "$f0" ]

log "fsync of a file waits for a flush"
sync "$MNT/d/f3" || fail "fsync f3"
f2=$(metric dfs_raft_log_flushes_total)
check "fsync flushed the log" [ "$f2" -gt "$f1" ]
log "fsyncdir waits for a flush"
mkdir "$MNT/d/after-fsync" || fail "mkdir"
sync "$MNT/d" || fail "fsync of the directory"
f3=$(metric dfs_raft_log_flushes_total)
check "fsyncdir flushed the log" [ "$f3" -gt "$f2" ]

log "kill -9 metad: acknowledged but unflushed changes survive (they are in the page cache)"
mkdir "$MNT/d/unflushed" && echo late >"$MNT/d/late" || fail "last changes"
kill -KILL "$METAD_PID"; wait "$METAD_PID" 2>/dev/null; METAD_PID=
dfs_start_metad -o http_listen=127.0.0.1:$HTTP_PORT -o raft_sync=batch -o raft_sync_ms=10000
wait_until 30 servers_up_ge 3 || fail "chunkd did not re-register"
missing=0
for i in 1 $(seq 3 300); do
    [ "$(cat "$MNT/d/f$i" 2>/dev/null)" = "file $i" ] || missing=$((missing + 1))
done
check "all 299 files read back after the restart" [ $missing = 0 ]
check "rename kept" [ "$(cat "$MNT/d/moved")" = "file 2" ]
check "symlink kept" [ "$(readlink "$MNT/d/link")" = f1 ]
check "directories kept" test -d "$MNT/d/sub" -a -d "$MNT/d/unflushed" -a -d "$MNT/d/after-fsync"
check "the last file kept" [ "$(cat "$MNT/d/late")" = late ]

log "a bad raft_sync is refused with a message"
out=$("$BIN/metad" -f -o data_dir="$T/bad" -o listen=127.0.0.1:$(dfs_free_port) \
    -o raft_listen=127.0.0.1:$(dfs_free_port) -o http_listen= -o raft_sync=sometimes 2>&1)
rc=$?
check "metad exits non-zero" [ $rc != 0 ]
check "and says why" grep -q 'raft_sync.*sometimes' <<<"$out"
log "pass"
