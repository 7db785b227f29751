#!/usr/bin/env bash
# The investigation benchmark (issue 5), each run in a fresh process, 2 threads:
#
#   1. raw logs: `keytrail investigate KEY DIR` beside `keytrail ingest DIR` (same files);
#   2. a lake:   `keytrail investigate KEY --lake LAKE` beside DuckDB running the same queries
#                on the same Parquet files (benches/scripts/duckdb_query.py investigate).
#
#   bash benches/investigate.sh DIR LAKE KEY      # DIR from `keytrail-bench gen`, LAKE ingested
#
# Needs: cargo, python3 with duckdb (pip install -r requirements-test.txt), GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=$1 LAKE=$2 KEY=$3
RUNS=${KEYTRAIL_BENCH_RUNS:-3}
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release --locked -p keytrail-cli
BIN="$TARGET/release/keytrail"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
timed() { /usr/bin/time -f "  %e s, %M KiB max RSS" "$@"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for i in $(seq "$RUNS"); do
  echo "ingest $DIR (run $i)"
  timed "$BIN" ingest "$DIR" --lake "$work/ingest-$i" --threads 2 --quiet
  echo "investigate $KEY over $DIR (run $i)"
  timed "$BIN" investigate "$KEY" "$DIR" --threads 2 --format json -o "$work/raw-$i.json"
done
for i in $(seq "$RUNS"); do
  echo "investigate $KEY --lake $LAKE (run $i)"
  timed "$BIN" investigate "$KEY" --lake "$LAKE" --threads 2 --format json -o "$work/lake-$i.json"
  echo "duckdb, same queries (run $i)"
  timed python3 benches/scripts/duckdb_query.py "$LAKE" 2 investigate "$KEY" "$work/duck-$i.json"
done
python3 - "$work/lake-1.json" "$work/raw-1.json" <<'PY'
import json, sys
for f in sys.argv[1:]:
    d = json.load(open(f))
    print(f, "keys in chain:", len(d.get("chain", {}).get("keys", d.get("keys", []))), "timeline rows:", len(d.get("timeline", [])))
PY
