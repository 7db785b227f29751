#!/usr/bin/env bash
# The detection benchmark (issue 12): `keytrail detect` over the query benchmark's lake, each
# case a fresh process timed by GNU time (wall seconds, peak RSS), THREADS threads.
#
#   bash benches/detect.sh                        # lake in $KEYTRAIL_BENCH_LAKE
#   KEYTRAIL_BENCH_PEERS="DIR DIR" bash benches/detect.sh
#
# Cases: the bundled rules and every detector at the default `--min-severity low` and at
# `info`; then, when KEYTRAIL_BENCH_PEERS names rule folders (SigmaHQ's
# rules/cloud/aws/cloudtrail and Yamato-Security/suzaku-rules, fetched, never committed),
# the same with those suites loaded. There is no anchor: no other offline engine runs these
# rules over this lake. The lake is benches/query.sh's (it generates and ingests it when
# missing: run that first). Each case's findings are counted from its JSON lines.
# Needs: cargo, GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
LAKE=${KEYTRAIL_BENCH_LAKE:-/work/bench-data/ct10m-lake}
THREADS=${KEYTRAIL_BENCH_THREADS:-2}
PEERS=${KEYTRAIL_BENCH_PEERS:-}
TARGET=${CARGO_TARGET_DIR:-target}
OUT=${KEYTRAIL_BENCH_OUT:-$(mktemp -d)}
cargo build --release --locked -p keytrail-cli -p keytrail-benches --bins --examples
KT="$TARGET/release/keytrail"
if [ ! -d "$LAKE" ]; then
  echo "no lake at $LAKE: run benches/query.sh first (or set KEYTRAIL_BENCH_LAKE)" >&2
  exit 2
fi
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "lake: $(du -sh "$LAKE/events" | cut -f1) events in $(find "$LAKE/events" -name '*.parquet' | wc -l) files; build $(git rev-parse --short HEAD)"
case_() {
  local label=$1 out=$2
  shift 2
  # detect exits 1 when it reports findings: that is its answer, not a failure.
  /usr/bin/time -f "$label: %e s, %M KiB peak RSS" "$KT" detect --lake "$LAKE" --threads "$THREADS" \
    --format jsonl -q -o "$out" "$@" || [ $? -eq 1 ]
  echo "$label: $(wc -l <"$out") findings"
}
case_ "detect, bundled rules, --min-severity low" "$OUT/low.jsonl"
case_ "detect, bundled rules, --min-severity info" "$OUT/info.jsonl" --min-severity info
if [ -n "$PEERS" ]; then
  rules=()
  for d in $PEERS; do rules+=(--rules "$d"); done
  case_ "detect, bundled rules and $(wc -w <<<"$PEERS") peers' suites, low" "$OUT/peers.jsonl" "${rules[@]}"
fi
echo "findings in $OUT"
