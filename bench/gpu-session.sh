#!/usr/bin/env bash
# A lent GPU machine has nvcc, CMake and PyTorch but no Node. This script runs the whole check
# there in one call, the TypeScript suite included, by carrying a Node binary and the JS
# dependencies in the ignored folder .gpu/ (about 42 MB):
#
#   bash bench/gpu-session.sh prepare      # here: Node (xz), node_modules (tar.xz), sm_90 addon
#   # then, with the device tool:  run  command="bash bench/gpu-session.sh run"  carry=[".gpu"]
#
# `run` (on the GPU machine): bench/gpu-check.sh (build, native tests, ours vs torch), vitest
# through the CUDA addon (WST_DASH_BACKEND=cuda), bench decode|train --device cuda, and the demo
# with the models on the GPU. Files come back under $OUT (at most 8). ~2 min on an H200.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
arch=${WST_GPU_ARCH:-90}

case "${1:-}" in
prepare)
  mkdir -p .gpu
  xz -T0 -c "$(command -v node)" > .gpu/node.xz
  tar -cf - --exclude=node_modules/typescript --exclude=node_modules/@types --exclude=node_modules/cmake-js \
    --exclude=node_modules/prebuildify --exclude=node_modules/tar node_modules | xz -T0 -6 > .gpu/nm.tar.xz
  node node_modules/cmake-js/bin/cmake-js compile --parallel "$(nproc)" --log-level warn --out /tmp/wst-gpu-addon \
    --CDCMAKE_CUDA_ARCHITECTURES="$arch" --CDWST_DASH_CUDA=ON || exit 1
  rm -rf .gpu/addon && mkdir -p .gpu/addon && cp -r /tmp/wst-gpu-addon/Release .gpu/addon/ && rm -f .gpu/addon/Release/*.a
  du -sh .gpu
  ;;
run)
  out=${OUT:-/tmp/wst-gpu-out}
  mkdir -p "$out" /tmp/gc
  OUT=/tmp/gc WST_GPU_BUILD=/tmp/wst-gpu-build timeout 300 bash bench/gpu-check.sh 2>&1 | tail -30
  grep -E "^FAIL" /tmp/gc/native-tests.txt | head -20
  tar -czf "$out/gpu-check.tar.gz" -C /tmp gc
  [[ -f .gpu/node.xz ]] || { echo "no .gpu/node.xz: run 'prepare' first and carry .gpu"; exit 0; }
  mkdir -p /tmp/nb && xz -dc .gpu/node.xz > /tmp/nb/node && chmod +x /tmp/nb/node
  export PATH=/tmp/nb:$PATH
  tar -xJf .gpu/nm.tar.xz
  mkdir -p build && cp -r .gpu/addon/Release build/
  WST_DASH_BACKEND=cuda timeout 180 node node_modules/vitest/vitest.mjs run --reporter=dot > "$out/vitest-cuda.txt" 2>&1
  echo "vitest through the CUDA addon: rc $?"; tail -6 "$out/vitest-cuda.txt" | sed 's/\x1b\[[0-9;]*m//g'
  {
    timeout 90 node bin/wst-dash.js bench decode --device cuda --reps 2 --json 2>/dev/null | tail -1
    timeout 90 node bin/wst-dash.js bench train --device cuda --reps 5 --json 2>/dev/null | tail -1
  } > "$out/model-bench.jsonl"
  python3 - "$out/model-bench.jsonl" <<'PY'
import json, sys
for l in open(sys.argv[1]):
    if not l.startswith('{'):
        continue
    d = json.loads(l)
    if d['kind'] == 'decode':
        print('decode (batch, prefill tok/s, decode tok/s, ms/step):',
              [(r['batch'], round(r['prefillTokensPerSecond']), round(r['decodeTokensPerSecond']), round(r['decodeMsPerStep'], 2)) for r in d['rows']])
    else:
        print('train ms/step', round(d['msPerStep'], 2), 'tokens/s', round(d['tokensPerSecond']))
PY
  start=$SECONDS
  WST_DASH_CACHE=/tmp/wst-cache timeout 200 node bin/wst-dash.js demo --device cuda --out /tmp/demo-cuda > "$out/demo-cuda.txt" 2>&1
  echo "demo --device cuda: rc $? in $((SECONDS - start)) s"; tail -10 "$out/demo-cuda.txt"
  # The race with its ablations (shared prompts off, τ 0) on the GPU, same cache (SFT done above).
  start=$SECONDS
  WST_DASH_CACHE=/tmp/wst-cache timeout 240 node bin/wst-dash.js bench dash --device cuda --ablation --out /tmp/race-cuda > "$out/race-cuda.txt" 2>&1
  echo "bench dash --device cuda --ablation: rc $? in $((SECONDS - start)) s"; tail -12 "$out/race-cuda.txt"
  ;;
*)
  echo "usage: bash bench/gpu-session.sh prepare|run" >&2
  exit 2
  ;;
esac
