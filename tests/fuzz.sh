#!/usr/bin/env bash
# Long fuzzing runs, one target after the other (not part of `cargo test`; see docs/robustness.md).
#
#   tests/fuzz.sh                      # every target: 10 million executions each, grants_policy 1 million
#   RUNS=100000 tests/fuzz.sh grants_parse config_parse
#
# Each target starts from its committed seeds (CRATE/fuzz/seeds/TARGET, valid inputs taken from the
# docs and the demo) plus whatever earlier runs found (CRATE/fuzz/corpus/TARGET, not committed), with
# its dictionary (CRATE/fuzz/TARGET.dict). A crash leaves its input in CRATE/fuzz/artifacts/TARGET/
# and stops the script with a non-zero status. Needs `cargo install cargo-fuzz`; the nightly-only
# flags cargo-fuzz passes are enabled with RUSTC_BOOTSTRAP on a stable toolchain.
#
# Built with debug assertions and overflow checks (-a) and without a sanitizer (-s none): the code
# under test is safe Rust (`forbid(unsafe_code)`), so AddressSanitizer would cost ~2x executions
# while panics, overflows and runaway memory (-rss_limit_mb) are caught anyway.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
all=(gateway:frame_decode catalog:catalog_parse policy:grants_parse policy:grants_policy gateway:config_parse gateway:api_query_body)

# grants_policy builds a casbin enforcer per parsed input (~0.3 ms), so its default is a tenth.
default_runs() { if [ "$1" = grants_policy ]; then echo 1000000; else echo 10000000; fi; }

selected=()
for t in "${all[@]}"; do
  if [ $# -eq 0 ] || printf '%s\n' "$@" | grep -qx "${t#*:}"; then selected+=("$t"); fi
done
[ ${#selected[@]} -gt 0 ] || { echo "no such target: $* (targets: ${all[*]#*:})" >&2; exit 2; }

printf '%-16s %12s %10s %10s %9s\n' target executions seconds execs/s peak-MiB
for t in "${selected[@]}"; do
  crate=${t%%:*} name=${t#*:}
  runs=${RUNS:-$(default_runs "$name")}
  dir=$root/$crate/fuzz
  mkdir -p "$dir/corpus/$name" "$dir/artifacts/$name" "$root/target/fuzz-logs"
  log=$root/target/fuzz-logs/$name.log
  if ! (cd "$root/$crate" && RUSTC_BOOTSTRAP=1 cargo fuzz run -s none -a "$name" \
        "$dir/corpus/$name" "$dir/seeds/$name" -- \
        -dict="$dir/$name.dict" -runs="$runs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1) >"$log" 2>&1; then
    echo "$name: FAILED, see $log and $dir/artifacts/$name/" >&2
    tail -40 "$log" >&2
    exit 1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log")
  secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log")
  printf '%-16s %12s %10s %10s %9s\n' "$name" "$execs" "$secs" "$rate" "$rss"
done
