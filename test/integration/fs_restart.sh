#!/usr/bin/env bash
# fs_restart.sh - stop everything (mount, chunkd, metad), start again: all data,
# metadata and xattrs are still there.  Also the fstab path: mount -T with a
# test fstab runs mount.fuse3 -> dfsmount SOURCE MOUNTPOINT -o OPTS.
source "$(dirname "$0")/lib.sh"
dfs_cluster_up 3
dfs_mount
mkdir -p "$MNT/a/b"
for i in $(seq 1 50); do head -c $((i * 3000)) /dev/urandom >"$MNT/a/b/f$i"; done
head -c $((20 << 20)) /dev/urandom >"$MNT/a/big"
ln -s b/f1 "$MNT/a/link"; ln "$MNT/a/b/f2" "$MNT/a/hard"
setfattr -n user.k -v value "$MNT/a/big"
chmod 640 "$MNT/a/b/f3"
(cd "$MNT" && find . -printf '%p %y %m %n %s %l\n' | LC_ALL=C sort >"$T/before.lst")
(cd "$MNT" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum >"$T/before.sum")
dfs_umount
for i in 1 2 3; do dfs_stop_chunkd $i; done
dfs_stop_metad
log "all stopped; starting again on the same data"
dfs_start_metad
for i in 1 2 3; do dfs_start_chunkd $i; done
wait_until 30 servers_up_ge 3 || fail "servers did not come back"

# fstab: mount(8) runs mount.fuse3 with the standard PATH, which runs
# `dfsmount SOURCE MOUNTPOINT -o OPTS`; `make install` puts dfsmount there.  For
# the test, link the freshly built one into /usr/local/sbin unless one is there,
# and remove the link afterwards.
if [ ! -e /usr/local/sbin/dfsmount ]; then
    ln -s "$BIN/dfsmount" /usr/local/sbin/dfsmount || fail "cannot link dfsmount into /usr/local/sbin"
    DFS_LINKED=/usr/local/sbin/dfsmount
    trap 'rm -f "$DFS_LINKED"; dfs_cleanup' EXIT
elif [ "$(readlink -f /usr/local/sbin/dfsmount)" != "$(readlink -f "$BIN/dfsmount")" ]; then
    log "note: using the installed /usr/local/sbin/dfsmount"
fi
cat >"$T/fstab" <<FSTAB
127.0.0.1:$METAD_PORT $MNT fuse.dfsmount defaults,_netdev,timeout=30 0 0
FSTAB
mount -T "$T/fstab" "$MNT" || fail "mount -T fstab"
MOUNT_PID=$(pgrep -n -f "dfsmount 127.0.0.1:$METAD_PORT $MNT" || true)
check "fstab mount is up" mountpoint -q "$MNT"
(cd "$MNT" && find . -printf '%p %y %m %n %s %l\n' | LC_ALL=C sort >"$T/after.lst")
(cd "$MNT" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum >"$T/after.sum")
check "namespace identical after restart" diff -u "$T/before.lst" "$T/after.lst"
check "contents identical after restart" diff -u "$T/before.sum" "$T/after.sum"
check "xattr survived" [ "$(getfattr -n user.k --only-values "$MNT/a/big")" = value ]
fusermount3 -u "$MNT" || umount -l "$MNT"
[ -n "$MOUNT_PID" ] && wait_until 10 sh -c "! kill -0 $MOUNT_PID"
MOUNT_PID=
