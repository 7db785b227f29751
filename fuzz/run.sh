#!/usr/bin/env bash
# Fuzz keytrail's parsers with AFL++ (cargo-afl, stable Rust). See docs/fuzzing.md.
#
#   bash fuzz/run.sh ci                    every target for $KEYTRAIL_FUZZ_EXECS executions
#                                          (default 20000) with a fixed seed; fails on any
#                                          crash or hang
#   bash fuzz/run.sh long TARGET EXECS [JOBS]
#                                          one target until EXECS executions, made by JOBS
#                                          AFL++ instances together (default 1; one per core
#                                          is the fastest); prints its figures; findings under
#                                          fuzz/out/TARGET/*/crashes and hangs
#   bash fuzz/run.sh resume TARGET EXECS [JOBS]
#                                          as long, going on from the corpus, figures and
#                                          executions that fuzz/out/TARGET holds (a run
#                                          stopped before its EXECS, same target and JOBS)
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
  rm -rf "$dir" "$dir.all" && mkdir -p "$dir"
  case $t in
    decode)
      # Real captures of every shape and hostile case, gzipped and plain, as they are when their
      # text is under 16 KiB; larger captures one record each (`{"Records": [record]}`), so
      # every kind of event is in, while an input's size, which sets an execution's time (the
      # target reads it three ways, once possibly byte by byte), stays small. afl-cmin then
      # keeps the smallest inputs that cover what they all cover.
      python3 - "$dir.all" <<'PY'
import glob, hashlib, json, os, sys, zlib
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
def seed(data):
    with open(os.path.join(out, hashlib.md5(data).hexdigest()[:12]), "wb") as f:
        f.write(data)
for root in ("../testdata/corrupt", "../testdata/sample", "../testdata/stratus"):
    for path in sorted(glob.glob(root + "/**/*", recursive=True)):
        if not path.endswith((".json", ".gz", ".jsonl")) or not os.path.isfile(path):
            continue
        raw = open(path, "rb").read()
        text = raw
        if raw[:2] == b"\x1f\x8b":
            try:  # at most 64 MiB: a bomb is among the hostile cases
                text = zlib.decompressobj(31).decompress(raw, 64 << 20)
            except zlib.error:
                pass
        if len(raw) < 16384 and len(text) < 16384:
            seed(raw)
            continue
        try:
            doc = json.loads(text)
        except Exception:
            continue
        records = doc.get("Records") if isinstance(doc, dict) else doc
        for record in records if isinstance(records, list) else []:
            seed(json.dumps({"Records": [record]}, separators=(",", ":")).encode())
