#!/usr/bin/env bash
# Fuzz keytrail's parsers with AFL++ (cargo-afl, stable Rust). See docs/fuzzing.md.
#
#   bash fuzz/run.sh ci                    every target for $KEYTRAIL_FUZZ_EXECS executions
#                                          (default 20000) with a fixed seed; fails on any
#                                          crash or hang
#   bash fuzz/run.sh long TARGET EXECS     one target until EXECS executions; prints its
#                                          figures; findings under fuzz/out/TARGET/
#
# Targets: decode key time rule inventory. Needs cargo, a C compiler and make (cargo-afl
# builds AFL++ from the source it ships when it is installed).
set -euo pipefail
cd "$(dirname "$0")"
TARGETS=(decode key time rule inventory)
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 \
  AFL_NO_AFFINITY=1 AFL_SHUFFLE_QUEUE=0
step() { echo "[fuzz] $1: ${SECONDS}s since start" >&2; }

if ! command -v cargo-afl >/dev/null 2>&1; then
  cargo install cargo-afl --version 0.18.2 --locked
  step "cargo-afl and AFL++ built"
fi
# CMPLOG (a second, comparison-logging build of each target) is left out: it doubles the
# build, and the inputs here are text a mutator reaches without it.
AFLRS_NO_CMPLOG=1 cargo afl build --release --locked
step "instrumented targets built"

# Seeds: small real inputs of each parser from testdata/, rules/ and a few literals.
seeds() {
  local t=$1 dir=out/seeds/$1
  rm -rf "$dir" && mkdir -p "$dir"
  case $t in
    decode)
      find ../testdata/corrupt ../testdata/sample ../testdata/stratus -type f -size -64k \
        \( -name '*.json' -o -name '*.gz' -o -name '*.jsonl' \) -print0 |
        xargs -0 -I{} sh -c 'cp "$1" "$2/$(echo "$1" | md5sum | cut -c1-12)"' _ {} "$dir" ;;
    key)
      for k in AKIAIOSFODNN7EXAMPLE ASIAY34FZKBOKMUTVV7A AKIARTXV5AHDZMKNCBCQ AROAEXAMPLE \
               AIDACORPUS AKIA2E0A8F3B244C9986 ABIA0123456789ABCDEF akiaiosfodnn7example; do
        printf '%s' "$k" > "$dir/$k"
      done ;;
    time)
      i=0
      for s in 2024-11-30T08:43:17Z 2020-09-14T00:44:23.000Z 2024-11-30 '2024-11-30 08:00:00' \
               2024-11-30T08:00:00+02:00 90m 36h 7d 2w now; do
        printf '%s' "$s" > "$dir/$i"; i=$((i + 1))
      done ;;
    rule) cp ../rules/*/*.yaml "$dir/" ;;
    inventory) cp ../testdata/inventory/* "$dir/" ;;
  esac
}

run() {
  local t=$1 execs=$2
  seeds "$t"
  rm -rf "out/$t"
  # -s: a fixed seed; -E: stop after this many executions; -t: a hang is an input that takes
  # longer than 2 s; -m none: no memory limit (the decoder's own limits bound it).
  cargo afl fuzz -i "out/seeds/$t" -o "out/$t" -s 13 -E "$execs" -t 2000 -m none \
    "target/release/$t" >"out/$t.log" 2>&1 || { tail -30 "out/$t.log"; return 1; }
  local stats=out/$t/default/fuzzer_stats
  local done crashes hangs
  done=$(awk -F: '/^execs_done/ {gsub(/ /,"",$2); print $2}' "$stats")
  crashes=$(awk -F: '/^saved_crashes/ {gsub(/ /,"",$2); print $2}' "$stats")
  hangs=$(awk -F: '/^saved_hangs/ {gsub(/ /,"",$2); print $2}' "$stats")
  echo "$t: $done executions, $crashes crashes, $hangs hangs ($(awk -F: '/^run_time/ {gsub(/ /,"",$2); print $2}' "$stats") s, corpus $(awk -F: '/^corpus_count/ {gsub(/ /,"",$2); print $2}' "$stats"), edges $(awk -F: '/^edges_found/ {gsub(/ /,"",$2); print $2}' "$stats"))"
  if [ "$crashes" != 0 ] || [ "$hangs" != 0 ]; then
    echo "findings of $t: fuzz/out/$t/default/crashes and hangs" >&2
    return 1
  fi
}

case ${1:-ci} in
  ci)
    status=0
    for t in "${TARGETS[@]}"; do run "$t" "${KEYTRAIL_FUZZ_EXECS:-20000}" || status=1; step "$t done"; done
    exit $status ;;
  long) run "$2" "$3" ;;
  *) echo "usage: fuzz/run.sh ci | long TARGET EXECS" >&2; exit 2 ;;
esac
