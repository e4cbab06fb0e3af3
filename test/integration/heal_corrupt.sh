#!/usr/bin/env bash
# heal_corrupt.sh - flip bytes in a replica file on disk: reading the file still
# returns correct data and the bad copy is replaced; the scrubber finds
# corruption in a file nobody reads.
source "$(dirname "$0")/lib.sh"
dfs_cluster_up 3
for i in 1 2 3; do :; done
dfs_mount
head -c $((3 << 20)) /dev/urandom >"$T/a"; cp "$T/a" "$MNT/a"
head -c $((3 << 20)) /dev/urandom >"$T/b"; cp "$T/b" "$MNT/b"
sync
# Flip bytes in the data area of every chunk file of one server (past the
# header), so whatever it holds of a and b is corrupt on that server.
flip_all() { # dir
    local f
    for f in $(find "$1" -name '*.chk'); do
        local sz; sz=$(stat -c %s "$f")
        [ "$sz" -gt 70000 ] || continue
        python3 - "$f" <<'PY'
import os, sys
p = sys.argv[1]; sz = os.path.getsize(p)
with open(p, "r+b") as f:
    for off in (sz - 1000, sz // 2):
        f.seek(off); b = f.read(1); f.seek(off); f.write(bytes([b[0] ^ 0xff]))
PY
    done
}
flip_all "${CHUNKD_DIR[1]}"
n1=$(chunk_files "${CHUNKD_DIR[1]}")
log "corrupted $n1 chunk files on chunkd 1"
echo 3 >/proc/sys/vm/drop_caches
check "a reads back correctly despite a corrupt copy" cmp -s "$T/a" "$MNT/a"
wait_until 120 all_healthy || fail "corrupt copies not replaced: $(dfs_chunk_health)"
log "read-detected corruption repaired"
log "now corrupt chunkd 2's copies and let the scrubber find them (nobody reads b)"
dfs_stop_chunkd 2
flip_all "${CHUNKD_DIR[2]}"
dfs_start_chunkd 2 -o scrub_rate=64M -o scrub_interval_s=1
wait_until 60 servers_up_ge 3 || fail "chunkd 2 did not rejoin"
wait_until 120 grep -qi corrupt "$T/chunkd2.log" || fail "scrubber did not report corruption"
wait_until 180 all_healthy || fail "scrub-found corruption not repaired: $(dfs_chunk_health)"
echo 3 >/proc/sys/vm/drop_caches
check "b intact" cmp -s "$T/b" "$MNT/b"
check "a intact" cmp -s "$T/a" "$MNT/a"
