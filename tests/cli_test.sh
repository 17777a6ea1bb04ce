#!/usr/bin/env bash
# CLI behaviour: bad flags and bad inputs exit 2 with one line on stderr; a tiny
# train -> eval -> export run works and --reuse skips retraining.
set -u
bin=${1:?usage: cli_test.sh path/to/deepadapter}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0

# expect_error NAME TEXT ARGS...: exit code 2, one stderr line containing TEXT.
expect_error() {
  local name=$1 text=$2
  shift 2
  "$bin" "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$? lines
  lines=$(wc -l <"$tmp/err")
  if [[ $rc -ne 2 || $lines -ne 1 ]] || ! grep -qi -- "$text" "$tmp/err"; then
    echo "FAIL $name: rc=$rc, $lines stderr lines: $(head -c 300 "$tmp/err")"
    fails=$((fails + 1))
  else
    echo "ok   $name: $(cat "$tmp/err")"
  fi
}

# expect_ok NAME TEXT ARGS...: exit code 0 and TEXT on stdout.
expect_ok() {
  local name=$1 text=$2
  shift 2
  if "$bin" "$@" >"$tmp/out" 2>"$tmp/err" && grep -q -- "$text" "$tmp/out"; then
    echo "ok   $name"
  else
    echo "FAIL $name: $(tail -c 300 "$tmp/err") $(head -c 300 "$tmp/out")"
    fails=$((fails + 1))
  fi
}

expect_error "no subcommand" "subcommand"
expect_error "unknown subcommand" "subcommand" frobnicate
expect_error "non-numeric epochs" "epochs" train --out "$tmp/x" --epochs abc
expect_error "zero epochs" "epochs" train --out "$tmp/x" --epochs 0
expect_error "unknown family" "family" train --out "$tmp/x" --family mlp
expect_error "missing --out" "out" train
expect_error "bad widths" "widths" train --out "$tmp/x" --widths "0,4/8"
expect_error "missing data dir" "not found" train --out "$tmp/x" --data "$tmp/nodata"
expect_error "negative lr" "lr" train --out "$tmp/x" --lr -1
mkdir -p "$tmp/baddata"
printf 'garbage' >"$tmp/baddata/train-images-idx3-ubyte.gz"
expect_error "corrupt data file" "train-images-idx3-ubyte" train --out "$tmp/x" --data "$tmp/baddata"
expect_error "eval of missing model" "not found" eval "$tmp/nomodel"
expect_error "export of missing model" "not found" export "$tmp/nomodel"

expect_ok "tiny train" "accuracy" train --widths "4/8/8 fc8" --epochs 1 --limit 300 --out "$tmp/m"
for f in spec.json weights.pt metrics.json; do
  [[ -s "$tmp/m/$f" ]] || { echo "FAIL train wrote no $f"; fails=$((fails + 1)); }
done
expect_ok "train --reuse skips training" "reused" train --widths "4/8/8 fc8" --epochs 1 --limit 300 --out "$tmp/m" --reuse
expect_ok "train --reuse retrains on changed settings" "accuracy" train --widths "4/8/8 fc8" --epochs 1 --limit 200 --out "$tmp/m" --reuse
grep -q reused "$tmp/out" && { echo "FAIL reuse despite a changed --limit"; fails=$((fails + 1)); }
expect_ok "eval" "test accuracy" eval "$tmp/m"
expect_ok "export" "model.onnx" export "$tmp/m"
[[ -s "$tmp/m/model.onnx" ]] || { echo "FAIL export wrote no model.onnx"; fails=$((fails + 1)); }
expect_ok "bench infer" "engine / onnxruntime" bench infer "$tmp/m" --runs 10 --seconds 0.2 --rounds 1
expect_error "bench infer without a model" "not found" bench infer "$tmp/nomodel"

# Contexts, prediction and pruning.
expect_ok "predict" "low-3g-30" predict "$tmp/m"
printf '{"contexts": [{"name": "t", "device": "low", "network": "3g", "budget_ms": 20.5, "inferences": 100}]}' >"$tmp/ctx.json"
expect_ok "tiny prune" "branch models" prune --base "$tmp/m" --contexts "$tmp/ctx.json" --standard "$tmp/ctx.json" \
  --out "$tmp/repo" --limit 300 --short-steps 1 --long-epochs 0 --val-images 100
