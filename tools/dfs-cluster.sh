#!/usr/bin/env bash
# dfs-cluster.sh - one-box cluster for trying dfs out: 1 metad + 3 chunkd on
# loopback, all state under $VAR, mounted at $MNT.  Used by `make run` / `make stop`.
#
#   dfs-cluster.sh start | stop | status
#
# Re-running start reuses the existing data.  stop unmounts and stops exactly
# the processes this script started (PIDs in $VAR/run/*.pid).
set -u

BIN=${DFS_BIN_DIR:-build/bin}
VAR=${VAR:-$PWD/var}
MNT=${MNT:-$PWD/mnt}
NCHUNKD=${NCHUNKD:-3}
METAD_PORT=${METAD_PORT:-9520}
RAFT_PORT=${RAFT_PORT:-9521}
HTTP_PORT=${HTTP_PORT:-9580}
CHUNKD_BASE=${CHUNKD_BASE:-9530}
RUN=$VAR/run

die() { echo "dfs-cluster: $*" >&2; exit 1; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_until() {
    local limit=$1; shift
    local end=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -ge $end ] && return 1
        sleep 0.1
    done
}

start_bg() { # name logfile cmd...
    local name=$1 logf=$2; shift 2
    if alive "$RUN/$name.pid"; then echo "  $name already running (pid $(cat "$RUN/$name.pid"))"; return 0; fi
    setsid nohup "$@" >>"$logf" 2>&1 </dev/null &
    echo $! >"$RUN/$name.pid"
    echo "  $name started (pid $!, log $logf)"
}

write_configs() {
    mkdir -p "$VAR/etc" "$VAR/log" "$RUN" "$VAR/metad"
    [ -f "$VAR/etc/metad.conf" ] || cat >"$VAR/etc/metad.conf" <<CONF
# one-box cluster metad (see packaging/metad.conf for every key)
listen = 127.0.0.1:$METAD_PORT
raft_listen = 127.0.0.1:$RAFT_PORT
http_listen = 127.0.0.1:$HTTP_PORT
data_dir = $VAR/metad
CONF
    local i
    for ((i = 1; i <= NCHUNKD; i++)); do
        mkdir -p "$VAR/chunkd$i"
        [ -f "$VAR/etc/chunkd$i.conf" ] || cat >"$VAR/etc/chunkd$i.conf" <<CONF
# one-box cluster chunkd $i (see packaging/chunkd.conf for every key)
listen = 127.0.0.1:$((CHUNKD_BASE + i))
data_dir = $VAR/chunkd$i
metad = 127.0.0.1:$METAD_PORT
label = box$i
CONF
    done
}

start() {
    for b in metad chunkd dfsmount dfsctl; do
        [ -x "$BIN/$b" ] || die "$BIN/$b is missing: run make first"
    done
    write_configs
    echo "starting dfs one-box cluster under $VAR"
    start_bg metad "$VAR/log/metad.log" "$BIN/metad" -f -c "$VAR/etc/metad.conf"
    wait_until 20 port_open "$METAD_PORT" || die "metad did not come up: see $VAR/log/metad.log"
    local i
    for ((i = 1; i <= NCHUNKD; i++)); do
        start_bg chunkd$i "$VAR/log/chunkd$i.log" "$BIN/chunkd" -f -c "$VAR/etc/chunkd$i.conf"
    done
    for ((i = 1; i <= NCHUNKD; i++)); do
        wait_until 20 port_open $((CHUNKD_BASE + i)) || die "chunkd$i did not come up: see $VAR/log/chunkd$i.log"
    done
    mkdir -p "$MNT"
    if mountpoint -q "$MNT"; then
        echo "  $MNT is already mounted"
    else
        start_bg dfsmount "$VAR/log/dfsmount.log" "$BIN/dfsmount" -f "127.0.0.1:$METAD_PORT" "$MNT" ${DFSMOUNT_OPTS:+-o "$DFSMOUNT_OPTS"}
        wait_until 20 mountpoint -q "$MNT" || die "mount failed: see $VAR/log/dfsmount.log"
    fi
    cat <<MSG

dfs is mounted at $MNT  (metad 127.0.0.1:$METAD_PORT, $NCHUNKD chunk servers, goal 2)

  cp -r /usr/include $MNT/          # use it like any directory
  $BIN/dfsctl -m 127.0.0.1:$METAD_PORT status
  $BIN/dfsctl -m 127.0.0.1:$METAD_PORT fileinfo $MNT/include/stdio.h
  http://127.0.0.1:$HTTP_PORT/      # dashboard
  make stop                         # unmount and stop everything (data stays in $VAR)
MSG
}

stop() {
    if mountpoint -q "$MNT" 2>/dev/null; then
        fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" 2>/dev/null || umount -l "$MNT"
        echo "unmounted $MNT"
    fi
    local f pid
    for f in "$RUN"/dfsmount.pid "$RUN"/chunkd*.pid "$RUN"/metad.pid; do
        [ -f "$f" ] || continue
        pid=$(cat "$f")
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid"
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
            echo "stopped $(basename "$f" .pid) (pid $pid)"
        fi
        rm -f "$f"
    done
}

status() {
    local f
    for f in "$RUN"/*.pid; do
        [ -f "$f" ] || continue
        if alive "$f"; then echo "$(basename "$f" .pid): running (pid $(cat "$f"))"; else echo "$(basename "$f" .pid): not running"; fi
    done
    mountpoint -q "$MNT" && echo "mounted at $MNT"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) status ;;
*) die "usage: $0 start|stop|status" ;;
esac
