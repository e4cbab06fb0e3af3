#!/usr/bin/env bash
# disk_faults.sh - full and failing disks.  Every chunkd stores on small tmpfs
# dirs (chunkd 1 has two: 16 and 32 MiB; chunkd 2 and 3 one of 48 MiB each):
#  - writing more than fits ends in a clear ENOSPC for the writer (no hang, no
#    crash), every file written before reads back intact, and deleting files
#    gives the space back so writes work again;
#  - one dir of chunkd 1 going read-only (a failing disk) is marked failed, its
#    chunks are reported lost and re-replicated, and chunkd 1 keeps serving the
#    chunks in its other dir.
source "$(dirname "$0")/lib.sh"
SERVER_TIMEOUT_MS=2000
dfs_start_metad -o min_free=2M
declare -a TMPFS=()
mk_tmpfs() { mkdir -p "$1" && mount -t tmpfs -o size="$2" tmpfs "$1" && TMPFS+=("$1") || fail "cannot mount a tmpfs"; }
trap 'for d in "${TMPFS[@]}"; do umount -l "$d" 2>/dev/null; done; dfs_cleanup' EXIT
SMALL=$T/c1a BIG=$T/c1b
mk_tmpfs "$SMALL" 16m
mk_tmpfs "$BIG" 32m
mk_tmpfs "$T/chunk2" 48m
mk_tmpfs "$T/chunk3" 48m
"$BIN/chunkd" -f -o listen=127.0.0.1:$(dfs_free_port) -o data_dir="$SMALL" -o data_dir="$BIG" \
    -o metad=127.0.0.1:$METAD_PORT -o label=host1 -o idle_close_ms=300 >>"$T/chunkd1.log" 2>&1 &
CHUNKD_PID[1]=$!
dfs_start_chunkd 2
dfs_start_chunkd 3
wait_until 30 servers_up_ge 3 || fail "servers did not register"
dfs_mount -o timeout=30

log "write 2 MiB files until the cluster is full (about 72 MiB of data at goal 2)"
n=0 full=0
for i in $(seq 1 60); do
    head -c $((2 << 20)) /dev/urandom >"$T/f$i"
    if ! timeout 120 dd if="$T/f$i" of="$MNT/f$i" bs=1M conv=fsync status=none 2>"$T/dd.err"; then
        full=$i; break
    fi
    n=$i
done
cat "$T/dd.err"
check "the writer eventually got an error (cluster full)" [ "$full" -gt 0 ]
check "the error is ENOSPC, not a hang or EIO" grep -q "No space left" "$T/dd.err"
check "a fair part fit before that" [ "$n" -ge 20 ]
log "$n files fit; file $full failed with ENOSPC"
check "chunkd 1 is alive" kill -0 "${CHUNKD_PID[1]}"
echo 3 >/proc/sys/vm/drop_caches
for i in $(seq 1 "$n"); do cmp -s "$T/f$i" "$MNT/f$i" || fail "f$i (acknowledged before the disks filled) is wrong"; done
log "every acknowledged file intact"
rm -f "$MNT/f$full"
for i in $(seq 1 2 "$n"); do rm "$MNT/f$i"; done
wait_until 120 sh -c "[ \$(df --output=avail -k '$T/chunk2' | tail -1) -gt 16000 ]" || fail "space did not come back after deletes"
head -c $((2 << 20)) /dev/urandom >"$T/g"
# metad learns the freed space from the chunkds' next heartbeats (sent early
# after deletes): allow a few seconds, not an instant.
wait_until 15 dd if="$T/g" of="$MNT/g" bs=1M conv=fsync status=none || fail "write after freeing space"
wait_until 60 all_healthy || fail "not healthy after freeing space: $(dfs_chunk_health)"

log "one of chunkd 1's dirs goes read-only (a failing disk)"
nsmall=$(chunk_files "$SMALL")
log "it holds $nsmall chunk files"
# Linux refuses to remount a tmpfs read-only while a file on it is open for
# writing (a real disk's errors=remount-ro does not ask): chunkd 1 closes idle
# chunk files after 300 ms here, so retry until no write is in progress.
wait_until 30 mount -o remount,ro "$SMALL" || fail "remount ro"
for i in 1 2 3; do head -c $((1 << 20)) /dev/urandom >"$T/h$i"; cp "$T/h$i" "$MNT/h$i" || fail "write after the dir failed"; done
if [ "$nsmall" -gt 0 ]; then
    wait_until 60 grep -qiE "read-only|failed" "$T/chunkd1.log" || fail "chunkd did not notice the read-only dir"
    # metad hears of the lost copies (next heartbeat) before health counts.
    wait_until 30 grep -qE "chunkd [0-9]+: chunk [0-9]+ lost" "$T/metad.log" || fail "metad was not told the chunks are lost"
fi
wait_until 120 all_healthy || fail "lost chunks not re-replicated: $(dfs_chunk_health)"
echo 3 >/proc/sys/vm/drop_caches
for i in $(seq 2 2 "$n"); do cmp -s "$T/f$i" "$MNT/f$i" || fail "f$i wrong after the dir failed"; done
for i in 1 2 3; do cmp -s "$T/h$i" "$MNT/h$i" || fail "h$i wrong"; done
cmp -s "$T/g" "$MNT/g" || fail "g wrong"
check "chunkd 1 still up" kill -0 "${CHUNKD_PID[1]}"
