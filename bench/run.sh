#!/usr/bin/env bash
# run.sh - every benchmark in one go (`make bench`); figures go to docs/BENCHMARKS.md.
#   bench/run.sh [rpc|chunkd|metad|fs]...   (default: all)
set -u
cd "$(dirname "$0")/.."
what=${*:-rpc chunkd metad fs}
echo "== dfs benchmarks on $(hostname), $(nproc) cores, $(date -u +%F)"
for w in $what; do
    echo
    echo "===== $w"
    case $w in
    rpc) bash bench/rpc.sh ;;
    chunkd) bash bench/chunkd.sh ;;
    metad) bash bench/metad.sh ${METAD_BENCH_FILES:-1000000} ;;
    fs) bash bench/fs.sh ;;
    *) echo "unknown benchmark $w" ;;
    esac
done
