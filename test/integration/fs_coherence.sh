#!/usr/bin/env bash
# fs_coherence.sh - two mounts of one cluster: close-to-open consistency.  What
# one client wrote and closed is what the other sees at its next open, new
# names another client adds are found at once (no stale negative answer), and
# renames/unlinks by one are seen by the other after its caches' timeout.
source "$(dirname "$0")/lib.sh"
dfs_cluster_up 3
dfs_mount
MNT2=$T/mnt2
mkdir -p "$MNT2"
"$BIN/dfsmount" -f "127.0.0.1:$METAD_PORT" "$MNT2" -o timeout=30 >>"$T/dfsmount2.log" 2>&1 &
M2PID=$!
wait_until 20 mountpoint -q "$MNT2" || fail "second mount did not appear"
trap 'fusermount3 -u "$MNT2" 2>/dev/null; wait_pid_exit $M2PID 20; dfs_cleanup' EXIT

log "a directory made by A, a file created in it by B, read by A at once"
for i in $(seq 1 20); do
    mkdir "$MNT/d$i" || fail "mkdir d$i"
    echo "x$i" >"$MNT2/d$i/f" || fail "B cannot create d$i/f"
    got=$(cat "$MNT/d$i/f" 2>&1) || fail "A does not see d$i/f that B created and closed: $got"
    [ "$got" = "x$i" ] || fail "A reads '$got' for d$i/f, want x$i"
done
log "ok: 20 new names seen at once"

log "B rewrites a file A has cached; A's next open sees the new contents"
head -c 100000 /dev/urandom >"$T/v1"; head -c 70000 /dev/urandom >"$T/v2"
cp "$T/v1" "$MNT/cached"
cmp -s "$T/v1" "$MNT/cached" || fail "A reads its own file"
cmp -s "$T/v1" "$MNT2/cached" || fail "B reads A's file"
cp "$T/v2" "$MNT2/cached" || fail "B rewrites"
check "A sees B's new contents and size at its next open" cmp -s "$T/v2" "$MNT/cached"

log "B appends; A's next open sees the longer file"
echo appended >>"$MNT2/cached"
check "A sees the append" [ "$(tail -c 9 "$MNT/cached")" = appended ]

log "B renames and unlinks; A sees it within the cache timeout"
mv "$MNT2/d1/f" "$MNT2/d1/g"
rm "$MNT2/d2/f"
wait_until 5 test -e "$MNT/d1/g" || fail "rename by B not seen by A"
wait_until 5 sh -c "! test -e '$MNT/d2/f'" || fail "unlink by B not seen by A"
wait_until 5 sh -c "! test -e '$MNT/d1/f'" || fail "old name still visible to A"
log "ok"
