#!/usr/bin/env bash
# mount_basic.sh - dfsmount end to end: files, dirs, striped data, read-ahead,
# truncate/append/O_EXCL, mmap, fsync, statfs, xattrs, readdir paging, dfsctl,
# the mount helper (daemonizing, SOURCE parsing) and EIO instead of a hang.
source "$(dirname "$0")/lib.sh"
dfs_cluster_up 3
dfs_mount

log "small files and directories"
echo hello >"$MNT/a" || fail "create"
check "read back" [ "$(cat "$MNT/a")" = hello ]
mkdir -p "$MNT/d1/d2/d3" || fail "mkdir -p"
check "dir exists" [ -d "$MNT/d1/d2/d3" ]
mv "$MNT/a" "$MNT/d1/b" || fail "rename"
check "renamed" [ "$(cat "$MNT/d1/b")" = hello ] && [ ! -e "$MNT/a" ]
ln -s b "$MNT/d1/s" && check "symlink" [ "$(readlink "$MNT/d1/s")" = b ]
ln "$MNT/d1/b" "$MNT/d1/h" && check "hard link count" [ "$(stat -c %h "$MNT/d1/b")" = 2 ]
rm "$MNT/d1/h" "$MNT/d1/s" || fail "unlink"
check "rmdir non-empty fails" bash -c "! rmdir '$MNT/d1' 2>/dev/null"

log "data: striped multi-MiB file, sequential and random reads"
head -c $((40 << 20)) /dev/urandom >"$T/src"
cp "$T/src" "$MNT/big" || fail "cp in"
check "size" [ "$(stat -c %s "$MNT/big")" = $((40 << 20)) ]
echo 3 >/proc/sys/vm/drop_caches
check "content after cold read" cmp -s "$T/src" "$MNT/big"
python3 - "$T/src" "$MNT/big" <<'PY' || fail "random reads differ"
import os, random, sys
a = open(sys.argv[1], 'rb').read()
fd = os.open(sys.argv[2], os.O_RDONLY)
random.seed(7)
for _ in range(300):
    off = random.randrange(0, len(a)); n = random.randrange(1, 300000)
    if os.pread(fd, n, off) != a[off:off + n]:
        sys.exit("mismatch at %d+%d" % (off, n))
PY
log "ok: random reads"

log "overwrite in the middle, append, truncate, holes"
python3 - "$MNT/f" <<'PY' || fail "write patterns"
import os, sys
p = sys.argv[1]
ref = bytearray()
fd = os.open(p, os.O_CREAT | os.O_RDWR | os.O_EXCL, 0o644)
def w(off, data):
    global ref
    os.pwrite(fd, data, off)
    if len(ref) < off + len(data): ref.extend(b'\0' * (off + len(data) - len(ref)))
    ref[off:off + len(data)] = data
w(0, b'x' * 300000)
w(70000, b'y' * 100)
w(5 << 20, b'tail')            # a hole in between
os.fsync(fd)
w(1000, b'z' * 200000)
assert os.pread(fd, len(ref) + 10, 0) == bytes(ref), "read-your-writes"
os.ftruncate(fd, 123457); del ref[123457:]
assert os.fstat(fd).st_size == 123457
os.ftruncate(fd, 200000); ref.extend(b'\0' * (200000 - len(ref)))
os.close(fd)
assert open(p, 'rb').read() == bytes(ref), "after close"
try:
    os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY); sys.exit("O_EXCL did not fail")
except FileExistsError: pass
with open(p, 'ab') as f: f.write(b'APPEND')
ref.extend(b'APPEND')
assert open(p, 'rb').read() == bytes(ref), "append"
with open(p, 'wb') as f: f.write(b'new')        # O_TRUNC
assert open(p, 'rb').read() == b'new', "O_TRUNC"
PY
log "ok: write patterns"

log "mmap shared writable"
python3 - "$MNT/m" <<'PY' || fail "mmap"
import mmap, os, sys
p = sys.argv[1]
with open(p, 'wb') as f: f.write(b'\0' * 200000)
with open(p, 'r+b') as f:
    m = mmap.mmap(f.fileno(), 200000)
    m[100:105] = b'hello'; m[150000:150003] = b'abc'
    m.flush(); m.close()
d = open(p, 'rb').read()
assert d[100:105] == b'hello' and d[150000:150003] == b'abc'
PY
echo 3 >/proc/sys/vm/drop_caches
check "mmap data persisted" [ "$(dd if="$MNT/m" bs=1 skip=100 count=5 2>/dev/null)" = hello ]

log "readdir with more entries than one metad page"
mkdir "$MNT/many"
for i in $(seq 1 2500); do : >"$MNT/many/f$i"; done
check "ls sees 2500 entries" [ "$(ls "$MNT/many" | wc -l)" = 2500 ]
check "ls -la sees . and .." [ "$(ls -a "$MNT/many" | wc -l)" = 2502 ]
rm -rf "$MNT/many" || fail "rm -rf"
check "gone" [ ! -e "$MNT/many" ]

log "xattrs, statfs, dfsctl"
setfattr -n user.k -v v1 "$MNT/d1/b" || fail "setfattr"
check "getfattr" [ "$(getfattr -n user.k --only-values "$MNT/d1/b")" = v1 ]
getfattr -n dfs.goal "$MNT/big" >/dev/null 2>&1 && log "ok: dfs.goal xattr" || log "note: dfs.goal xattr not served"
df -P "$MNT" | tail -1 | awk '{exit !($2 > 0)}' || fail "df shows no capacity"
dfsctl status >/dev/null || fail "dfsctl status"
dfsctl fileinfo "$MNT/big" | grep -q '^chunk ' || fail "dfsctl fileinfo"
"$BIN/dfsctl" fileinfo -n /big -m "127.0.0.1:$METAD_PORT" | grep -q '^chunk ' || fail "dfsctl fileinfo -n"
dfsctl setgoal 3 "$MNT/big" >/dev/null || fail "dfsctl setgoal"
check "fsync'd file has a sane size" [ "$(stat -c %s "$MNT/f")" = 3 ]

log "mount helper: daemonizes, SOURCE from the command line, mount exists on return"
M2=$T/mnt2
mkdir -p "$M2"
"$BIN/dfsmount" "127.0.0.1:$METAD_PORT" "$M2" -o defaults,_netdev,timeout=10 || fail "dfsmount (daemon)"
check "mounted on return" mountpoint -q "$M2"
check "same namespace" [ "$(cat "$M2/d1/b")" = hello ]
check "fstype" grep -q " $M2 fuse.dfsmount " /proc/mounts
fusermount3 -u "$M2" || umount "$M2"
check "unmounted" bash -c "! mountpoint -q '$M2'"
check "bad metad address is refused" bash -c "! '$BIN/dfsmount' 127.0.0.1:1 '$M2' -f -o timeout=2 2>/dev/null"

log "no replica reachable: EIO within the timeout, not a hang"
dfs_umount
dfs_mount -o timeout=5
cat "$MNT/big" >/dev/null
for i in 1 2 3; do dfs_stop_chunkd $i KILL; done
echo 3 >/proc/sys/vm/drop_caches
s=$SECONDS
if timeout 60 cat "$MNT/big" >/dev/null 2>&1; then fail "read succeeded with every chunkd dead"; fi
check "failed within bounded time ($((SECONDS - s)) s)" [ $((SECONDS - s)) -lt 40 ]
log "PASS"
