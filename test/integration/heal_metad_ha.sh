#!/usr/bin/env bash
# heal_metad_ha.sh - three metad voters (raft): kill -9 the leader while a
# client writes; a new leader is elected, chunkd and the mount follow it, no
# acknowledged write is lost, and the namespace is the same on the new leader.
# Snapshots are taken every 64 entries, so the old leader, restarted after
# more than the trailing window of changes, catches up by a snapshot the
# leader sends; then the second leader dies too and the namespace is served,
# unchanged, by a majority that includes the node that installed it.
source "$(dirname "$0")/lib.sh"
declare -a MPORT MRAFT MPID
peers="" cpeers=""
for i in 1 2 3; do
    MPORT[$i]=$(dfs_free_port); MRAFT[$i]=$(dfs_free_port)
    peers+="${peers:+,}$i@127.0.0.1:${MRAFT[$i]}"; cpeers+="${cpeers:+,}$i@127.0.0.1:${MPORT[$i]}"
done
ALL="127.0.0.1:${MPORT[1]},127.0.0.1:${MPORT[2]},127.0.0.1:${MPORT[3]}"
start_m() {
    mkdir -p "$T/metad$1"
    "$BIN/metad" -f -o node_id=$1 -o listen=127.0.0.1:${MPORT[$1]} -o raft_listen=127.0.0.1:${MRAFT[$1]} \
        -o peers="$peers" -o client_peers="$cpeers" -o data_dir="$T/metad$1" -o http_listen= \
        -o server_timeout_ms=3000 -o repair_start_delay_ms=1000 -o snapshot_threshold=64 \
        -o raft_segment_size=64K >>"$T/metad$1.log" 2>&1 &
    MPID[$1]=$!
}
stop_all_m() { for i in 1 2 3; do [ -n "${MPID[$i]:-}" ] && { kill -TERM "${MPID[$i]}" 2>/dev/null; wait_pid_exit "${MPID[$i]}" 10; }; done; return 0; }
trap 'rc=$?; dfs_umount; stop_all_m; (exit $rc); dfs_cleanup' EXIT
for i in 1 2 3; do start_m $i; done
for i in 1 2 3; do wait_until 20 port_open "${MPORT[$i]}" || fail "metad $i did not start"; done
dfsctl() { "$BIN/dfsctl" -m "$ALL" "$@"; }
leader_port() { dfsctl status 2>/dev/null | sed -n 's/^metad leader: *127.0.0.1:\([0-9]*\).*/\1/p'; }
wait_until 30 sh -c "[ -n \"\$(\"$BIN/dfsctl\" -m '$ALL' status 2>/dev/null | sed -n 's/^metad leader: *127.0.0.1:\([0-9]*\).*/\1/p')\" ]" || fail "no leader elected"
for i in 1 2 3; do
    CHUNKD_PORT[$i]=$(dfs_free_port); CHUNKD_DIR[$i]=$T/chunk$i; mkdir -p "${CHUNKD_DIR[$i]}"
    "$BIN/chunkd" -f -o listen=127.0.0.1:${CHUNKD_PORT[$i]} -o data_dir="${CHUNKD_DIR[$i]}" \
        -o metad="$ALL" -o label=host$i >>"$T/chunkd$i.log" 2>&1 &
    CHUNKD_PID[$i]=$!
