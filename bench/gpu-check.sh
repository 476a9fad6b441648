#!/usr/bin/env bash
# One-call GPU check for a lent GPU machine (needs nvcc, CMake >= 3.18, a C++17 compiler, Python 3
# with PyTorch; no Node). Builds the CUDA kernels and the native test program with plain CMake,
# runs every CUDA kernel against the CPU kernel, then times ours vs torch side by side on the same
# card: causal attention forward (B 4, H 32, T 4096, D 128) vs SDPA, GEMM 8192^3 vs torch.matmul,
# top-p sampling (256 x 151,936) vs a sort-based torch top-p, the GRPO loss+gradient vs the same
# formula in torch autograd, plus a device-to-device copy as the card's bandwidth reference.
# Prints one table and writes JSON under $OUT (or bench/results/). Finishes within 8 minutes.
#
#   bash bench/gpu-check.sh [--quick]     (--quick: smaller shapes, for a smoke run)
#   env: OUT (results folder), WST_GPU_BUILD (build folder, default /tmp/wst-gpu-build)
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${OUT:-$root/bench/results}
build=${WST_GPU_BUILD:-/tmp/wst-gpu-build}
quick=""
[[ "${1:-}" == "--quick" ]] && quick="--quick"
mkdir -p "$out" "$build"
budget=470                                  # seconds, leaves margin under the 8-minute limit
start=$SECONDS
left() { local l=$((budget - (SECONDS - start))); ((l < 10)) && l=10; echo "$l"; }
log() { echo "[gpu-check $((SECONDS - start))s] $*" >&2; }

for tool in nvcc cmake python3; do
  command -v "$tool" >/dev/null || { echo "gpu-check: $tool not found" >&2; exit 2; }
done

# Build only for the card that is here (compute capability from nvidia-smi), else the defaults.
arch_flag=()
if command -v nvidia-smi >/dev/null; then
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
  [[ "$cap" =~ ^[0-9]+$ ]] && arch_flag=("-DCMAKE_CUDA_ARCHITECTURES=$cap")
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
fi

log "configure (${arch_flag[*]:-default archs})"
timeout "$(left)" cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DWST_DASH_CUDA=ON \
  "${arch_flag[@]}" >"$out/configure.log" 2>&1 || { tail -30 "$out/configure.log"; exit 1; }
log "build"
timeout "$(left)" cmake --build "$build" -j "$(nproc)" --target wst_native_tests wst_gpu_bench \
  >"$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }

log "native tests (CUDA vs CPU)"
timeout "$(left)" "$build/wst_native_tests" >"$out/native-tests.txt" 2>"$out/native-tests.err"
tests_rc=$?
grep -E "^FAIL|checks,|CUDA device|no CUDA device" "$out/native-tests.txt" >&2

log "timing ours"
timeout "$(left)" "$build/wst_gpu_bench" $quick >"$out/ours.jsonl" 2>"$out/ours.err"
ours_rc=$?
log "timing torch"
timeout "$(left)" python3 "$root/bench/gpu_check_torch.py" $quick >"$out/torch.jsonl" 2>"$out/torch.err"
torch_rc=$?
((ours_rc)) && { echo "gpu_bench failed (rc $ours_rc):" >&2; tail -5 "$out/ours.err" >&2; }
((torch_rc)) && { echo "torch timing failed (rc $torch_rc):" >&2; tail -5 "$out/torch.err" >&2; }

TESTS_RC=$tests_rc OUT_DIR="$out" python3 - <<'PY'
import json, os, re, subprocess
out = os.environ["OUT_DIR"]
def rows(name):
    try:
        return [json.loads(l) for l in open(os.path.join(out, name)) if l.strip().startswith("{")]
    except OSError:
        return []
ours, torch_rows = rows("ours.jsonl"), rows("torch.jsonl")
try:
    card = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                          capture_output=True, text=True).stdout.strip().splitlines()[0]
except Exception:
    card = "unknown"
tests = open(os.path.join(out, "native-tests.txt")).read() if os.path.exists(os.path.join(out, "native-tests.txt")) else ""
m = re.search(r"(\d+) checks, (\d+) failed", tests)
summary = {"checks": int(m.group(1)), "failed": int(m.group(2))} if m else {"checks": 0, "failed": -1}
summary["failures"] = [l for l in tests.splitlines() if l.startswith("FAIL")]
summary["exit_code"] = int(os.environ["TESTS_RC"])
print(f"\ncard: {card}")
print(f"native tests: {summary['checks']} checks, {summary['failed']} failed (exit {summary['exit_code']})")
print(f"\n{'bench':<22} {'impl':<34} {'ms':>10} {'rate':>16} {'ours/theirs speed':>18}")
results = []
for o in ours:
    unit = "tflops" if "tflops" in o else "gbps"
    print(f"{o['bench']:<22} {'ours (' + o.get('note', '') + ')':<34.34} {o['ms']:>10.3f} {o[unit]:>10.2f} {unit:<5}")
    same = [t for t in torch_rows if t["bench"] == o["bench"]]
    # Compare like with like where the dtypes are named (ours "bf16 ..."/"fp32 ...", torch "... bf16").
    dt = next((d for d in ("bf16", "tf32", "fp32") if d in o.get("note", "")), None)
    typed = [t for t in same if dt and (dt in t["impl"] or (dt == "fp32" and "tf32" in t["impl"]))]
    for t in (typed or same):
        ratio = t["ms"] / o["ms"] if o["ms"] > 0 else float("nan")
        print(f"{'':<22} {t['impl']:<34.34} {t['ms']:>10.3f} {t[unit]:>10.2f} {unit:<5} {ratio:>17.3f}x")
        results.append({"bench": o["bench"], "ours": o, "torch": t, "speed_ratio_ours_over_torch": ratio})
bw = next((o["gbps"] for o in ours if o["bench"] == "memcpy_d2d"), None)
for name, what in (("grpo_loss", "GRPO op (result copied to host)"), ("grpo_loss_kernels", "GRPO kernels alone"),
                   ("grpo_loss_kernels_3k", "GRPO kernels alone, three-kernel path")):
    grpo = next((o for o in ours if o["bench"] == name), None)
    if bw and grpo:
        print(f"{what}: {grpo['gbps']:.1f} GB/s = {100 * grpo['gbps'] / bw:.1f}% of the measured copy bandwidth ({bw:.1f} GB/s)")
doc = {"card": card, "native_tests": summary, "ours": ours, "torch": torch_rows, "comparisons": results}
with open(os.path.join(out, "gpu-check.json"), "w") as f:
    json.dump(doc, f, indent=2)
print(f"\nwrote {os.path.join(out, 'gpu-check.json')}")
PY
log "done"
exit $tests_rc
