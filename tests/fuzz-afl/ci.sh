#!/usr/bin/env bash
# The short coverage-guided pass CI runs: every AFL++ target for SECONDS (default 45) from its seeds in
# tests/fuzz-corpus/, one after the other, into a fresh output folder; fails on any crash, printing the
# crashing inputs (base64) and the harness's panic for each so the case can be kept as a crash-* seed.
#
#   tests/fuzz-afl/ci.sh [SECONDS]
#
# Needs cargo-afl (`cargo install cargo-afl --locked`, which builds its own AFL++). Long runs: run.sh.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
seconds="${1:-45}"
targets="mjpeg yuyv weights config uri events"

# Its own target folder and no debug info: only the short pass needs this build, and it builds faster.
export CARGO_TARGET_DIR="$here/target/ci" CARGO_PROFILE_RELEASE_DEBUG=false
cargo afl build --release
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
# Containers and shared machines: no core_pattern or CPU-governor changes, no pinning to a core. Seeds that
# run slow on a loaded CI machine are skipped, not fatal (AFL_IGNORE_SEED_PROBLEMS).
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1 AFL_NO_UI=1 \
  AFL_IGNORE_SEED_PROBLEMS=1
failed=""
printf '%-8s %10s %8s %10s %8s %8s %s\n' target execs "execs/s" edges corpus crashes hangs
for target in $targets; do
  timeout_ms=1000
  [ "$target" = weights ] && timeout_ms=5000
  bin="$CARGO_TARGET_DIR/release/$target"
  if ! cargo afl fuzz -V "$seconds" -t "$timeout_ms" -i "$here/../fuzz-corpus/$target" -o "$out/$target" \
    -- "$bin" > "$out/$target.log" 2>&1; then
    echo "afl-fuzz $target failed:" >&2
    tail -30 "$out/$target.log" >&2
    failed="$failed $target"
    continue
  fi
  stats="$out/$target/default/fuzzer_stats"
  get() { awk -v k="$1" '$1 == k { print $3 }' "$stats"; }
  printf '%-8s %10s %8s %10s %8s %8s %s\n' "$target" "$(get execs_done)" "$(get execs_per_sec)" \
    "$(get edges_found)/$(get total_edges)" "$(get corpus_count)" "$(get saved_crashes)" "$(get saved_hangs)"
  crashes=("$out/$target"/default/crashes/id:*)
  if [ -e "${crashes[0]}" ]; then
    failed="$failed $target"
    for f in "${crashes[@]}"; do
      echo "--- $target crash $(basename "$f"):"
      base64 -w 0 "$f"; echo
      "$bin" < "$f" 2>&1 | tail -5 || true
    done
  fi
done
if [ -n "$failed" ]; then
  echo "coverage-guided pass failed for:$failed" >&2
  exit 1
fi
echo "coverage-guided pass: no crash in $targets ($seconds s each)"
