#!/usr/bin/env bash
# fs_posix.sh - the same sequence of POSIX operations on a local directory and on
# a dfs mount must give the same transcript (rename, links, symlinks, chmod,
# chown, utimes, xattrs, truncate, open flags, locks, mmap, readdir).
source "$(dirname "$0")/lib.sh"
dfs_cluster_up 3
dfs_mount -o default_permissions,allow_other
chmod 755 "$MNT"
mkdir -p "$T/local"
chmod 755 "$T" "$T/local"
bash "$SRC/test/lib/posix_ops.sh" "$T/local" >"$T/local.txt" 2>&1
mkdir "$MNT/posix" && chmod 755 "$MNT/posix"
bash "$SRC/test/lib/posix_ops.sh" "$MNT/posix" >"$T/dfs.txt" 2>&1
if ! diff -u "$T/local.txt" "$T/dfs.txt" >"$T/posix.diff"; then
    cat "$T/posix.diff"
    fail "POSIX transcript differs between a local directory and dfs"
fi
log "transcripts identical ($(wc -l <"$T/dfs.txt") lines)"
