#!/usr/bin/env python3
"""Plain PyTorch peer of `wst-dash bench scale` (issue 18): a Qwen2-architecture model at a named shape.

The model (no transformers): token embedding, per layer RMSNorm -> q/k/v projections with biases ->
rotate-half RoPE (theta 1e6) -> grouped-query attention through F.scaled_dot_product_attention ->
o projection, RMSNorm -> SwiGLU MLP; final RMSNorm; LM head tied to the embedding. Random init
(normal(0, 0.02) matrices, zero biases, unit norms), seeded.

Measured, each printed as one JSON line on stdout (progress on stderr):
  train     forward + mean token cross-entropy + backward + global-norm clip (1.0) + AdamW
            (fused on CUDA) over B x T tokens; bf16 autocast over fp32 weights on CUDA, fp32 on CPU;
            the engine's optimizer settings (lr 1e-4, betas 0.9/0.95, eps 1e-8, weight decay 0.1).
  generate  P prompts of L tokens, N new tokens each with a KV cache, every row exactly N tokens
            (no EOS); greedy (default) or sampled (--temperature > 0). On CUDA the weights are a
            bf16 copy (as a bf16 checkpoint loads), on CPU fp32.
Rows: "eager", then "compile" (torch.compile; a failure is reported as the row's "error").
Peak memory: torch.cuda.max_memory_allocated / max_memory_reserved per phase on CUDA (generation
runs first, without the optimizer, so its peak is weights + KV cache); peak RSS on CPU (monotone
over the process: the train row's includes generation's).

  python3 bench/torch_scale.py --shape qwen2.5-0.5b --device cuda [--what generate,train] [--compile on|off]
"""
import argparse
import json
import math
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_train import RMSNorm, rope_tables, rotate_half  # the same layers as the CPU training reference

# The published Qwen2.5-0.5B config (hidden 896, 24 layers, 14 heads, 2 KV heads, MLP 4864, vocab
# 151,936, q/k/v biases, tied embeddings, rope_theta 1e6, rms_norm_eps 1e-6), and a tiny shape of the
# same architecture for CPU smoke tests. src/bench/scale.ts has the same table.
SHAPES = {
    "qwen2.5-0.5b": dict(vocab=151936, hidden=896, inter=4864, layers=24, heads=14, kv_heads=2, rope_theta=1e6, eps=1e-6,
                         batch=8, seq=1024, prompts=64, prompt_len=64, new_tokens=512),
    "tiny": dict(vocab=512, hidden=64, inter=172, layers=2, heads=4, kv_heads=2, rope_theta=1e6, eps=1e-6,
                 batch=4, seq=64, prompts=8, prompt_len=16, new_tokens=32),
}


def log(msg):
    print(f"[torch_scale] {msg}", file=sys.stderr, flush=True)


def sdpa_gqa(q, k, v, causal, mask=None):
    """q (B, H, Tq, D), k/v (B, KVH, Tk, D): grouped-query attention through SDPA."""
    rep = q.shape[1] // k.shape[1]
    if rep > 1:
        try:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=True)
        except TypeError:  # torch < 2.5: no enable_gqa
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