PY
      AFL_NO_AFFINITY=1 cargo afl cmin -i "$dir.all" -o "$dir" -t 5000 -m none \
        -- "target/release/$t" >"out/seeds/$t.cmin.log" 2>&1 ||
        { tail -5 "out/seeds/$t.cmin.log"; return 1; }
      rm -rf "$dir.all" ;;
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
    rule)
      cp ../rules/*/*.yaml "$dir/"
      # Sigma rules go through the same entry point.
      for f in ../testdata/sigma/rules/*.yml ../testdata/sigma/unsupported/*.y*ml; do
        cp "$f" "$dir/sigma-$(basename "$f")"
      done ;;
    inventory) cp ../testdata/inventory/* "$dir/" ;;
  esac
}

# A figure of one instance's fuzzer_stats.
figure() { awk -F: -v k="$1" '$1 ~ "^"k" *$" {gsub(/ /,"",$2); print $2}' "$2"; }
max() { echo $(($1 > $2 ? $1 : $2)); }

run() {
  local t=$1 execs=$2 jobs=${3:-1} resume=${4:-} input
  if [ -n "$resume" ]; then
    # AFL++ takes its queue, bitmap and figures back from the output folder; -E counts the
    # executions done before.
    [ -d "out/$t" ] || { echo "$t: nothing to resume in fuzz/out/$t" >&2; return 1; }
    input=-
  else
    seeds "$t"
    rm -rf "out/$t"
    input=out/seeds/$t
  fi
  # -s: a fixed seed (one per instance); -E: stop after this many executions; -t: a hang is an
  # input that takes longer than 2 s; -m none: no memory limit (the decoder's own limits bound
  # it); -G: inputs of at most 64 KiB (a gzipped one still inflates to the target's limit).
  # With more than one job, one main instance (-M) and secondaries (-S) share a corpus; they
  # run until their executions together reach EXECS (instances run at different speeds).
  local names=(default)
  if [ "$jobs" -gt 1 ]; then
    names=(main)
    for ((i = 1; i < jobs; i++)); do names+=("s$i"); done
  fi
  local pids=() i=0 status=0
  for name in "${names[@]}"; do
    local role=()
    case $name in
      main) role=(-M main) ;;
      s*) role=(-S "$name") ;;
    esac
    cargo afl fuzz -i "$input" -o "out/$t" "${role[@]}" -s $((13 + i)) -E "$execs" \
      -t 2000 -m none -G 65536 "target/release/$t" >"out/$t.$name.log" 2>&1 &
    pids+=($!)
    i=$((i + 1))
    # The main instance makes the output folder the others join.
    if [ "$name" = main ]; then sleep 5; fi
  done
  if [ "$jobs" -gt 1 ]; then
    # Stop every instance (SIGINT to afl-fuzz, under cargo-afl) once their executions add up
    # to EXECS; AFL++ writes its figures every minute or so.
    (
      while sleep 15; do
        sum=0
        for name in "${names[@]}"; do
          stats=out/$t/$name/fuzzer_stats
          [ -f "$stats" ] && sum=$((sum + $(figure execs_done "$stats")))
        done
        if [ "$sum" -ge "$execs" ]; then
          for pid in "${pids[@]}"; do pkill -INT -P "$pid" 2>/dev/null || true; done
          break
        fi
      done
    ) &
    local watcher=$!
  fi
  for ((i = 0; i < ${#pids[@]}; i++)); do
    wait "${pids[$i]}" || { tail -30 "out/$t.${names[$i]}.log"; status=1; }
  done
  [ -z "${watcher:-}" ] || kill "$watcher" 2>/dev/null || true
  local done=0 crashes=0 hangs=0 time=0 corpus=0 edges=0
  for name in "${names[@]}"; do
    local stats=out/$t/$name/fuzzer_stats
    [ -f "$stats" ] || { echo "$t: no figures from instance $name" >&2; status=1; continue; }
    done=$((done + $(figure execs_done "$stats")))
    crashes=$((crashes + $(figure saved_crashes "$stats")))
    hangs=$((hangs + $(figure saved_hangs "$stats")))
    time=$(max "$(figure run_time "$stats")" "$time")
    corpus=$(max "$(figure corpus_count "$stats")" "$corpus")
    edges=$(max "$(figure edges_found "$stats")" "$edges")
  done
  echo "$t: $done executions in ${#names[@]} instance(s), $crashes crashes, $hangs hangs ($time s, corpus $corpus, edges $edges)"
  if [ "$crashes" != 0 ] || [ "$hangs" != 0 ]; then
    echo "findings of $t: fuzz/out/$t/*/crashes and hangs" >&2
    status=1
  fi
  return $status
}

case ${1:-ci} in
  ci)
    status=0
    for t in "${TARGETS[@]}"; do run "$t" "${KEYTRAIL_FUZZ_EXECS:-20000}" || status=1; step "$t done"; done
    exit $status ;;
  long) run "$2" "$3" "${4:-1}" ;;
  resume) run "$2" "$3" "${4:-1}" resume ;;
  *) echo "usage: fuzz/run.sh ci | long TARGET EXECS [JOBS] | resume TARGET EXECS [JOBS]" >&2; exit 2 ;;
esac
