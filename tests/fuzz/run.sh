#!/usr/bin/env bash
# Runs each libFuzzer target of BUILD (configured with DA_FUZZ) on its seeds
# and its regression cases, then fuzzes it for SECONDS or for RUNS inputs.
# Exit code 0 when no target crashed, hung (10 s per input), leaked or went
# past 2 GB; a failing input is kept in tests/fuzz/regressions/TARGET/.
# usage: tests/fuzz/run.sh BUILD (--seconds N | --runs N) [TARGET...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: run.sh BUILD (--seconds N | --runs N) [TARGET...]}
case ${2:-} in
  --seconds) limit=(-max_total_time="$3") ;;
  --runs) limit=(-runs="$3") ;;
  *) echo "usage: run.sh BUILD (--seconds N | --runs N) [TARGET...]" >&2; exit 2 ;;
esac
shift 3
targets=("$@")
((${#targets[@]})) || targets=(onnx oip context files)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
for t in "${targets[@]}"; do
  bin=$build/tests/fuzz/fuzz_$t
  mkdir -p "$work/$t" "$here/regressions/$t"
  cp -r "$here/seeds/$t/." "$work/$t/" 2>/dev/null || true
  # The regression cases first, each once.
  if compgen -G "$here/regressions/$t/*" >/dev/null; then
    "$bin" -rss_limit_mb=2048 -timeout=10 "$here"/regressions/$t/* >"$work/$t.log" 2>&1 ||
      { echo "fuzz_$t: a regression case fails again:"; tail -30 "$work/$t.log"; failed=1; continue; }
  fi
  start=$(date +%s)
  if "$bin" "${limit[@]}" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
      -artifact_prefix="$here/regressions/$t/" "$work/$t" >"$work/$t.log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log")
    echo "fuzz_$t: ${runs:-?} inputs in $(($(date +%s) - start)) s: 0 crashes, 0 hangs, 0 leaks"
  else
    echo "fuzz_$t FAILED (the input is kept in tests/fuzz/regressions/$t/):"
    grep -E "ERROR|SUMMARY|Test unit written" "$work/$t.log" | head -10
    failed=1
  fi
done
exit $failed
