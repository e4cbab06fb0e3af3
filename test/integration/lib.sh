# lib.sh - bash harness for integration tests: real metad/chunkd processes on
# loopback and a real FUSE mount, all under one temp dir, all stopped by PID.
#
#   source "$(dirname "$0")/lib.sh"
#   dfs_cluster_up 3            # metad + 3 chunkd, waits until all registered
#   dfs_mount                   # mounts at $MNT (foreground dfsmount, pid MOUNT_PID)
#   ... test ...; check COND "message"
#   exit 0                      # the EXIT trap cleans up
#
# Variables: T (temp dir), BIN (binaries), METAD_PORT, METAD_PID,
# CHUNKD_PORT[i], CHUNKD_PID[i], CHUNKD_DIR[i], MNT, MOUNT_PID.
# Every wait has a deadline; the runner kills the whole process group on its
# own deadline, and SIGTERM runs dfs_cleanup too.

set -u
set -o pipefail

BIN=${DFS_BIN_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build/bin}
SRC=${DFS_SRC_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
T=$(mktemp -d "${TMPDIR:-/tmp}/dfs-itest.XXXXXX")
MNT=$T/mnt
METAD_PORT=
METAD_PID=
MOUNT_PID=
declare -a CHUNKD_PORT=() CHUNKD_PID=() CHUNKD_DIR=()
DFS_KEEP=${DFS_KEEP:-0}
DFS_FAILED=0

log() { echo "[$(date +%H:%M:%S.%N | cut -c1-12)] $*"; }

dfs_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_until SECONDS CMD... : poll CMD every 0.1 s until it succeeds or time runs out.
wait_until() {
    local limit=$1; shift
    local end=$((SECONDS + limit))
    while ! "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $end ]; then return 1; fi
        sleep 0.1
    done
    return 0
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

fail() {
    DFS_FAILED=1
    log "FAIL: $*"
    for f in "$T"/*.log; do
        [ -f "$f" ] || continue
        echo "----- tail of $f"; tail -n 25 "$f"
    done
    exit 1
}

check() { # check "description" CMD...
    local what=$1; shift
    if "$@"; then log "ok: $what"; else fail "$what"; fi
}

dfsctl() { "$BIN/dfsctl" -m "127.0.0.1:$METAD_PORT" "$@"; }

dfs_start_metad() { # [extra -o key=value ...]
    METAD_PORT=${METAD_PORT:-$(dfs_free_port)}
    RAFT_PORT=${RAFT_PORT:-$(dfs_free_port)}
    mkdir -p "$T/metad"
    "$BIN/metad" -f -o listen=${METAD_HOST:-127.0.0.1}:$METAD_PORT -o raft_listen=127.0.0.1:$RAFT_PORT \
        -o data_dir="$T/metad" -o http_listen= -o server_timeout_ms=${SERVER_TIMEOUT_MS:-3000} -o repair_start_delay_ms=1000 \
        "$@" >>"$T/metad.log" 2>&1 &
    METAD_PID=$!
    wait_until 20 port_open "$METAD_PORT" || fail "metad did not open port $METAD_PORT"
    log "metad pid $METAD_PID port $METAD_PORT"
}

dfs_stop_metad() { # [signal]
    [ -n "$METAD_PID" ] || return 0
    kill -"${1:-TERM}" "$METAD_PID" 2>/dev/null
    wait_pid_exit "$METAD_PID" 20
    METAD_PID=
}

wait_pid_exit() { # pid seconds: wait for a child to exit, SIGKILL after the deadline
    local pid=$1 end=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null; do
        if [ $SECONDS -ge $end ]; then kill -CONT "$pid" 2>/dev/null; kill -KILL "$pid" 2>/dev/null; break; fi
        sleep 0.05
    done
    wait "$pid" 2>/dev/null || true
}

dfs_start_chunkd() { # index [extra -o key=value ...]
    local i=$1; shift
    CHUNKD_PORT[$i]=${CHUNKD_PORT[$i]:-$(dfs_free_port)}
    CHUNKD_DIR[$i]=${CHUNKD_DIR[$i]:-$T/chunk$i}
    mkdir -p "${CHUNKD_DIR[$i]}"
    "$BIN/chunkd" -f -o listen=127.0.0.1:${CHUNKD_PORT[$i]} -o data_dir="${CHUNKD_DIR[$i]}" \
        -o metad=127.0.0.1:$METAD_PORT -o label=host$i "$@" >>"$T/chunkd$i.log" 2>&1 &
    CHUNKD_PID[$i]=$!
    wait_until 20 port_open "${CHUNKD_PORT[$i]}" || fail "chunkd $i did not open its port"
    log "chunkd $i pid ${CHUNKD_PID[$i]} port ${CHUNKD_PORT[$i]}"
}

# A chunkd on its own "host": a network namespace joined to the root one by a
# veth pair (10.213.<i>.0/24, the project's own test addresses), so the link can
# be cut with `dfs_link i down` the way a switch port or cable dies.
# Needs METAD_HOST=0.0.0.0 so metad is reachable from the namespace.
dfs_start_chunkd_ns() { # index [extra -o key=value ...]
    local i=$1; shift
    local ns=dfs-itest-$$-$i va=dfsv$$a$i vb=dfsv$$b$i
    ns=${ns:0:30}; va=${va:0:15}; vb=${vb:0:15}
    ip netns add "$ns" || fail "ip netns add"
    DFS_NETNS+=("$ns")
    ip link add "$va" type veth peer name "$vb" || fail "veth"
    ip link set "$vb" netns "$ns"
    ip addr add 10.213.$i.1/24 dev "$va"; ip link set "$va" up
    ip netns exec "$ns" ip addr add 10.213.$i.2/24 dev "$vb"
    ip netns exec "$ns" ip link set "$vb" up
    ip netns exec "$ns" ip link set lo up
    CHUNKD_VETH[$i]=$va
    CHUNKD_PORT[$i]=${CHUNKD_PORT[$i]:-$(dfs_free_port)}
    CHUNKD_DIR[$i]=${CHUNKD_DIR[$i]:-$T/chunk$i}
    mkdir -p "${CHUNKD_DIR[$i]}"
    ip netns exec "$ns" "$BIN/chunkd" -f -o listen=10.213.$i.2:${CHUNKD_PORT[$i]} \
        -o data_dir="${CHUNKD_DIR[$i]}" -o metad=10.213.$i.1:$METAD_PORT -o label=nshost$i "$@" \
        >>"$T/chunkd$i.log" 2>&1 &
    CHUNKD_PID[$i]=$!
    wait_until 20 bash -c "exec 3<>/dev/tcp/10.213.$i.2/${CHUNKD_PORT[$i]}" 2>/dev/null ||
        fail "chunkd $i (netns) did not open its port"
    log "chunkd $i in netns $ns pid ${CHUNKD_PID[$i]} at 10.213.$i.2:${CHUNKD_PORT[$i]}"
}
declare -a CHUNKD_VETH=()
dfs_link() { ip link set "${CHUNKD_VETH[$1]}" "$2"; log "link of chunkd $1 $2"; }

dfs_stop_chunkd() { # index [signal]
    local i=$1 sig=${2:-TERM}
    [ -n "${CHUNKD_PID[$i]:-}" ] || return 0
    kill -"$sig" "${CHUNKD_PID[$i]}" 2>/dev/null
    wait_pid_exit "${CHUNKD_PID[$i]}" 20
    CHUNKD_PID[$i]=
}

# Number of chunk servers metad reports as up (from `dfsctl status`, whose
# summary line reads "servers: N up, M total").
dfs_servers_up() {
    dfsctl status 2>/dev/null | sed -n 's/^servers: *\([0-9]*\) up.*/\1/p' | head -n1
}
servers_up_ge() { local n; n=$(dfs_servers_up); [ -n "$n" ] && [ "$n" -ge "$1" ]; }
servers_up_eq() { local n; n=$(dfs_servers_up); [ -n "$n" ] && [ "$n" -eq "$1" ]; }

dfs_cluster_up() { # nchunkd
    dfs_start_metad
    local i
    for ((i = 1; i <= $1; i++)); do dfs_start_chunkd "$i"; done
    wait_until 30 servers_up_ge "$1" || fail "only $(dfs_servers_up) of $1 chunk servers registered"
}

dfs_mount() { # [extra dfsmount args]
    mkdir -p "$MNT"
    "$BIN/dfsmount" -f "127.0.0.1:$METAD_PORT" "$MNT" -o timeout=${DFS_IO_TIMEOUT:-30} "$@" \
        >>"$T/dfsmount.log" 2>&1 &
    MOUNT_PID=$!
    wait_until 20 mountpoint -q "$MNT" || fail "mount did not appear at $MNT"
    log "mounted $MNT (pid $MOUNT_PID)"
}

dfs_umount() {
    [ -n "$MOUNT_PID" ] || return 0
    if mountpoint -q "$MNT"; then
        fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" 2>/dev/null || umount -l "$MNT"
    fi
    wait_pid_exit "$MOUNT_PID" 20
    MOUNT_PID=
    # A dfsmount killed at the deadline leaves a dead mount behind: detach it.
    if grep -q " $MNT fuse" /proc/mounts 2>/dev/null; then
        fusermount3 -uz "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null
    fi
}

dfs_cleanup() {
    local rc=$?
    trap - EXIT TERM INT
    [ $rc -ne 0 ] && DFS_FAILED=1
    dfs_umount 2>/dev/null
    local i
    for i in "${!CHUNKD_PID[@]}"; do
        [ -n "${CHUNKD_PID[$i]}" ] && { kill -CONT "${CHUNKD_PID[$i]}" 2>/dev/null; kill -TERM "${CHUNKD_PID[$i]}" 2>/dev/null; }
    done
    [ -n "$METAD_PID" ] && kill -TERM "$METAD_PID" 2>/dev/null
    for i in "${!CHUNKD_PID[@]}"; do
        [ -n "${CHUNKD_PID[$i]}" ] && wait_pid_exit "${CHUNKD_PID[$i]}" 10
    done
    [ -n "$METAD_PID" ] && wait_pid_exit "$METAD_PID" 10
    for i in "${DFS_NETNS[@]:-}"; do [ -n "$i" ] && ip netns del "$i" 2>/dev/null; done
    # Sanitizer builds: any report in a daemon's log fails the test.
    if grep -lE "ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:" "$T"/*.log >/dev/null 2>&1; then
        for f in $(grep -lE "ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:" "$T"/*.log); do
            echo "----- sanitizer report in $f"
            grep -E -A30 "ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:" "$f" | head -60
        done
        rc=1; DFS_FAILED=1
    fi
    if [ "$DFS_FAILED" = 0 ] && [ "$DFS_KEEP" = 0 ]; then rm -rf "$T"; else echo "kept $T"; fi
    # A test's own EXIT trap may run commands before calling us and so hide
    # the exit status of fail(): DFS_FAILED still tells.
    [ "$DFS_FAILED" = 1 ] && [ $rc = 0 ] && rc=1
    exit $rc
}
declare -a DFS_NETNS=()
trap dfs_cleanup EXIT
trap 'exit 143' TERM INT

# "chunks: T total, H healthy, U under-goal, O over-goal, M missing" -> fields
dfs_chunk_health() { # prints "T H U O M"
    dfsctl status 2>/dev/null | sed -n 's/^chunks: *\([0-9]*\) total, *\([0-9]*\) healthy, *\([0-9]*\) under-goal, *\([0-9]*\) over-goal, *\([0-9]*\) missing.*/\1 \2 \3 \4 \5/p' | head -n1
}
# True when every chunk is at its goal (no under-goal, no missing).
all_healthy() { local h; h=($(dfs_chunk_health)); [ ${#h[@]} = 5 ] && [ "${h[2]}" = 0 ] && [ "${h[4]}" = 0 ] && [ "${h[3]}" = 0 ]; }
# Count chunk files under a chunkd data dir.
chunk_files() { find "$1" -name '*.chk' 2>/dev/null | wc -l; }