done
wait_until 30 servers_up_ge 3 || fail "chunkd did not register with the leader"
mkdir -p "$MNT"
"$BIN/dfsmount" -f "$ALL" "$MNT" -o timeout=60 >>"$T/dfsmount.log" 2>&1 &
MOUNT_PID=$!
wait_until 20 mountpoint -q "$MNT" || fail "mount did not appear"
mkdir "$MNT/ha"
(
    for i in $(seq 1 300); do
        head -c $((i * 700)) /dev/urandom >"$T/src.$i"
        dd if="$T/src.$i" of="$MNT/ha/f$i" conv=fsync status=none || { echo "fail $i"; exit 1; }
        echo "$i" >>"$T/acked"
    done
) >"$T/writer.out" 2>&1 &
wpid=$!
wait_until 60 sh -c "[ \$(wc -l <'$T/acked' 2>/dev/null || echo 0) -ge 50 ]" || fail "writer made no progress"
lp=$(leader_port)
li=0; for i in 1 2 3; do [ "${MPORT[$i]}" = "$lp" ] && li=$i; done
[ "$li" -gt 0 ] || fail "cannot tell which metad leads ($lp)"
log "kill -9 the leader, metad $li (after $(wc -l <"$T/acked") acked files)"
kill -KILL "${MPID[$li]}"; wait "${MPID[$li]}" 2>/dev/null; MPID[$li]=
wait_until 300 sh -c "! kill -0 $wpid" || fail "writer hung after the leader died"
wait $wpid; rc=$?
cat "$T/writer.out"
check "writer finished without an error" [ $rc = 0 ]
nl=$(leader_port)
log "new leader: $nl"
check "a new leader took over" [ -n "$nl" -a "$nl" != "$lp" ]
wait_until 30 servers_up_ge 3 || fail "chunkd did not follow the new leader"
echo 3 >/proc/sys/vm/drop_caches
bad=0
while read -r i; do cmp -s "$T/src.$i" "$MNT/ha/f$i" || { log "lost or wrong: f$i"; bad=$((bad + 1)); }; done <"$T/acked"
check "every acknowledged file intact on the new leader ($(wc -l <"$T/acked") files)" [ $bad = 0 ]
log "2000 more changes while the old leader is down (past raft's trailing window)"
mkdir "$MNT/more" || fail "mkdir more"
for i in $(seq 1 2000); do mkdir "$MNT/more/d$i" || fail "mkdir more/d$i"; done
log "restart the old leader: it rejoins as a follower"
start_m $li
wait_until 20 port_open "${MPORT[$li]}" || fail "old leader did not restart"
check "leader unchanged after the old one rejoined" [ "$(leader_port)" = "$nl" ]
wait_until 30 grep -q "installed a snapshot" "$T/metad$li.log" || fail "the old leader did not install a snapshot"
log "ok: $(grep -o 'installed a snapshot.*' "$T/metad$li.log" | head -n1)"
touch "$MNT/marker" || fail "touch marker"
(cd "$MNT" && find . | sort) >"$T/ns.before"
ni=0; for i in 1 2 3; do [ "${MPORT[$i]}" = "$nl" ] && ni=$i; done
[ "$ni" -gt 0 ] || fail "cannot tell which metad leads ($nl)"
log "kill -9 the second leader, metad $ni: the rejoined node and the third one carry on"
kill -KILL "${MPID[$ni]}"; wait "${MPID[$ni]}" 2>/dev/null; MPID[$ni]=
wait_until 30 sh -c "[ -n \"\$(\"$BIN/dfsctl\" -m '$ALL' status 2>/dev/null | sed -n 's/^metad leader: *127.0.0.1:\([0-9]*\).*/\1/p')\" ] && [ \"\$(\"$BIN/dfsctl\" -m '$ALL' status 2>/dev/null | sed -n 's/^metad leader: *127.0.0.1:\([0-9]*\).*/\1/p')\" != '$nl' ]" ||
    fail "no third leader"
wait_until 60 sh -c "cd '$MNT' && find . | sort >'$T/ns.after' && cmp -s '$T/ns.before' '$T/ns.after'" ||
    fail "namespace differs after the second failover: $(diff "$T/ns.before" "$T/ns.after" | head -5)"
log "ok: namespace identical after the second failover ($(wc -l <"$T/ns.after") names)"
echo 3 >/proc/sys/vm/drop_caches
bad=0
while read -r i; do cmp -s "$T/src.$i" "$MNT/ha/f$i" || { log "lost or wrong: f$i: $(stat -c %s "$T/src.$i") vs $(stat -c %s "$MNT/ha/f$i" 2>&1): $(cmp "$T/src.$i" "$MNT/ha/f$i" 2>&1 | head -n1)"; bad=$((bad + 1)); }; done <"$T/acked"
check "every acknowledged file intact after the second failover" [ $bad = 0 ]