[[ -s "$tmp/repo/family.json" && -s "$tmp/repo/branches/t/model.onnx" ]] || { echo "FAIL prune wrote no family"; fails=$((fails + 1)); }
expect_ok "prune --reuse" "branch models" prune --base "$tmp/m" --contexts "$tmp/ctx.json" --standard "$tmp/ctx.json" \
  --out "$tmp/repo" --limit 300 --short-steps 1 --long-epochs 0 --val-images 100 --reuse
printf '{"contexts": [{"name": "net", "device": "low", "network": "3g", "budget_ms": 20.5, "inferences": 100}, {"name": "cpu", "device": "low", "network": "wifi", "budget_ms": 0.3, "inferences": 100}]}' >"$tmp/ctx2.json"
expect_ok "tiny bench prune compares on network-bound contexts" "net  *accuracy" bench prune --base "$tmp/m" \
  --contexts "$tmp/ctx2.json" --standard "$tmp/ctx2.json" --out "$tmp/bench" --limit 300 --short-steps 1 \
  --long-epochs 0 --val-images 100
[[ -s "$tmp/bench/prune.svg" ]] || { echo "FAIL bench prune wrote no plot"; fails=$((fails + 1)); }
expect_ok "tiny bench prune over two seeds, with intervals" "network-bound  *uniform .*pairs .*n = 2;  seeds .*n = 2" bench prune --base "$tmp/m" \
  --contexts "$tmp/ctx2.json" --standard "$tmp/ctx2.json" --out "$tmp/bench2" --limit 300 --short-steps 1 \
  --long-epochs 0 --val-images 100 --seeds 1,2 --reuse
# One network-bound context: each seed's mean difference is its one pair, so both intervals agree.
line=$(grep "network-bound  *uniform" "$tmp/out")
pairs=$(sed -n 's/.*pairs \(\[[^]]*\]\).*/\1/p' <<<"$line")
seeds=$(sed -n 's/.*seeds \(\[[^]]*\]\).*/\1/p' <<<"$line")
[[ -n "$pairs" && "$pairs" == "$seeds" ]] ||
  { echo "FAIL bench prune --seeds: pairs and seeds intervals differ with one context: $line"; fails=$((fails + 1)); }
[[ -s "$tmp/bench2/prune-seeds.svg" && -s "$tmp/bench2/seed-2/uniform/family.json" ]] || { echo "FAIL bench prune --seeds wrote no plot or families"; fails=$((fails + 1)); }
expect_ok "prune --reuse-only reads a current family" "branch models" prune --base "$tmp/m" --contexts "$tmp/ctx.json" \
  --standard "$tmp/ctx.json" --out "$tmp/repo" --limit 300 --short-steps 1 --long-epochs 0 --val-images 100 --reuse-only
expect_error "prune --reuse-only refuses other inputs" "other inputs" prune --base "$tmp/m" --contexts "$tmp/ctx.json" \
  --standard "$tmp/ctx.json" --out "$tmp/repo" --limit 300 --short-steps 2 --long-epochs 0 --val-images 100 --reuse-only
expect_ok "prune with distillation" "branch models" prune --base "$tmp/m" --contexts "$tmp/ctx.json" --standard "$tmp/ctx.json" \
  --out "$tmp/repo-kd" --limit 300 --short-steps 1 --long-epochs 0.5 --val-images 100 --distill-weight 0.5
expect_error "prune --long-augment takes a boolean" "long-augment" prune --base "$tmp/m" --out "$tmp/x" \
  --long-augment sometimes
# ./run demo uses the shipped family only if it matches today's defaults: a
# changed default must come with a rebuilt models/family (models/README.md).
root=$(cd "$(dirname "$0")/.." && pwd)
expect_ok "the shipped family matches today's default settings" "branch models" prune \
  --base "$root/models/vgg" --out "$root/models/family" --reuse-only
