#!/usr/bin/env bash
# heal_corrupt.sh - flip bytes in a replica file on disk: reading the file still
# returns correct data and the bad copy is replaced; the scrubber finds
# corruption in a file nobody reads.
#
# Exactly one copy of each chunk is corrupted (the other stays good, so the
# data is always recoverable).  Chunk files are <data_dir>/chunks/XX/<id>.chk
# (XX = last two hex digits of the id is NOT assumed: we search), data at 16 KiB.
source "$(dirname "$0")/lib.sh"
dfs_cluster_up 3
dfs_mount
DATA_OFF=16384

# chunkd index (1..4) listening on a port, from "HOST:PORT"
idx_of_addr() {
    local port=${1##*:} i
    for i in "${!CHUNKD_PORT[@]}"; do [ "${CHUNKD_PORT[$i]}" = "$port" ] && { echo "$i"; return 0; }; done
    return 1
}
# "index hexid length server host:port state" for every replica of a file
replicas_of() { # mount path
    dfsctl fileinfo "$1" | awk '
        $1 == "chunk" && $3 == "id" { idx = $2; id = $4; len = $8 }
        $1 == "replica" && $2 == "server" { print idx, id, len, $3, $4, $5 }'
}
chunk_path() { # dir hexid
    find "$1/chunks" -name "$2.chk" 2>/dev/null | head -n1
}
# flip the byte at absolute offset; prints the original byte value
flip() { # file offset
    python3 - "$1" "$2" <<'PY'
import sys
p, off = sys.argv[1], int(sys.argv[2])
with open(p, "r+b") as f:
    f.seek(off); b = f.read(1); f.seek(off); f.write(bytes([b[0] ^ 0xff]))
print(b[0])
PY
}
byte_at() { # file offset
    python3 -c '
import sys
try:
    f = open(sys.argv[1], "rb"); f.seek(int(sys.argv[2])); b = f.read(1)
    print(b[0] if b else -1)
except FileNotFoundError:
    print(-1)' "$1" "$2"
}

# ---------------------------------------------------------------- part 1
head -c $((3 << 20)) /dev/urandom >"$T/a"; cp "$T/a" "$MNT/a"
sync
wait_until 30 all_healthy || fail "not healthy after writing a: $(dfs_chunk_health)"
replicas_of "$MNT/a" >"$T/a.reps"
cat "$T/a.reps"
# The first listed replica of each chunk is the one a fresh client reads
# first; corrupt exactly that copy (middle and near the end).
: >"$T/a.flipped"
for id in $(awk '{print $2}' "$T/a.reps" | sort -u); do
    read -r _ _ len sid addr state < <(awk -v id="$id" '$2 == id' "$T/a.reps" | head -n1)
    i=$(idx_of_addr "$addr") || fail "no chunkd at $addr"
    f=$(chunk_path "${CHUNKD_DIR[$i]}" "$id")
    [ -n "$f" ] || fail "chunk file of $id not found on chunkd $i"
    len=$(($(stat -c %s "$f") - DATA_OFF)) # metad learns lengths from heartbeats
    [ "$len" -gt 70000 ] || fail "chunk file $f is too small ($len data bytes)"
    for off in $((DATA_OFF + len / 2)) $((DATA_OFF + len - 1000)); do
        orig=$(flip "$f" "$off")
        echo "$id $sid $i $f $off $orig" >>"$T/a.flipped"
    done
done
log "corrupted one copy of each of the $(awk '{print $1}' "$T/a.flipped" | sort -u | wc -l) chunks of a"
cat "$T/a.flipped"
# A fresh client (no cached locations) reads the corrupt copies first.
dfs_umount
dfs_mount
echo 3 >/proc/sys/vm/drop_caches
s=$SECONDS
check "a reads back correctly despite a corrupt copy of every chunk" cmp -s "$T/a" "$MNT/a"
for id in $(awk '{print $1}' "$T/a.flipped" | sort -u); do
    check "metad was told chunk $id has a corrupt copy" \
        grep -Eq "chunk $((16#$id)): client reports a bad copy|chunk $((16#$id)) corrupt" "$T/metad.log"
done
wait_until 60 all_healthy || fail "corrupt copies not replaced: $(dfs_chunk_health)"
log "read-detected corruption repaired in $((SECONDS - s)) s"
check "repair of read-detected corruption started promptly (< 20 s)" [ $((SECONDS - s)) -lt 20 ]
# every chunk of a: 2 ok copies, and no corrupted byte is left on disk
replicas_of "$MNT/a" >"$T/a.reps2"
cat "$T/a.reps2"
check "every chunk of a has 2 ok copies" \
    awk '$6 == "ok" {n[$2]++} END {for (k in n) if (n[k] != 2) exit 1; exit length(n) ? 0 : 1}' "$T/a.reps2"
while read -r id sid i f off orig; do
    now=$(byte_at "$f" "$off")
    [ "$now" = -1 ] || [ "$now" = "$orig" ] || fail "corrupt copy of chunk $id on chunkd $i still on disk ($f @ $off)"
done <"$T/a.flipped"
log "ok: every corrupt copy was deleted or rewritten"

# ---------------------------------------------------------------- part 2
log "scrubber: chunkd 3 restarts with scrubbing; b gets 3 copies (one on every server)"
dfs_stop_chunkd 3
dfs_start_chunkd 3 -o scrub_interval_s=1 -o scrub_rate=64M
wait_until 30 servers_up_ge 3 || fail "chunkd 3 did not rejoin"
wait_until 60 all_healthy || fail "not healthy after chunkd 3 restarted: $(dfs_chunk_health)"
mkdir "$MNT/g3"
dfsctl setgoal 3 "$MNT/g3" >/dev/null || fail "setgoal 3"
head -c $((3 << 20)) /dev/urandom >"$T/b"; cp "$T/b" "$MNT/g3/b"
sync
wait_until 30 all_healthy || fail "not healthy after writing b: $(dfs_chunk_health)"
replicas_of "$MNT/g3/b" >"$T/b.reps"
cat "$T/b.reps"
# b's chunk 0, copy on chunkd 3 (running, scrubbing): flip a middle byte
read -r _ bid blen _ < <(awk '$1 == 0' "$T/b.reps" | head -n1)
[ -n "${bid:-}" ] || fail "b has no chunk 0"
bf=$(chunk_path "${CHUNKD_DIR[3]}" "$bid")
[ -n "$bf" ] || fail "b's chunk $bid has no copy on chunkd 3"
blen=$(($(stat -c %s "$bf") - DATA_OFF))
[ "$blen" -gt 200000 ] || fail "chunk file $bf is too small ($blen data bytes)"
boff=$((DATA_OFF + blen / 2 + 12345))
borig=$(flip "$bf" "$boff")
log "flipped byte $boff of $bf (chunk $bid) on the running chunkd 3; nobody reads b"
s=$SECONDS
wait_until 60 grep -q "scrub: chunk $bid .*corrupt" "$T/chunkd3.log" || fail "scrubber did not report chunk $bid"
log "scrubber found it after $((SECONDS - s)) s: $(grep "scrub: chunk $bid" "$T/chunkd3.log" | head -n1)"
wait_until 30 grep -q "chunk $((16#$bid)) corrupt" "$T/metad.log" || fail "metad was not told about corrupt chunk $bid"
wait_until 60 all_healthy || fail "scrub-found corruption not repaired: $(dfs_chunk_health)"
log "scrub-found corruption repaired $((SECONDS - s)) s after the flip"
replicas_of "$MNT/g3/b" >"$T/b.reps2"
cat "$T/b.reps2"
check "chunk $bid has 3 ok copies again" [ "$(awk -v id="$bid" '$2 == id && $6 == "ok"' "$T/b.reps2" | wc -l)" = 3 ]
now=$(byte_at "$bf" "$boff")
check "the corrupt copy on chunkd 3 was deleted or rewritten" [ "$now" = -1 -o "$now" = "$borig" ]
echo 3 >/proc/sys/vm/drop_caches
check "b intact" cmp -s "$T/b" "$MNT/g3/b"
check "a intact" cmp -s "$T/a" "$MNT/a"