class Block(nn.Module):
    def __init__(self, s):
        super().__init__()
        C, H, KVH, I = s["hidden"], s["heads"], s["kv_heads"], s["inter"]
        D = C // H
        self.H, self.KVH, self.D = H, KVH, D
        self.input_layernorm = RMSNorm(C, s["eps"])
        self.q_proj = nn.Linear(C, H * D, bias=True)
        self.k_proj = nn.Linear(C, KVH * D, bias=True)
        self.v_proj = nn.Linear(C, KVH * D, bias=True)
        self.o_proj = nn.Linear(H * D, C, bias=False)
        self.post_attention_layernorm = RMSNorm(C, s["eps"])
        self.gate_proj = nn.Linear(C, I, bias=False)
        self.up_proj = nn.Linear(C, I, bias=False)
        self.down_proj = nn.Linear(I, C, bias=False)

    def qkv(self, x, cos, sin):
        B, T, _ = x.shape
        h = self.input_layernorm(x)
        q = self.q_proj(h).view(B, T, self.H, self.D).transpose(1, 2)
        k = self.k_proj(h).view(B, T, self.KVH, self.D).transpose(1, 2)
        v = self.v_proj(h).view(B, T, self.KVH, self.D).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        return q, k, v

    def rest(self, x, att):
        B, _, T, _ = att.shape
        x = x + self.o_proj(att.transpose(1, 2).reshape(B, T, -1))
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))

    def forward(self, x, cos, sin):
        q, k, v = self.qkv(x, cos, sin)
        return self.rest(x, sdpa_gqa(q, k, v, causal=True))


