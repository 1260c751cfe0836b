#!/usr/bin/env bash
# Coverage-guided fuzzing of one target with AFL++ through cargo-afl.
#
#   tests/fuzz-afl/run.sh TARGET SECONDS [--minimize]
#
# TARGET: mjpeg, yuyv, weights, config, uri or events (src/lib.rs has what each checks). Builds the targets with
# `cargo afl build --release`, fuzzes TARGET for SECONDS starting from tests/fuzz-corpus/TARGET/ (resuming an
# earlier run's queue in out/TARGET if there is one), then prints the run's figures from fuzzer_stats.
# SECONDS 0 fuzzes nothing (with --minimize: minimise an earlier run's queue only).
# --minimize: `afl-cmin` over the corpus folder and the queue; the `afl-*` files of tests/fuzz-corpus/TARGET/ are
# replaced by the minimised set (hand-made seeds and `crash-*` files stay), and any new crash is added as a
# `crash-*` file; commit them, keep the corpus small.
#
# Needs: cargo-afl (`cargo install cargo-afl --locked`, which also builds its AFL++). The output folder out/ is
# not committed. Environment: AFL_* as afl-fuzz documents them; FUZZ_NICE (default 19) is the niceness;
# FUZZ_OUT (default tests/fuzz-afl/out) the output folder.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
target="${1:?usage: run.sh TARGET SECONDS [--minimize]}"
seconds="${2:?usage: run.sh TARGET SECONDS [--minimize]}"
minimize="${3:-}"
corpus="$here/../fuzz-corpus/$target"
[ -d "$corpus" ] || { echo "no corpus folder $corpus" >&2; exit 2; }
[ -f "src/bin/$target.rs" ] || { echo "no fuzz target $target (src/bin/$target.rs)" >&2; exit 2; }

cargo afl build --release --bin "$target"
bin="$here/target/release/$target"
out="${FUZZ_OUT:-$here/out}/$target"
mkdir -p "$out"

# Containers and shared machines: no core_pattern or CPU-governor changes, no pinning to a core.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1 AFL_NO_UI=1
export AFL_AUTORESUME=1
timeout_ms=1000
[ "$target" = weights ] && timeout_ms=5000
stats="$out/default/fuzzer_stats"
if [ "$seconds" != 0 ]; then
  start=$(date +%s)
  nice -n "${FUZZ_NICE:-19}" cargo afl fuzz -V "$seconds" -t "$timeout_ms" -i "$corpus" -o "$out" -- "$bin" \
    > "$out/fuzz.log" 2>&1 || { echo "afl-fuzz failed, see $out/fuzz.log" >&2; tail -20 "$out/fuzz.log" >&2; exit 1; }
  end=$(date +%s)
  echo "target $target: $((end - start)) s wall"
fi
[ -f "$stats" ] || { echo "no fuzzer_stats in $out: nothing has been fuzzed yet" >&2; exit 1; }
grep -E '^(run_time|execs_done|execs_per_sec|corpus_count|corpus_found|bitmap_cvg|edges_found|total_edges|saved_crashes|saved_hangs|stability) ' "$stats"

if [ "$minimize" = --minimize ]; then
  tmp="$(mktemp -d)"
  all="$tmp/all"; min="$tmp/min"
  mkdir -p "$all"
  cp "$corpus"/* "$all"/ 2>/dev/null || true
  rm -f "$all/README.md"
  cp "$out"/default/queue/id:* "$all"/ 2>/dev/null || true
  # cargo-afl's own AFL++ tools first (a system afl-showmap of another version breaks afl-cmin), and the
  # shell afl-cmin: the Python one records no coverage from these stdin harnesses. -e: edges only, not hit
  # counts, which keeps about half as many inputs.
  afl_bin="$(ls -d "${XDG_DATA_HOME:-$HOME/.local/share}"/afl.rs/rustc-*/afl.rs-*/afl/bin | tail -1)"
  PATH="$afl_bin:$PATH" afl-cmin.bash -e -t "$timeout_ms" -i "$all" -o "$min" -- "$bin" >/dev/null
  before=$(find "$corpus" -maxdepth 1 -name 'afl-*' | wc -l)
  find "$corpus" -maxdepth 1 -name 'afl-*' -delete
  kept=0
  for f in "$min"/*; do
    # A hand-made seed or a kept crash that afl-cmin chose stays under its own name.
    if ! (for c in "$corpus"/*; do cmp -s "$f" "$c" && exit 0; done; exit 1); then
      cp "$f" "$corpus/afl-$(sha1sum "$f" | cut -c1-12)"; kept=$((kept + 1))
    fi
  done
  crashes=0
  for f in "$out"/default/crashes/id:*; do
    [ -e "$f" ] || continue
    name="$corpus/crash-$(sha1sum "$f" | cut -c1-12)"
    [ -e "$name" ] || { cp "$f" "$name"; crashes=$((crashes + 1)); }
  done
  rm -rf "$tmp"
  echo "afl-* files in $corpus: $before before, $kept now; $crashes new crash-* files ($(du -sh "$corpus" | cut -f1))"
fi
