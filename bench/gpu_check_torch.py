#!/usr/bin/env python3
"""Torch side of bench/gpu-check.sh: the same workloads as native/tests/bench/gpu_bench.cpp,
timed with CUDA events (median after a warm-up). Prints one JSON object per line:
  {"bench": ..., "impl": "torch ...", "ms": median, "tflops"|"gbps": ..., "note": ...}
Usage: gpu_check_torch.py [--quick]
"""
import json
import sys

import torch

QUICK = "--quick" in sys.argv


def median_ms(fn, reps):
    fn()  # warm-up
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def emit(bench, impl, ms, unit, value, note=""):
    print(json.dumps({"bench": bench, "impl": impl, "ms": round(ms, 4), unit: round(value, 3),
                      "note": note}), flush=True)


def main():
    if not torch.cuda.is_available():
        print("gpu_check_torch: no CUDA device", file=sys.stderr)
        sys.exit(1)
    dev = torch.device("cuda")
    print(f"gpu_check_torch: torch {torch.__version__} on {torch.cuda.get_device_name(0)}",
          file=sys.stderr)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    g = torch.Generator(device=dev)
    g.manual_seed(0)

    # Memory bandwidth reference: device-to-device copy.
    n = 1 << (26 if QUICK else 28)
    a = torch.rand(n, device=dev, generator=g)
    b = torch.empty_like(a)
    ms = median_ms(lambda: b.copy_(a), 10)
    emit("memcpy_d2d", "torch copy_", ms, "gbps", 2.0 * n * 4 / (ms * 1e6), "read+write bytes / time")
    del a, b

    # Attention forward, causal: (B, H, T, D) layout for SDPA.
    B, H, T, D = (1 if QUICK else 4), 32, (1024 if QUICK else 4096), 128
    flops = 2.0 * B * H * T * T * D
    for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        q = torch.randn(B, H, T, D, device=dev, dtype=dtype, generator=g)
        k = torch.randn(B, H, T, D, device=dev, dtype=dtype, generator=g)
        v = torch.randn(B, H, T, D, device=dev, dtype=dtype, generator=g)
        f = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        ms = median_ms(f, 5)
        emit("attention_fwd_causal", f"torch sdpa {name}", ms, "tflops", flops / (ms * 1e9))
        del q, k, v

    # GEMM N^3.
    N = 4096 if QUICK else 8192
    for dtype, name, tf32 in ((torch.float32, "fp32", False), (torch.float32, "tf32", True),
                              (torch.bfloat16, "bf16", False)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        x = torch.randn(N, N, device=dev, dtype=dtype, generator=g)
        y = torch.randn(N, N, device=dev, dtype=dtype, generator=g)
        ms = median_ms(lambda: torch.matmul(x, y), 5)
        emit("gemm", f"torch matmul {name}", ms, "tflops", 2.0 * N ** 3 / (ms * 1e9))
        del x, y
    torch.backends.cuda.matmul.allow_tf32 = False

    # Sampling: temperature 1, top-p 0.9 (sort-based, the common torch implementation).
    Bs, V, top_p = 256, 151936, 0.9
    logits = torch.rand(Bs, V, device=dev, generator=g) * 16 - 8

    def top_p_sample():
        probs = torch.softmax(logits, dim=-1)
        sp, si = torch.sort(probs, dim=-1, descending=True)
        cum = torch.cumsum(sp, dim=-1)
        sp = sp.masked_fill(cum - sp > top_p, 0.0)
        sp = sp / sp.sum(dim=-1, keepdim=True)
        pick = torch.multinomial(sp, 1, generator=g)
        ids = torch.gather(si, -1, pick)
        logp = torch.log(torch.gather(sp, -1, pick))
        return ids, logp

    ms = median_ms(top_p_sample, 10)
    emit("sampling_top_p", "torch sort+cumsum+multinomial", ms, "gbps", Bs * V * 4 / (ms * 1e6),
         "logits bytes / time")
    del logits

    # GRPO loss + gradient, the same formula (TRL's per-token loss, grpo normalisation, KL).
    S, Tt = 512, (2048 if QUICK else 8192)
    lp0 = torch.rand(S, Tt, device=dev, generator=g) * -4
    old = torch.rand(S, Tt, device=dev, generator=g) * -4
    ref = torch.rand(S, Tt, device=dev, generator=g) * -4
    mask = (torch.rand(S, Tt, device=dev, generator=g) * 1.25 > 0).float()
    adv = torch.rand(S, device=dev, generator=g) * 2 - 1
    clip_lo, clip_hi, beta, thr = 0.2, 0.28, 0.04, 0.0

    def grpo():
        lp = lp0.detach().requires_grad_(True)
        keep = adv.abs() > thr
        A = adv[:, None]
        r = torch.exp(lp - old)
        obj = torch.minimum(r * A, torch.clamp(r, 1 - clip_lo, 1 + clip_hi) * A)
        d = ref - lp
        kl = torch.exp(d) - d - 1
        per_tok = -(obj - beta * kl) * mask * keep[:, None]
        ntok = mask.sum(1).clamp(min=1)
        loss = (per_tok.sum(1) / ntok).sum() / keep.sum().clamp(min=1)
        loss.backward()
        return lp.grad

    ms = median_ms(grpo, 10)
    emit("grpo_loss", "torch autograd fp32", ms, "gbps", 5.0 * S * Tt * 4 / (ms * 1e6),
         "same byte count as ours: 4 inputs + grad")


if __name__ == "__main__":
    main()