class Qwen2(nn.Module):
    def __init__(self, s, max_pos):
        super().__init__()
        self.s = s
        self.embed_tokens = nn.Embedding(s["vocab"], s["hidden"])
        self.layers = nn.ModuleList([Block(s) for _ in range(s["layers"])])
        self.norm = RMSNorm(s["hidden"], s["eps"])
        for name, p in self.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
        cos, sin = rope_tables(max_pos, s["hidden"] // s["heads"], s["rope_theta"])
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def logits(self, h):
        return F.linear(self.norm(h), self.embed_tokens.weight)  # tied LM head

    def forward(self, tokens):
        T = tokens.shape[1]
        cos, sin = self.cos[:T].to(self.embed_tokens.weight.dtype), self.sin[:T].to(self.embed_tokens.weight.dtype)
        x = self.embed_tokens(tokens)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.logits(x)


class Generator:
    """Fixed-length generation with a preallocated KV cache (B, KVH, L + N, D) per layer.

    eager: prefill with causal SDPA over the prompt, then one token per step attending to the cache's
    filled prefix. static: every decode step attends to the whole cache with a mask of the filled
    positions and writes with index_copy_ at a position tensor, so that torch.compile sees one shape.
    """

    def __init__(self, model, B, L, N, temperature, seed, static=False):
        self.m, self.B, self.L, self.N, self.temperature, self.static = model, B, L, N, temperature, static
        s = model.s
        dev, dt = model.embed_tokens.weight.device, model.embed_tokens.weight.dtype
        D = s["hidden"] // s["heads"]
        self.k = [torch.zeros(B, s["kv_heads"], L + N, D, device=dev, dtype=dt) for _ in range(s["layers"])]
        self.v = [torch.zeros_like(t) for t in self.k]
        self.gen = torch.Generator(device=dev).manual_seed(seed)
        self.step_fn = self._decode_static if static else self._decode_eager

    def _sample(self, logits):
        if self.temperature <= 0:
            return logits.argmax(-1)
        probs = torch.softmax(logits.float() / self.temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=self.gen).squeeze(-1)

    def _rope(self, pos, T):
        dt = self.m.embed_tokens.weight.dtype
        return self.m.cos[pos:pos + T].to(dt), self.m.sin[pos:pos + T].to(dt)

    def prefill(self, prompts):
        m, L = self.m, self.L
        cos, sin = self._rope(0, L)
        x = m.embed_tokens(prompts)
        for i, layer in enumerate(m.layers):
            q, k, v = layer.qkv(x, cos, sin)
            self.k[i][:, :, :L] = k
            self.v[i][:, :, :L] = v
            x = layer.rest(x, sdpa_gqa(q, k, v, causal=True))
        return self._sample(m.logits(x[:, -1]))

    def _decode_eager(self, tok, pos):
        m = self.m
        cos, sin = self._rope(pos, 1)
        x = m.embed_tokens(tok[:, None])
        for i, layer in enumerate(m.layers):
            q, k, v = layer.qkv(x, cos, sin)
            self.k[i][:, :, pos:pos + 1] = k
            self.v[i][:, :, pos:pos + 1] = v
            x = layer.rest(x, sdpa_gqa(q, self.k[i][:, :, :pos + 1], self.v[i][:, :, :pos + 1], causal=False))
        return self._sample(m.logits(x[:, -1]))

    def _decode_static(self, tok, pos_t):
        m = self.m
        dt = m.embed_tokens.weight.dtype
        cos, sin = m.cos.index_select(0, pos_t).to(dt), m.sin.index_select(0, pos_t).to(dt)
        mask = (torch.arange(self.L + self.N, device=tok.device) <= pos_t)[None, None, None, :]
        x = m.embed_tokens(tok[:, None])
        for i, layer in enumerate(m.layers):
            q, k, v = layer.qkv(x, cos, sin)
            self.k[i].index_copy_(2, pos_t, k)
            self.v[i].index_copy_(2, pos_t, v)
            x = layer.rest(x, sdpa_gqa(q, self.k[i], self.v[i], causal=False, mask=mask))
        return self._sample(m.logits(x[:, -1]))

    @torch.no_grad()
    def run(self, prompts):
        tok = self.prefill(prompts)
        out = [tok]
        for j in range(1, self.N):
            pos = self.L + j - 1
            if self.static:
                tok = self.step_fn(tok, torch.tensor([pos], device=tok.device)).clone()
            else:
                tok = self.step_fn(tok, pos)
            out.append(tok)
        return torch.stack(out, dim=1)


def sync(dev):
    if dev == "cuda":
        torch.cuda.synchronize()


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def mem_fields(dev):
    if dev == "cuda":
        return {"peakAllocatedMB": torch.cuda.max_memory_allocated() / 2**20, "peakReservedMB": torch.cuda.max_memory_reserved() / 2**20}
    return {"maxRssMB": rss_mb()}


def reset_mem(dev):
    if dev == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def measure_generate(a, s, dev, mode, base):
    P, L, N = a.prompts, a.prompt_len, a.new_tokens
    torch.manual_seed(a.seed)
    with torch.device(dev):  # initialised where it runs (no 0.5B host init and copy)
        model = Qwen2(s, L + N)
    if dev == "cuda":
        model = model.to(torch.bfloat16)
    model.eval()
    g = torch.Generator().manual_seed(a.seed + 2)
    prompts = torch.randint(3, s["vocab"], (P, L), generator=g).to(dev)
    gen = Generator(model, P, L, N, a.temperature, a.seed + 3, static=(mode == "compile"))
    if mode == "compile":
        for t in gen.k + gen.v:  # the caches are written in place: fixed addresses for CUDA graphs
            torch._dynamo.mark_static_address(t)
        gen.step_fn = torch.compile(gen.step_fn, mode="reduce-overhead" if dev == "cuda" else "default", dynamic=False)
    reset_mem(dev)
    t0 = time.perf_counter()
    gen.run(prompts)  # warm-up (and compilation)
    sync(dev)
    warm = time.perf_counter() - t0
    times = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        ids = gen.run(prompts)
        sync(dev)
        times.append(time.perf_counter() - t0)
    assert ids.shape == (P, N), ids.shape
    sec = median(times)
    row = {**base, "phase": "generate", "mode": mode, "prompts": P, "promptLen": L, "newTokens": N,
           "temperature": a.temperature, "seconds": sec, "secondsRuns": [round(t, 4) for t in times],
           "warmupSeconds": warm, "tokensPerSecond": P * N / sec, "ids0": ids[0, :8].tolist(), **mem_fields(dev)}
    del gen, model
    return row


def measure_train(a, s, dev, mode, base):
    B, T = a.batch, a.seq
    torch.manual_seed(a.seed)
    with torch.device(dev):
        model = Qwen2(s, T)
    fused = dev == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, **({"fused": True} if fused else {}))
    g = torch.Generator().manual_seed(a.seed + 1)
    data = torch.randint(3, s["vocab"], (B, T + 1), generator=g).to(dev)
    inp, tgt = data[:, :-1].contiguous(), data[:, 1:].contiguous()
    fwd = torch.compile(model) if mode == "compile" else model

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=(dev == "cuda")):
            logits = fwd(inp)
            loss = F.cross_entropy(logits.view(-1, s["vocab"]).float(), tgt.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    reset_mem(dev)
    t0 = time.perf_counter()
    for _ in range(a.warmup):
        loss = step()
    sync(dev)
    warm = time.perf_counter() - t0
    times = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        loss = step()
        sync(dev)
        times.append(time.perf_counter() - t0)
    sec = median(times)
    row = {**base, "phase": "train", "mode": mode, "batch": B, "seq": T, "seconds": sec, "secondsRuns": [round(t, 4) for t in times],
           "warmupSeconds": warm, "tokensPerSecond": B * T / sec, "loss": float(loss.item()), "fusedAdamW": fused,
           "autocast": "bf16" if dev == "cuda" else None, **mem_fields(dev)}
    del opt, model, fwd
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="qwen2.5-0.5b", choices=sorted(SHAPES))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--what", default="generate,train", help="comma-separated: generate, train")
    p.add_argument("--compile", default="on", choices=["on", "off"], help="also the torch.compile rows (default on)")
    p.add_argument("--batch", type=int, help="train: sequences per step (shape default)")
    p.add_argument("--seq", type=int, help="train: tokens per sequence (shape default)")
    p.add_argument("--prompts", type=int, help="generate: prompts (shape default)")
    p.add_argument("--prompt-len", type=int, help="generate: tokens per prompt (shape default)")
    p.add_argument("--new-tokens", type=int, help="generate: new tokens per prompt, exactly (shape default)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 greedy (default); > 0 sampled")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions (median)")
    p.add_argument("--warmup", type=int, default=1, help="train: untimed steps first")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, help="CPU threads (default torch's)")
    a = p.parse_args()
    s = SHAPES[a.shape]
    for k in ("batch", "seq", "prompts", "prompt_len", "new_tokens"):
        v = getattr(a, k)
        if v is None:
            setattr(a, k, s[k])
        elif v < 1:
            p.error(f"--{k.replace('_', '-')} must be an integer >= 1, got {v}")
    if a.reps < 1:
        p.error(f"--reps must be an integer >= 1, got {a.reps}")
    what = [w for w in a.what.split(",") if w]
    bad = [w for w in what if w not in ("generate", "train")]
    if bad or not what:
        p.error(f"--what must list generate and/or train, got {a.what!r}")
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device")
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = a.device
    with torch.device("meta"):
        n_params = sum(x.numel() for x in Qwen2(s, 1).parameters())
    base = {"impl": "torch", "torch": torch.__version__, "device": dev, "shape": a.shape, "params": n_params,
            "gpu": torch.cuda.get_device_name() if dev == "cuda" else None, "threads": torch.get_num_threads()}
    modes = ["eager"] + (["compile"] if a.compile == "on" else [])
    for mode in modes:
        for w in [w for w in ("generate", "train") if w in what]:  # generation first: its peak before the optimizer's state
            log(f"{w} {mode} ({a.shape}, {dev})")
            t0 = time.perf_counter()
            try:
                row = measure_generate(a, s, dev, mode, base) if w == "generate" else measure_train(a, s, dev, mode, base)
            except Exception as e:  # report, go on: the eager rows stand without the compiled ones
                msg = f"{type(e).__name__}: {e}".splitlines()[0][:400]
                if mode == "eager":
                    raise
                row = {**base, "phase": w, "mode": mode, "error": msg}
            row["wallSeconds"] = time.perf_counter() - t0
            if dev == "cuda":
                torch.cuda.empty_cache()
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
