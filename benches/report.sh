#!/usr/bin/env bash
# The report benchmark: the last-used report's statement in keytrail (DataFusion) and in
# DuckDB, over the same lake's Parquet files, and `keytrail report last-used` end to end.
#
#   bash benches/report.sh                       # lake in $KEYTRAIL_BENCH_LAKE
#   KEYTRAIL_BENCH_EVENTS=10000000 ...           # events to generate if the lake is missing
#
# The generated data is 14 days from 2024-11-01. Two cases: a report as of midnight (whole
# days: key_daily only) and as of mid-day (two partial days re-aggregated from events).
# Needs: cargo, python3 with duckdb (pip install -r requirements-test.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${KEYTRAIL_BENCH_DATA:-/tmp/keytrail-bench-report-json}
LAKE=${KEYTRAIL_BENCH_LAKE:-/tmp/keytrail-bench-report-lake}
EVENTS=${KEYTRAIL_BENCH_EVENTS:-10000000}
RUNS=${KEYTRAIL_BENCH_RUNS:-3}
THREADS=${KEYTRAIL_BENCH_THREADS:-2}
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release --locked -p keytrail-benches -p keytrail-cli --examples --bins
if [ ! -d "$LAKE" ]; then
  if [ ! -d "$DATA" ]; then "$TARGET/release/keytrail-bench" gen "$DATA" --events "$EVENTS"; fi
  "$TARGET/release/keytrail" ingest "$DATA" --lake "$LAKE" --threads "$THREADS"
fi
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "lake: $(du -sh "$LAKE/events" | cut -f1) events, $(du -sh "$LAKE/key_daily" | cut -f1) key_daily"
sql=$(mktemp)
for case in "2024-11-15T00:00:00Z 2024-11-08T00:00:00Z" "2024-11-14T12:00:00Z 2024-11-07T12:00:00Z"; do
  set -- $case
  echo "== last-used as of $1, window from $2, $THREADS threads"
  "$TARGET/release/examples/report_sql" "$LAKE" "$1" "$2" "$RUNS" "$THREADS" "$sql"
  python3 benches/scripts/duckdb_report.py "$LAKE" "$sql" "$RUNS" "$THREADS"
  for _ in $(seq "$RUNS"); do
    /usr/bin/time -f "keytrail report last-used (end to end, CSV to /dev/null): %e seconds, %M KiB peak RSS" \
      "$TARGET/release/keytrail" report last-used --lake "$LAKE" --as-of "$1" --since "$2" \
      --threads "$THREADS" --format csv -q >/dev/null
  done
done
rm -f "$sql"