start=$SECONDS
expect_ok "tiny bench system, with a live run that stops by itself" "deepadapter-fit / edge-only" \
  bench system --family "$tmp/repo" --out "$tmp/sys" --users 30 --images 200 --live-seconds 1 --clients 16
((SECONDS - start < 60)) || { echo "FAIL bench system's live run overran: $((SECONDS - start)) s"; fails=$((fails + 1)); }
for f in system.json summary.md latency-cdf.svg; do
  [[ -s "$tmp/sys/$f" ]] || { echo "FAIL bench system wrote no $f"; fails=$((fails + 1)); }
done
expect_error "bench system: missing family" "family.json" bench system --family "$tmp/none" --out "$tmp/sys"
printf '{"devices": [{"name": "tablet", "share": 1}]}' >"$tmp/badwork.json"
expect_error "bench system: unknown device in the workload" "tablet" bench system --family "$tmp/repo" --out "$tmp/sys" --workload "$tmp/badwork.json"
expect_error "prune of a missing base" "not found" prune --base "$tmp/nomodel" --out "$tmp/r2"
expect_error "unknown importance" "importance" prune --base "$tmp/m" --out "$tmp/r2" --importance magic
expect_error "bad step" "step" prune --base "$tmp/m" --out "$tmp/r2" --step 1.5
expect_error "bad long-term learning rate" "learning rates" prune --base "$tmp/m" --out "$tmp/r2" --long-lr 0

# Services: bad configuration is a clear error, not a crash.
expect_error "unknown cache policy" "policy" edge --cloud http://127.0.0.1:1 --state "$tmp/es" --policy fifo --port 0
expect_error "port out of range" "port" cloud --repo "$tmp/cr" --port 70000
expect_error "edge without a cloud" "cloud" edge --state "$tmp/es"
expect_error "edge with a bad cloud URL" "http://" edge --cloud nowhere --state "$tmp/es"
expect_error "bench edge: jitter below 1" "jitter" bench edge --family "$tmp/f" --out "$tmp/be" --jitter 0.5
expect_error "bench edge: inverted budget range" "budget" bench edge --family "$tmp/f" --out "$tmp/be" --budgets-of-base 0.6 0.1
expect_error "bench edge: missing family" "family" bench edge --family "$tmp/none" --out "$tmp/be"
printf '{not a catalog' >"$tmp/badrepo.json"; mkdir -p "$tmp/badrepo"; cp "$tmp/badrepo.json" "$tmp/badrepo/catalog.json"
expect_error "corrupt catalog" "catalog" cloud --repo "$tmp/badrepo" --port 0
printf '{"contexts": [{"name": "t", "device": "tablet", "network": "3g", "budget_ms": 20, "inferences": 1}]}' >"$tmp/badctx.json"
expect_error "unknown device class" "unknown device class 'tablet'" predict "$tmp/m" --contexts "$tmp/badctx.json"
printf '{"contexts": [{"name": "t", "device": "low", "network": "3g", "budget_ms": -1, "inferences": 1}]}' >"$tmp/badctx.json"
expect_error "negative budget" "budget_ms" predict "$tmp/m" --contexts "$tmp/badctx.json"
printf '{"contexts": [' >"$tmp/badctx.json"
expect_error "truncated contexts file" "not valid JSON" predict "$tmp/m" --contexts "$tmp/badctx.json"
expect_error "missing latency table" "none.json" bench predictor --table "$tmp/none.json"
expect_error "throttling without a browser" "--browser" bench predictor --throttle 4
expect_error "profile with a bad input shape" "input" profile --input 0,28,28 --out "$tmp/t.json"
expect_error "export to an unwritable place" "cannot" export "$tmp/m" --out /proc/nope/model.onnx

cp -r "$tmp/m" "$tmp/corrupt"
printf 'not torch' >"$tmp/corrupt/weights.pt"
expect_error "corrupt weights" "weights.pt" eval "$tmp/corrupt"
printf '{"family": 3}' >"$tmp/corrupt/spec.json"
expect_error "bad spec.json" "spec.json" eval "$tmp/corrupt"

echo "$fails failure(s)"
[[ $fails -eq 0 ]]
