#!/bin/bash
# rpc.sh - rpc layer throughput (1 MiB / 64 KiB WRITE frames) versus raw loopback TCP.
#   bench/rpc.sh [seconds per measurement]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${B:-build}
bin=$B/bench/bench_rpc
if ! make -j2 "$bin" >/dev/null 2>&1; then
    # Another area may be broken: link against the common library only.
    make -j2 "$B/lib/libdfscommon.a" >/dev/null
    mkdir -p "$B/bench"
    cc -std=gnu11 -O2 -g -D_GNU_SOURCE -Icommon bench/bench_rpc.c "$B/lib/libdfscommon.a" \
        $(pkg-config --libs libuv msgpack libxxhash) -lpthread -lm -o "$bin"
fi
echo "== rpc: one loopback connection, $(nproc) cores"
"$bin" "${1:-3}"
