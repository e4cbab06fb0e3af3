#!/usr/bin/env bash
# fs_data.sh - real workloads on a real mount: a 1 GiB file in and out with the
# same sha256, untar of a source tree + diff -r, git init/commit/fsck, striping
# and replica placement seen through dfsctl fileinfo.
source "$(dirname "$0")/lib.sh"
dfs_cluster_up 3
dfs_mount
BIG_MB=${DFS_BIG_MB:-1024}

log "1 GiB file: write, drop caches, read back"
head -c $((BIG_MB << 20)) /dev/urandom >"$T/big.src" || fail "cannot make source file"
want=$(sha256sum <"$T/big.src" | cut -d' ' -f1)
s=$SECONDS
cp "$T/big.src" "$MNT/big" || fail "cp into the mount"
sync "$MNT/big" || fail "fsync"
log "cp in: $BIG_MB MiB in $((SECONDS - s)) s"
echo 3 >/proc/sys/vm/drop_caches
s=$SECONDS
got=$(sha256sum <"$MNT/big" | cut -d' ' -f1) || fail "read back"
log "read back in $((SECONDS - s)) s"
check "sha256 of the big file survives" [ "$want" = "$got" ]
cp "$MNT/big" "$T/big.out" || fail "cp out"
check "cp out matches" cmp -s "$T/big.src" "$T/big.out"
rm -f "$T/big.src" "$T/big.out"
check "size is exact" [ "$(stat -c %s "$MNT/big")" = $((BIG_MB << 20)) ]

log "striping: a 200 KiB file has >= 2 chunks on different servers, 2 copies each"
head -c 204800 /dev/urandom >"$MNT/small"
dfsctl fileinfo "$MNT/small" >"$T/fileinfo.txt" || fail "dfsctl fileinfo"
cat "$T/fileinfo.txt"
python3 - "$T/fileinfo.txt" <<'PY' || fail "fileinfo does not show >= 2 chunks with 2 copies on distinct servers"
import re, sys
chunks = {}
cur = None
for line in open(sys.argv[1]):
    m = re.match(r'\s*chunk\s+(\d+)\s+id\s+(\S+)', line)
    if m:
        cur = m.group(2); chunks[cur] = []
        continue
    m = re.match(r'\s*replica\s+server\s+(\d+)\s+\S+\s+(\w+)', line)
    if m and cur:
        chunks[cur].append((m.group(1), m.group(2)))
ok = len(chunks) >= 2
for cid, reps in chunks.items():
    good = [s for s, st in reps if st == 'ok']
    ok = ok and len(set(good)) >= 2
firsts = {reps[0][0] for reps in chunks.values() if reps}
ok = ok and len({s for reps in chunks.values() for s, _ in reps}) >= 2
print("chunks", len(chunks), "ok", ok)
sys.exit(0 if ok else 1)
PY

log "untar a source tree and diff -r"
mkdir -p "$T/src"
tar -C /usr/include -cf "$T/inc.tar" linux asm-generic 2>/dev/null || tar -C /usr/include -cf "$T/inc.tar" .
tar -C "$T/src" -xf "$T/inc.tar"
s=$SECONDS
tar -C "$MNT" -xf "$T/inc.tar" || fail "tar x into the mount"
log "untar: $(tar -tf "$T/inc.tar" | wc -l) entries in $((SECONDS - s)) s"
diff -r "$T/src" "$MNT" -x big -x small >/dev/null || { diff -r "$T/src" "$MNT" -x big -x small | head; fail "diff -r after untar"; }
log "ok: diff -r clean"

log "git init, commit and fsck inside the mount"
export HOME=$T GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@t GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@t
mkdir "$MNT/repo" && cd "$MNT/repo" || fail "mkdir repo"
git init -q . || fail "git init"
cp -r "$T/src/linux" . 2>/dev/null || cp -r "$T/src/." .
git add -A >/dev/null || fail "git add"
git commit -qm first || fail "git commit"
echo change >>README.test && git add README.test && git commit -qm second || fail "second commit"
git gc -q 2>/dev/null || fail "git gc"
git fsck --full --strict 2>&1 | tee "$T/fsck.txt"
check "git fsck is clean" [ "${PIPESTATUS[0]}" = 0 ]
check "git log has both commits" [ "$(git log --oneline | wc -l)" = 2 ]
cd /
