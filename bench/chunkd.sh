#!/bin/bash
# chunkd.sh - one chunkd's sequential write/read MB/s and a 3-server chain write,
#             next to dd and fio on the raw data directory, in one run.
#   bench/chunkd.sh [MiB]        (default 1024; data under build/bench-chunkd.*)
# 1 MiB requests, 16 in flight, SYNC (fdatasync) of every chunk at the end of a
# write; dd uses conv=fdatasync.  Reads are measured cold when the page cache
# can be dropped (root, not in a restricted container), else warm for both.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${B:-build}
MIB=${1:-1024}
make -j2 "$B/bin/chunkd" "$B/bench/bench_chunkd" >/dev/null
W=$(mktemp -d "$PWD/$B/bench-chunkd.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$W"
}
trap cleanup EXIT

drop_caches() {
    sync
    if echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then echo cold; else echo warm; fi
}
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

echo "== chunkd: $MIB MiB, 1 MiB requests, depth 16, $(nproc) cores, fs $(df -T "$W" | awk 'NR==2{print $2" on "$1}')"

# ----- raw disk -----
mkdir -p "$W/raw"
dd_mbs() { sed -n 's/.*copied, \([0-9.]*\) s.*/\1/p' | awk -v m="$MIB" '{printf "%.1f", m*1048576/1e6/$1}'; }
w=$(dd if=/dev/zero of="$W/raw/f" bs=1M count="$MIB" conv=fdatasync 2>&1 | dd_mbs)
c=$(drop_caches)
r=$(dd if="$W/raw/f" of=/dev/null bs=1M 2>&1 | dd_mbs)
printf "%-34s write %8s MB/s   read %8s MB/s (%s)\n" "dd (conv=fdatasync)" "$w" "$r" "$c"
rm -f "$W/raw/f"
if command -v fio >/dev/null; then
    fw=$(fio --name=w --directory="$W/raw" --rw=write --bs=1M --size="${MIB}M" --iodepth=16 \
         --ioengine=libaio --end_fsync=1 --output-format=terse 2>/dev/null | awk -F';' '{printf "%.1f", $48*1024/1e6}')
    c=$(drop_caches)
    fr=$(fio --name=w --directory="$W/raw" --rw=read --bs=1M --size="${MIB}M" --iodepth=16 \
         --ioengine=libaio --output-format=terse 2>/dev/null | awk -F';' '{printf "%.1f", $7*1024/1e6}')
    printf "%-34s write %8s MB/s   read %8s MB/s (%s)\n" "fio (libaio, depth 16, end_fsync)" "$fw" "$fr" "$c"
    rm -rf "$W/raw"/*
fi

# ----- chunkd -----
ARGS=()
for i in 0 1 2; do
    port=$(free_port)
    "$B/bin/chunkd" -f -o listen=127.0.0.1:$port -o data_dir="$W/s$i" -o metad= \
        -o scrub_rate=0 -o log_level=warning 2>>"$W/s$i.log" &
    PIDS+=($!)
    ARGS+=(-s 127.0.0.1:$port)
    for t in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
done
"$B/bench/bench_chunkd" "${ARGS[@]:0:2}" -m "$MIB" -t write -i 0x100000
c=$(drop_caches)
echo "(reads: $c cache)"
"$B/bench/bench_chunkd" "${ARGS[@]:0:2}" -m "$MIB" -t read -i 0x100000
"$B/bench/bench_chunkd" "${ARGS[@]}" -m "$MIB" -t chain -i 0x200000
