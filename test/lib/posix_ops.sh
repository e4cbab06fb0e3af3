#!/usr/bin/env bash
# posix_ops.sh DIR - runs a fixed sequence of POSIX operations inside DIR and
# prints what a user would observe (results, errors, stat fields, xattrs) in a
# form that does not depend on the filesystem.  fs_posix.sh runs it on a local
# directory and on a dfs mount and diffs the two transcripts.
set -u
cd "$1" || exit 2
umask 022
say() { echo "## $*"; }
try() { # run a command, print its exit status and stderr without the path prefix
    local out
    out=$("$@" 2>&1); local rc=$?
    local cmd="$*"; echo "\$ ${cmd//$PWD/.} -> rc=$rc ${out//$PWD/.}" | sed -e 's/‘/'"'"'/g; s/’/'"'"'/g'
}
st() { # directory sizes are filesystem-specific: leave them out
    for f in "$@"; do
        if [ -d "$f" ] && [ ! -L "$f" ]; then
            stat -c '%n type=%F mode=%a nlink=%h uid=%u gid=%g' "$f" 2>&1
        else
            stat -c '%n type=%F mode=%a nlink=%h uid=%u gid=%g size=%s' "$f" 2>&1
        fi | sed "s|$PWD|.|"
    done
}

say files and directories
echo hello >a
try mkdir d
try mkdir d
try mkdir -p d/e/f
echo one >d/e/f/g
st a d d/e d/e/f d/e/f/g
try rmdir d
try rmdir d/e/f/nonexistent
try cat d/e/f/g

say hard links
try ln a a2
st a a2
try ln d dlink
echo more >>a2
try cat a
try rm a
st a2
try cat a2

say symlinks
try ln -s a2 s1
try ln -s nowhere dangling
try readlink s1
try readlink dangling
try cat s1
try cat dangling
st s1 dangling
try ln -s s1 s2
try cat s2

say rename
echo x >r1; echo y >r2
try mv r1 r2
try cat r2
st r1 r2
mkdir -p rd1/sub rd2
try mv rd1 rd1/sub/inside
try mv rd2 rd1          # rd1 is not empty: rd2 goes inside? no: mv moves rd2 into rd1
ls rd1 | sort
mkdir -p full/x empty
try python3 -c 'import os; os.rename("empty", "full")'
try python3 -c 'import os; os.rename("full", "r2")'
try python3 -c 'import os; os.rename("r2", "full")'
mkdir e1 e2
try python3 -c 'import os; os.rename("e1", "e2")'
st e1 e2
st full
echo A >xa; echo B >xb
try python3 -c '
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
r = libc.renameat2(-100, b"xa", -100, b"xb", 2)   # RENAME_EXCHANGE
print("exchange", r, os.strerror(ctypes.get_errno()) if r else "")
r = libc.renameat2(-100, b"xa", -100, b"xb", 1)   # RENAME_NOREPLACE
print("noreplace", r, os.strerror(ctypes.get_errno()) if r else "")'
try cat xa xb

say directory link counts
mkdir -p lc/a lc/b lc/c
st lc
rmdir lc/b
st lc
mv lc/c lc/a/
st lc lc/a

say permissions and ownership
echo secret >p
chmod 600 p; st p
chmod 4755 p; st p
chmod 1777 d; st d
try chown 1234:5678 p
st p
try chown 0:0 p
mkdir -p sticky; chmod 1777 sticky; echo z >sticky/f; chown 4321 sticky/f
try su nobody -s /bin/sh -c "rm -f '$PWD/sticky/f'"
st sticky/f
try su nobody -s /bin/sh -c "cat '$PWD/p'"
chmod 600 p
try su nobody -s /bin/sh -c "cat '$PWD/p'"
try su nobody -s /bin/sh -c "touch '$PWD/newfile'"

say timestamps
touch -d '2001-02-03 04:05:06.123456789' t1
stat -c '%n mtime=%y atime=%x' t1
touch -m -d '2011-02-03 04:05:06' t1
stat -c '%n mtime=%y' t1
echo data >t2
python3 -c 'import os; os.utime("t2", ns=(1000000123, 2000000456)); s=os.stat("t2"); print(s.st_atime_ns, s.st_mtime_ns)'

say xattrs
try setfattr -n user.color -v blue a2
try setfattr -n user.size -v 12345 a2
try getfattr -n user.color --only-values a2
getfattr -d a2 2>/dev/null | sed 1d | sort
try setfattr -x user.color a2
try getfattr -n user.color a2
try setfattr -x user.none a2
try python3 -c '
import os
os.setxattr("a2", "user.k", b"v1", os.XATTR_CREATE)
try: os.setxattr("a2", "user.k", b"v2", os.XATTR_CREATE)
except OSError as e: print("create-again", e.strerror)
try: os.setxattr("a2", "user.nokey", b"v", os.XATTR_REPLACE)
except OSError as e: print("replace-missing", e.strerror)
print(sorted(os.listxattr("a2")))'

say truncate and holes
printf '0123456789' >tr
truncate -s 4 tr; try cat tr
truncate -s 8 tr; od -c tr | head -3
dd if=/dev/zero of=hole bs=1 count=1 seek=1000000 2>/dev/null
st hole
python3 -c 'd=open("hole","rb").read(); print(len(d), d.count(0))'

say open flags
try python3 -c '
import os
fd = os.open("ex", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644); os.write(fd, b"abc"); os.close(fd)
try: os.open("ex", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
except OSError as e: print("excl", e.strerror)
fd = os.open("ex", os.O_WRONLY | os.O_APPEND); os.write(fd, b"def"); os.close(fd)
fd = os.open("ex", os.O_RDWR); os.lseek(fd, 1, 0); os.write(fd, b"X"); os.close(fd)
print(open("ex").read())
fd = os.open("ex", os.O_WRONLY | os.O_TRUNC); os.close(fd)
print(os.stat("ex").st_size)'

say special files
try mkfifo fifo
try mknod blk b 7 99
st fifo blk
stat -c '%n %t:%T' blk

say locks
try python3 -c '
import fcntl, os
f = open("a2", "r+")
fcntl.flock(f, fcntl.LOCK_EX)
g = open("a2", "r+")
try: fcntl.flock(g, fcntl.LOCK_EX | fcntl.LOCK_NB); print("second flock: got it")
except OSError as e: print("second flock:", e.strerror)
fcntl.lockf(f, fcntl.LOCK_EX, 10, 0)
pid = os.fork()
if pid == 0:
    try: fcntl.lockf(open("a2", "r+"), fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0); os._exit(1)
    except OSError: os._exit(0)
print("posix lock held against child:", os.waitpid(pid, 0)[1] == 0)'

say mmap
try python3 -c '
import mmap, os
with open("mm", "wb") as f: f.write(b"a" * 10000)
with open("mm", "r+b") as f:
    m = mmap.mmap(f.fileno(), 0)
    m[100:105] = b"HELLO"; m.flush(); m.close()
print(open("mm", "rb").read()[98:108])'

say readdir
mkdir many
for i in $(seq 1 1500); do : >"many/f$i"; done
ls many | wc -l
ls -a many | head -3
rm -f many/f1*
ls many | wc -l

say unlinked but open
try python3 -c '
import os
f = open("tmpopen", "w+"); f.write("still here"); f.flush()
os.unlink("tmpopen")
f.seek(0); print(f.read(), os.path.exists("tmpopen"))'

say final listing
find . -path ./many -prune -o -print | LC_ALL=C sort
