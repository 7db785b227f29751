#!/usr/bin/env bash
# The large-object benchmark (issue 13): the same generated events ingested from small
# delivery files and from one JSON-lines object of ≥ 5 GB, read record by record, with 2 and
# with 16 threads; throughput and peak RSS of each run (each in a fresh process).
#
#   bash benches/stream.sh                # data in $KEYTRAIL_BENCH_DATA (default /tmp/keytrail-stream)
#   KEYTRAIL_BENCH_EVENTS=3400000 ...     # events to generate (about 1.5 kB of JSON each)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${KEYTRAIL_BENCH_DATA:-/tmp/keytrail-stream}
EVENTS=${KEYTRAIL_BENCH_EVENTS:-3400000}
DAYS=${KEYTRAIL_BENCH_DAYS:-60}
cargo build --release --locked -p keytrail-benches
bench=target/release/keytrail-bench
if [ ! -d "$DATA/files" ]; then
  "$bench" gen "$DATA/files" --events "$EVENTS" --days "$DAYS"
fi
if [ ! -f "$DATA/export.jsonl" ]; then
  "$bench" jsonl "$DATA/files" "$DATA/export.jsonl"
fi
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
ls -l "$DATA/export.jsonl"
for threads in 2 16; do
  "$bench" ingest "$DATA/files" --threads "$threads"
  "$bench" ingest "$DATA/export.jsonl" --threads "$threads"
done
