#!/usr/bin/env bash
# Rebuilds the README's status table on this machine from an empty cache (a fresh
# WST_DASH_CACHE: every warm-up is retrained) and prints it as markdown with the machine named.
#   bash bench/reproduce.sh [OUT_DIR]        (default bench/results/reproduce; ~8-10 min on 2 cores)
# Set WST_DASH_ISA=avx2 to measure the AVX2 path on an AVX-512 machine.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench/results/reproduce}
mkdir -p "$OUT"
export WST_DASH_CACHE
WST_DASH_CACHE=$(mktemp -d)
trap 'rm -rf "$WST_DASH_CACHE"' EXIT
# The CLI runs dist/ when it exists: compile it from the current src/ first.
npm run --silent build:ts
cli() { node bin/wst-dash.js "$@"; }
echo "[reproduce] empty cache $WST_DASH_CACHE; results in $OUT" >&2
cli bench dash --seeds 3 --json --out "$OUT/dash" > "$OUT/dash.json"
cli demo wst --json --out "$OUT/wst" > "$OUT/wst.json"
cli bench kernels --json --quick > "$OUT/kernels.json"
node scripts/status-table.mjs "$OUT"
