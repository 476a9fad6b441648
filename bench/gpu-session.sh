#!/usr/bin/env bash
# A lent GPU machine has nvcc, CMake and PyTorch but no Node, and device time is short (15 minutes
# a session, starts included). So everything is built HERE (nvcc 13 builds sm_80/89/90 in the
# normal build) and carried in the ignored folder .gpu/ (about 45 MB), and the machine only runs:
#
#   bash bench/gpu-session.sh prepare      # here: Node (xz), node_modules, the built binaries, SFT cache
#   # then, with the device tool:  run  command="bash bench/gpu-session.sh run"  carry=[".gpu"]
#
# `run` (on the GPU machine), most important first, each step under its own timeout, each log
# written straight to $OUT (so a step cut off still leaves the earlier ones):
#   1. scale.txt, scale.json          issue 18 at Qwen2.5-0.5B's shape (random weights): bench scale
#      race-scale.txt, race-scale/    --device cuda (train step 8 x 1024 and generation 64 x 512, ours
#                                     vs torch eager and torch.compile, tokens/s, peak memory, ratios),
#                                     then bench dash --shape qwen2.5-0.5b --device cuda (per-micro-batch
#                                     GRPO vs DASH, fixed-length completions, wall time). ~4-6 min.
#   2. native-tests.txt  every CUDA kernel against the CPU kernel (wst_native_tests)
#   3. race.txt          bench dash --device cuda (GRPO per-micro-batch / decoupled / DASH), JSON last
#   4. vitest-cuda.txt   the TypeScript suite through the CUDA addon (WST_DASH_BACKEND=cuda)
#   5. kernels.jsonl     ours vs torch on the same card (wst_gpu_bench, gpu_check_torch.py --quick)
#   6. model-bench.jsonl bench decode|train --device cuda (31M model; only when WST_GPU_STEPS names it)
#   7. demo-cuda.txt     demo --device cuda (only when WST_GPU_STEPS names it)
# A device call stops at 10 minutes: the default steps (scale tests race vitest kernels) fit it on
# an H100 by estimate (setup ~0.5, scale ~4-6, the rest ~3-4 minutes); what a cut-off step leaves
# in $OUT still comes back.
# Knobs: WST_GPU_STEPS (space-separated subset of: scale tests race vitest kernels model demo),
# WST_GPU_REPEAT (race runs per arm, default 2), WST_GPU_RACE_ARGS (e.g. --ablation),
# WST_GPU_RACE_S (race timeout), WST_GPU_KERNELS=full (gpu-check.sh's shapes, not --quick),
# WST_GPU_SCALE_ARGS (extra bench scale options, e.g. "--torch-compile off" or "--reps 3"),
# WST_GPU_SCALE_S (bench scale timeout, default 300), WST_GPU_TORCH_S (its torch peer, default 200),
# WST_GPU_SCALE_RACE_ARGS (default "--steps 2 --new-tokens 256"), WST_GPU_SCALE_RACE_S (default 200).
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

