#!/usr/bin/env bash
# Fuzz targets one after the other, each until its executions over all its runs reach what one hour on a
# dedicated core gives, then minimise its queue into the corpus.
#
#   tests/fuzz-afl/hour.sh TARGET...
#
# Each TARGET runs through `run.sh TARGET 3600` at niceness 0 (resuming out/TARGET). After the first five minutes
# (calibration of the resumed queue) the rate of this run is measured over a window that grows to the end; the
# run is stopped (SIGINT, so afl-fuzz saves its state) once execs_done of all runs >= 3600 s x that rate x 1.03,
# or after the hour. Run one instance per free core, each with its own targets, and nothing else beside them:
# the rate is only a dedicated core's rate if the core is not shared. Prints the figures the corpus README
# tables use: this run's wall and CPU time (/usr/bin/time), the rate, and fuzzer_stats.
# Environment: HOUR_S (default 3600) and WARMUP_S (default 300) replace the hour and the five minutes (a short
# trial of this script); HOUR_MINIMIZE=0 skips the minimisation; FUZZ_OUT as run.sh takes it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
[ $# -gt 0 ] || { echo "usage: hour.sh TARGET..." >&2; exit 2; }
hour="${HOUR_S:-3600}"; warmup="${WARMUP_S:-300}"
outs="${FUZZ_OUT:-$here/out}"
stat() { awk -v k="$2" '$1 == k { print $3 }' "$outs/$1/default/fuzzer_stats" 2>/dev/null || true; }
for t in "$@"; do
  out="$outs/$t"
  e0=$(stat "$t" execs_done); r0=$(stat "$t" run_time)
  e0=${e0:-0}; r0=${r0:-0}
  echo "$(date +%T) $t: before this run, run_time $r0 s, execs $e0"
  mkdir -p "$outs"
  FUZZ_NICE=0 /usr/bin/time -v ./run.sh "$t" "$hour" > "$outs/$t.hour.log" 2>&1 &
  job=$!
  ew=""; rw=""
  while kill -0 "$job" 2>/dev/null; do
    sleep 30
    e=$(stat "$t" execs_done); r=$(stat "$t" run_time)
    [ -n "$e" ] && [ -n "$r" ] || continue
    if [ -z "$ew" ] && [ $((r - r0)) -ge "$warmup" ]; then ew=$e; rw=$r; fi
    [ -n "$ew" ] && [ $((r - rw)) -ge "$warmup" ] || continue
    rate=$(((e - ew) / (r - rw)))
    need=$((rate * hour * 103 / 100))
    echo "$(date +%T) $t: +$((r - r0)) s, execs $e, rate $rate/s, one core-hour needs $need"
    if [ "$e" -ge "$need" ]; then
      for p in $(pgrep -f -- "-o $out" || true); do
        [ "$(cat "/proc/$p/comm" 2>/dev/null)" = afl-fuzz ] && kill -INT "$p"
      done
      echo "$(date +%T) $t: stopped, $e >= $need"
      break
    fi
  done
  status=0; wait "$job" || status=$?
  echo "$(date +%T) $t: run.sh exit $status"
  grep -E 'Elapsed|User time|System time|Percent of CPU' "$outs/$t.hour.log" || true
  [ "${HOUR_MINIMIZE:-1}" = 0 ] || ./run.sh "$t" 0 --minimize | tail -n 12
done
