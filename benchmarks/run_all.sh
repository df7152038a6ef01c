#!/usr/bin/env bash
# Every benchmark in one run, on an otherwise idle machine, for benchmarks/RESULTS.md.
#   bash benchmarks/run_all.sh [THREADS]        (default 2)
# Writes benchmarks/results/<date>/*.json and *.txt; the medians and ratios in
# RESULTS.md come from those files.
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-2}"
out="benchmarks/results/$(date +%Y-%m-%d)"
mkdir -p "$out"
export METAREC_BENCH_THREADS="$threads" OMP_NUM_THREADS="$threads"
# OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE slow numpy's BLAS here; unset for fair peers.
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
python -c "import metarec_fast as m; m.show_config()" | tee "$out/config.txt"
python -c "import threadpoolctl, json; print(json.dumps(threadpoolctl.threadpool_info(), indent=1))" > "$out/threadpools.json"
for b in topk embedding metrics adapt data; do
  python -m pytest "benchmarks/bench_$b.py" -q -p no:cacheprovider --benchmark-group-by=group \
    --benchmark-columns=min,median,mean,rounds --benchmark-json="$out/bench_$b.json" \
    2>&1 | tee "$out/bench_$b.txt" | tail -n 40
done
python benchmarks/adapt_memory.py 2>&1 | tee "$out/adapt_memory.txt"
python benchmarks/engine_epoch.py --threads "$threads" 2>&1 | tee "$out/engine_epoch.txt"