case "${1:-}" in
prepare)
  mkdir -p .gpu
  ninja -C build wst_native_tests wst_gpu_bench >/dev/null || exit 1
  [[ -f build/Release/cuda/wst_dash_cuda.node ]] || { echo "no CUDA addon in build/: build with nvcc present" >&2; exit 1; }
  [[ -f .gpu/node.xz ]] || xz -T0 -c "$(command -v node)" > .gpu/node.xz
  tar -cf - --exclude=node_modules/typescript --exclude=node_modules/@types --exclude=node_modules/cmake-js \
    --exclude=node_modules/prebuildify --exclude=node_modules/tar node_modules | xz -T0 -6 > .gpu/nm.tar.xz
  tar -cf - build/wst_native_tests build/wst_gpu_bench build/Release/wst_dash.node build/Release/cuda/wst_dash_cuda.node \
    | xz -T0 -6 > .gpu/bin.tar.xz
  # The race's SFT warm-up, trained here on the CPU, under the cache key that --device cuda looks up
  # (so the machine spends no time on it; the race compares arms from the same start either way).
  rm -rf .gpu/cache && mkdir -p .gpu/cache
  node --import tsx --input-type=module -e '
    import { cpSync } from "node:fs";
    import path from "node:path";
    const { builtinSftModel, builtinSftEntry } = await import(path.resolve("src/rl/builtin.ts"));
    const cpu = await builtinSftModel({ log: (l) => console.error(l) });
    process.env.WST_DASH_CACHE = path.resolve(".gpu/cache");
    cpSync(cpu.dir, builtinSftEntry({ device: "cuda" }).dir, { recursive: true });
  ' || exit 1
  ls .gpu/cache
  du -sh .gpu/*.xz
  ;;
run)
  out=${OUT:-/tmp/wst-gpu-out}
  steps=${WST_GPU_STEPS:-scale tests race vitest kernels}
  mkdir -p "$out"
  t0=$SECONDS
  log() { echo "[gpu-session $((SECONDS - t0))s] $*"; }
  nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader
  mkdir -p /tmp/nb && xz -dc .gpu/node.xz > /tmp/nb/node && chmod +x /tmp/nb/node
  export PATH=/tmp/nb:$PATH
  tar -xJf .gpu/nm.tar.xz && tar -xJf .gpu/bin.tar.xz
  export WST_DASH_CACHE=/tmp/wst-cache && mkdir -p "$WST_DASH_CACHE" && cp -r .gpu/cache/. "$WST_DASH_CACHE"/
  node -e "const a=require('./build/Release/cuda/wst_dash_cuda.node'); console.log('CUDA addon:', a.backend, 'devices', a.deviceCount())" 2>&1 | tail -3
  log "setup done"
  if [[ " $steps " == *" scale "* ]]; then
    # The torch peer first (eager rows, then torch.compile's; killed at WST_GPU_TORCH_S), then ours;
    # the table to the log, JSON to scale.json.
    WST_DASH_PYTHON=python3 timeout ${WST_GPU_SCALE_S:-300} node bin/wst-dash.js bench scale --shape qwen2.5-0.5b --device cuda \
      --reps 2 --torch-timeout ${WST_GPU_TORCH_S:-200} --out "$out/scale.json" ${WST_GPU_SCALE_ARGS:-} > "$out/scale.txt" 2>&1
    log "bench scale rc $?"; grep -v '^\[' "$out/scale.txt" | tail -14
    timeout ${WST_GPU_SCALE_RACE_S:-200} node bin/wst-dash.js bench dash --shape qwen2.5-0.5b --device cuda \
      ${WST_GPU_SCALE_RACE_ARGS:---steps 2 --new-tokens 256} --out "$out/race-scale" > "$out/race-scale.txt" 2>&1
    log "race at the 0.5B shape rc $?"; tail -11 "$out/race-scale.txt"
  fi
  if [[ " $steps " == *" tests "* ]]; then
    timeout 100 ./build/wst_native_tests > "$out/native-tests.txt" 2>&1
    log "native tests rc $?"; grep -E "^FAIL|checks,|CUDA device" "$out/native-tests.txt" | head -30
  fi
  if [[ " $steps " == *" race "* ]]; then
    timeout ${WST_GPU_RACE_S:-200} node bin/wst-dash.js bench dash --device cuda --json --repeat ${WST_GPU_REPEAT:-2} \
      ${WST_GPU_RACE_ARGS:-} --out /tmp/race-cuda > "$out/race.txt" 2>&1
    log "race rc $?"; grep -v '^{' "$out/race.txt" | tail -12
    tail -1 "$out/race.txt" | python3 -c '
import json, sys
try: d = json.loads(sys.stdin.read())
except Exception: sys.exit(0)
for k, a in d["arms"].items(): print(k, "s", round(a["seconds"], 2), [round(x, 2) for x in a.get("secondsRuns", [])], "acc", a["accuracy"], {p: round(v, 2) for p, v in (a.get("phases") or {}).items()})
print("time_reduction_vs_grpo", d["time_reduction_vs_grpo"], "vs_decoupled", d["time_reduction_vs_decoupled"])'
  fi
  if [[ " $steps " == *" vitest "* ]]; then
    WST_DASH_BACKEND=cuda timeout 120 node node_modules/vitest/vitest.mjs run --reporter=dot > "$out/vitest-cuda.txt" 2>&1
    log "vitest through the CUDA addon: rc $?"; tail -8 "$out/vitest-cuda.txt" | sed 's/\x1b\[[0-9;]*m//g'
  fi
  if [[ " $steps " == *" kernels "* ]]; then
    q=${WST_GPU_KERNELS:---quick}  # WST_GPU_KERNELS=full: the shapes of bench/gpu-check.sh
    [[ "$q" == full ]] && q=""
    { timeout 120 ./build/wst_gpu_bench $q; timeout 120 python3 bench/gpu_check_torch.py $q; } > "$out/kernels.jsonl" 2>&1
    log "kernel timings rc $?"
    python3 - "$out/kernels.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{')]
for r in rows:
    unit = 'tflops' if 'tflops' in r else 'gbps'
    print(f"{r['bench']:<22} {r['impl']:<14} {r['ms']:>9.3f} ms {r[unit]:>9.2f} {unit}  {r.get('note', '')[:40]}")
PY
  fi
  if [[ " $steps " == *" model "* ]]; then
    { timeout 45 node bin/wst-dash.js bench decode --device cuda --reps 2 --json 2>&1 | tail -1
      timeout 45 node bin/wst-dash.js bench train --device cuda --reps 5 --json 2>&1 | tail -1; } > "$out/model-bench.jsonl"
    log "model bench"; cut -c1-600 "$out/model-bench.jsonl"
  fi
  if [[ " $steps " == *" demo "* ]]; then
    timeout 60 node bin/wst-dash.js demo --device cuda --out /tmp/demo-cuda > "$out/demo-cuda.txt" 2>&1
    log "demo --device cuda: rc $?"; tail -12 "$out/demo-cuda.txt"
  fi
  log "done"
  ;;
*)
  echo "usage: bash bench/gpu-session.sh prepare|run" >&2
  exit 2
  ;;
esac
