#!/usr/bin/env bash
# The query-core benchmark (issue 11): keytrail beside DuckDB on the same lake files, every
# measurement a fresh process timed by GNU time (wall seconds, peak RSS), THREADS threads each.
#
#   bash benches/query.sh            # data in $KEYTRAIL_BENCH_DATA, lake in $KEYTRAIL_BENCH_LAKE
#
# Generates (if missing) KEYTRAIL_BENCH_EVENTS events over KEYTRAIL_BENCH_DAYS days with the
# generator's hourly role sessions and its CI automation user (a long-lived key assuming a role
# every 30 minutes, every fourth session chaining into a second role) and users' keys rotated
# and abandoned (`--key-lifecycle`), ingests them, then asks:
#   1. count and last time of an absent key        (keytrail sql / DuckDB)
#   2. the same for the busiest key
#   3. the busiest key's Create* rows, every column, in time order, written as CSV
#   4. count(*) of events
#   5. the investigation of the automation key, written as JSON
#   6. the last-used report as of midnight and as of mid-day (end to end / the same statement)
#   7. the unused and rotation reports (lake only, the CLI's defaults), the same two cases
# Needs: cargo, python3 with duckdb (pip install -r requirements-test.txt), GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${KEYTRAIL_BENCH_DATA:-/work/bench-data/ct10m}
LAKE=${KEYTRAIL_BENCH_LAKE:-/work/bench-data/ct10m-lake}
EVENTS=${KEYTRAIL_BENCH_EVENTS:-10300000}
DAYS=${KEYTRAIL_BENCH_DAYS:-348}
RUNS=${KEYTRAIL_BENCH_RUNS:-3}
THREADS=${KEYTRAIL_BENCH_THREADS:-2}
TARGET=${CARGO_TARGET_DIR:-target}
OUT=${KEYTRAIL_BENCH_OUT:-$(mktemp -d)}
mkdir -p "$OUT"
cargo build --release --locked -p keytrail-cli -p keytrail-benches --bins --examples
KT="$TARGET/release/keytrail"
if [ ! -d "$DATA" ]; then
  mkdir -p "$(dirname "$DATA")"
  "$TARGET/release/keytrail-bench" gen "$DATA" --events "$EVENTS" --days "$DAYS" --start 2024-01-01 --key-lifecycle | tee "$DATA.gen.txt"
fi
if [ ! -d "$LAKE" ]; then
  /usr/bin/time -f "ingest: %e s, %M KiB peak RSS" "$KT" ingest "$DATA" --lake "$LAKE" --threads "$THREADS" -q
fi
AUTO=$(sed -n 's/^automation key (the root of the long chain): //p' "$DATA.gen.txt")
ABSENT=AKIAZZZZZZZZZZZZZZZZ
BUSY=$("$KT" sql "SELECT accesskeyid FROM key_daily GROUP BY 1 ORDER BY sum(events) DESC LIMIT 1" --lake "$LAKE" --format csv | tail -1)
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "lake: $(du -sh "$LAKE/events" | cut -f1) events in $(find "$LAKE/events" -name '*.parquet' | wc -l) files; automation key $AUTO; busiest key $BUSY"
timed() { local label=$1; shift; /usr/bin/time -f "$label: %e s, %M KiB peak RSS" "$@"; }
DQ="python3 benches/scripts/duckdb_query.py $LAKE $THREADS"
Q1="SELECT count(*), max(eventtime) FROM events WHERE accesskeyid = '$ABSENT'"
Q2="SELECT count(*), max(eventtime) FROM events WHERE accesskeyid = '$BUSY'"
Q3="SELECT * FROM events WHERE accesskeyid = '$BUSY' AND eventname LIKE 'Create%' ORDER BY eventtime, eventid"
Q4="SELECT count(*) FROM events"
for i in $(seq "$RUNS"); do
  echo "== run $i"
  timed "keytrail 1 absent key" "$KT" sql "$Q1" --lake "$LAKE" --threads "$THREADS" --format csv >/dev/null
  timed "duckdb   1 absent key" $DQ fetch "$Q1" >/dev/null
  timed "keytrail 2 busy key" "$KT" sql "$Q2" --lake "$LAKE" --threads "$THREADS" --format csv >/dev/null
  timed "duckdb   2 busy key" $DQ fetch "$Q2" >/dev/null
  timed "keytrail 3 busy key Create* rows" "$KT" sql "$Q3" --lake "$LAKE" --threads "$THREADS" --format csv -o "$OUT/q3-kt.csv"
  timed "duckdb   3 busy key Create* rows" $DQ copy "$Q3" "$OUT/q3-duck.csv" csv >/dev/null
  timed "keytrail 4 count" "$KT" sql "$Q4" --lake "$LAKE" --threads "$THREADS" --format csv >/dev/null
  timed "duckdb   4 count" $DQ fetch "$Q4" >/dev/null
  timed "keytrail 5 investigate" "$KT" investigate "$AUTO" --lake "$LAKE" --threads "$THREADS" --format json -o "$OUT/inv-kt.json"
  timed "duckdb   5 investigate" $DQ investigate "$AUTO" "$OUT/inv-duck.json" >/dev/null
done
echo "rows: q3 keytrail $(($(wc -l <"$OUT/q3-kt.csv") - 1)), duckdb $(($(wc -l <"$OUT/q3-duck.csv") - 1)); timeline keytrail $(grep -c '"event":' "$OUT/inv-kt.json"), duckdb $(wc -l <"$OUT/inv-duck.json")"
last_day=$("$KT" sql "SELECT max(date) FROM key_daily" --lake "$LAKE" --format csv | tail -1)
next=$(date -u -d "$last_day + 1 day" +%Y-%m-%d)
sql=$(mktemp)
for case in "${next}T00:00:00Z ${last_day}T00:00:00Z" "${last_day}T12:00:00Z $(date -u -d "$last_day - 1 day" +%Y-%m-%d)T12:00:00Z"; do
  set -- $case
  echo "== last-used as of $1, window from $2"
  "$TARGET/release/examples/report_sql" "$LAKE" "$1" "$2" 1 "$THREADS" "$sql" >/dev/null
  for i in $(seq "$RUNS"); do
    timed "keytrail 6 report last-used" "$KT" report last-used --lake "$LAKE" --as-of "$1" --since "$2" --threads "$THREADS" --format csv -q >/dev/null
    timed "duckdb   6 report statement" python3 benches/scripts/duckdb_report.py "$LAKE" "$sql" 1 "$THREADS" >/dev/null
  done
  for report in unused rotation; do
    echo "== $report as of $1"
    "$TARGET/release/examples/report_sql" "$LAKE" "$1" "$2" 1 "$THREADS" "$sql" "$report" >/dev/null
    for i in $(seq "$RUNS"); do
      timed "keytrail 7 report $report" "$KT" report "$report" --lake "$LAKE" --as-of "$1" --threads "$THREADS" --format csv -q >"$OUT/$report-kt.csv"
      timed "duckdb   7 report statement" python3 benches/scripts/duckdb_report.py "$LAKE" "$sql" 1 "$THREADS"
    done
    echo "rows: $report keytrail $(($(wc -l <"$OUT/$report-kt.csv") - 1))"
  done
done
rm -f "$sql"
