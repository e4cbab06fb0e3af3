#!/usr/bin/env bash
# heal_net.sh - cut a chunkd off the network (its own namespace, link down)
# instead of killing it: same outcome as a kill (reads and writes go on, chunks
# re-replicated); when the link returns it heals without serving stale data.
source "$(dirname "$0")/lib.sh"
SERVER_TIMEOUT_MS=2000
METAD_HOST=0.0.0.0
dfs_start_metad
# Chain writes are forwarded chunkd to chunkd, so the namespaced chunkd must
# reach the others: 127.0.0.1 inside its namespace is its own loopback.  Give
# chunkd 1 and 2 an address on the root namespace's lo that the namespace
# routes to through its veth (and the root namespace reaches locally, link up
# or down).  Removed again on exit.
LOADDR=10.213.254.$(($$ % 250 + 1))
ip addr add "$LOADDR/32" dev lo || fail "ip addr add $LOADDR"
# (the veth too: it can outlive the deleted namespace and then shadows
# 10.213.3.0/24 for the next run)
trap 'rc=$?; ip addr del "$LOADDR/32" dev lo 2>/dev/null
      [ -n "${CHUNKD_VETH[3]:-}" ] && ip link del "${CHUNKD_VETH[3]}" 2>/dev/null
      (exit $rc); dfs_cleanup' EXIT
dfs_start_chunkd 1 -o listen=0.0.0.0:${CHUNKD_PORT[1]:=$(dfs_free_port)} -o advertise=$LOADDR
dfs_start_chunkd 2 -o listen=0.0.0.0:${CHUNKD_PORT[2]:=$(dfs_free_port)} -o advertise=$LOADDR
dfs_start_chunkd_ns 3
ip netns exec "${DFS_NETNS[0]}" ip route add "$LOADDR/32" via 10.213.3.1 || fail "route to $LOADDR in the namespace"
wait_until 30 servers_up_ge 3 || fail "servers did not register"
# `timeout` bounds every call; one chunkd call attempt gets min(timeout, 30 s).
dfs_mount -o timeout=5
for i in 1 2 3 4 5 6; do head -c $((8 << 20)) /dev/urandom >"$T/f$i"; cp "$T/f$i" "$MNT/f$i"; done
sync
n3=$(chunk_files "${CHUNKD_DIR[3]}")
log "chunkd 3 holds $n3 chunk files"
check "the namespaced server holds some chunks" [ "$n3" -gt 0 ]
dfs_link 3 down
echo 3 >/proc/sys/vm/drop_caches
for i in 1 2 3 4 5 6; do timeout 90 cmp -s "$T/f$i" "$MNT/f$i" || fail "read f$i with chunkd 3 cut off"; done
for i in 1 2; do head -c $((8 << 20)) /dev/urandom >"$T/f$i"; timeout 90 dd if="$T/f$i" of="$MNT/f$i" conv=fsync status=none || fail "write f$i with chunkd 3 cut off"; done
wait_until 30 servers_up_eq 2 || fail "metad did not mark the cut-off server down"
wait_until 120 all_healthy || fail "no re-replication while cut off: $(dfs_chunk_health)"
log "re-replicated while cut off; restoring the link"
dfs_link 3 up
wait_until 60 servers_up_ge 3 || fail "server did not come back after the link returned"
for round in 1 2; do
    echo 3 >/proc/sys/vm/drop_caches
    for i in 1 2 3 4 5 6; do cmp -s "$T/f$i" "$MNT/f$i" || fail "f$i wrong after heal (round $round)"; done
done
wait_until 120 all_healthy || fail "not healthy after the link returned: $(dfs_chunk_health)"
