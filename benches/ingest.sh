#!/usr/bin/env bash
# The ingest benchmark: keytrail and DuckDB convert the same generated CloudTrail files to
# Parquet with 2 threads each; three runs of each, every run in a fresh process.
#
#   bash benches/ingest.sh                # data in $KEYTRAIL_BENCH_DATA (default /tmp/keytrail-bench)
#   KEYTRAIL_BENCH_EVENTS=700000 ...      # events to generate (about 1.5 kB of JSON each)
#
# Needs: cargo, python3 with duckdb (pip install -r requirements-test.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${KEYTRAIL_BENCH_DATA:-/tmp/keytrail-bench}
EVENTS=${KEYTRAIL_BENCH_EVENTS:-700000}
RUNS=${KEYTRAIL_BENCH_RUNS:-3}
cargo build --release --locked -p keytrail-benches
if [ ! -d "$DATA" ]; then
  target/release/keytrail-bench gen "$DATA" --events "$EVENTS"
fi
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for _ in $(seq "$RUNS"); do target/release/keytrail-bench ingest "$DATA" --threads 2; done
for mode in plain partitioned sorted; do
  for _ in $(seq "$RUNS"); do python3 benches/scripts/duckdb_convert.py "$DATA" /tmp/keytrail-bench-duckdb 2 "$mode"; done
done
