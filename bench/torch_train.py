#!/usr/bin/env python3
"""PyTorch CPU reference for the training-step benchmark (bench/archive/NOTES-2026-11.md, "Model speed").

The same Llama architecture as the engine (RMSNorm, rotate-half RoPE, GQA causal attention,
SwiGLU MLP, tied or untied LM head), in plain torch (no transformers), trained with the same
step: forward -> mean token cross-entropy -> backward -> global-norm clip (1.0) -> AdamW
(torch.optim.AdamW, its default implementation in this torch).

One-shot:  python3 bench/torch_train.py --threads 1 [--steps 5 --warmup 2] [shape flags]
           -> one JSON line {"ms_per_step": median, "tokens_per_s": ..., "times_ms": [...]}
Serve:     python3 bench/torch_train.py --serve [shape flags]
           reads lines "STEPS THREADS" on stdin, runs that many timed steps at that thread count,
           answers one JSON line per request (lets a driver interleave with the engine's runs).
"""
import argparse
import json
import math
import sys
import time

import ctypes

import torch
import torch.nn as nn
import torch.nn.functional as F

# Debian's torch does its matmuls in OpenBLAS (pthreads build), whose pool torch.set_num_threads
# does not size: without this, "1 thread" still multiplies on every core.
try:
    _openblas = ctypes.CDLL("libopenblas.so.0")
    _openblas.openblas_get_corename.restype = ctypes.c_char_p
except OSError:
    _openblas = None


def set_threads(n):
    torch.set_num_threads(n)
    if _openblas is not None:
        _openblas.openblas_set_num_threads(n)


def blas_info():
    if _openblas is None:
        return None
    return {"openblas_core": _openblas.openblas_get_corename().decode(), "openblas_threads": _openblas.openblas_get_num_threads()}


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        # In float32 whatever x's dtype (bf16 activations in bench/torch_scale.py); a no-op for fp32.
        dt = x.dtype
        x = x.float()
        return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)).to(dt) * self.weight.to(dt)


def rope_tables(T, Dh, theta):
    inv = 1.0 / (theta ** (torch.arange(0, Dh, 2, dtype=torch.float32) / Dh))
    freqs = torch.outer(torch.arange(T, dtype=torch.float32), inv)
    emb = torch.cat([freqs, freqs], dim=-1)  # (T, Dh), Hugging Face rotate-half layout
    return emb.cos(), emb.sin()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


class Block(nn.Module):
    def __init__(self, a):
        super().__init__()
        C, H, KVH, Dh, I = a.hidden, a.heads, a.kv_heads, a.hidden // a.heads, a.inter
        self.H, self.KVH, self.Dh = H, KVH, Dh
        self.attn_norm = RMSNorm(C, a.eps)
        self.q = nn.Linear(C, H * Dh, bias=False)
        self.k = nn.Linear(C, KVH * Dh, bias=False)
        self.v = nn.Linear(C, KVH * Dh, bias=False)
        self.o = nn.Linear(H * Dh, C, bias=False)
        self.ffn_norm = RMSNorm(C, a.eps)
        self.gate = nn.Linear(C, I, bias=False)
        self.up = nn.Linear(C, I, bias=False)
        self.down = nn.Linear(I, C, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, C = x.shape
        h = self.attn_norm(x)
        q = self.q(h).view(B, T, self.H, self.Dh).transpose(1, 2)
        k = self.k(h).view(B, T, self.KVH, self.Dh).transpose(1, 2)
        v = self.v(h).view(B, T, self.KVH, self.Dh).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if self.KVH != self.H:
            rep = self.H // self.KVH
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        if hasattr(F, "scaled_dot_product_attention"):
            att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # torch < 2.0
            s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(self.Dh)) + mask
            att = torch.softmax(s, dim=-1) @ v
        x = x + self.o(att.transpose(1, 2).reshape(B, T, -1))
        h = self.ffn_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Llama(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.embed = nn.Embedding(a.vocab, a.hidden)
        self.layers = nn.ModuleList([Block(a) for _ in range(a.layers)])
        self.norm = RMSNorm(a.hidden, a.eps)
        self.lm_head = nn.Linear(a.hidden, a.vocab, bias=False)
        if a.tied:
            self.lm_head.weight = self.embed.weight
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)
        cos, sin = rope_tables(a.seq, a.hidden // a.heads, a.rope_theta)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.register_buffer("mask", torch.full((a.seq, a.seq), float("-inf")).triu(1), persistent=False)

    def forward(self, tokens):
        x = self.embed(tokens)
        for layer in self.layers:
            x = layer(x, self.cos, self.sin, self.mask)
        return self.lm_head(self.norm(x))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--inter", type=int, default=1536)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--tied", type=int, default=1)
    p.add_argument("--eps", type=float, default=1e-5)
    p.add_argument("--rope-theta", type=float, default=10000.0)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--serve", action="store_true")
    a = p.parse_args()

    torch.manual_seed(a.seed)
    set_threads(a.threads)
    model = Llama(a)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    g = torch.Generator().manual_seed(a.seed + 1)
    data = torch.randint(0, a.vocab, (a.batch, a.seq + 1), generator=g)
    inp, tgt = data[:, :-1].contiguous(), data[:, 1:].contiguous()

    def step():
        logits = model(inp)
        loss = F.cross_entropy(logits.view(-1, a.vocab), tgt.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # as the engine's step (max norm 1)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    def timed(n):
        times, cpu = [], []
        for _ in range(n):
            t0, c0 = time.perf_counter(), time.process_time()
            step()
            times.append((time.perf_counter() - t0) * 1e3)
            cpu.append((time.process_time() - c0) * 1e3)
        return times, cpu

    n_params = sum(p.numel() for p in model.parameters())
    try:  # the SIMD level of torch's own CPU kernels (ATEN_CPU_CAPABILITY lowers it)
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:
        capability = None
    info = {"torch": torch.__version__, "cpu_capability": capability, "params": n_params, "batch": a.batch, "seq": a.seq}

    def report(tc, threads):
        times, cpu = tc
        ms = sorted(times)[len(times) // 2]
        return {**info, "threads": threads, "torch_threads": torch.get_num_threads(), "blas": blas_info(), "ms_per_step": ms,
                "cpu_ms_per_step": sorted(cpu)[len(cpu) // 2],
                "tokens_per_s": a.batch * a.seq / (ms / 1e3), "times_ms": [round(t, 3) for t in times],
                "cpu_times_ms": [round(t, 3) for t in cpu]}

    if a.serve:
        for _ in range(a.warmup):
            step()
        print(json.dumps({"ready": True, **info, "blas": blas_info()}), flush=True)
        for line in sys.stdin:
            parts = line.split()
            if not parts:
                continue
            n, threads = int(parts[0]), int(parts[1]) if len(parts) > 1 else a.threads
            set_threads(threads)
            print(json.dumps(report(timed(n), threads)), flush=True)
        return

    for _ in range(a.warmup):
        step()
    print(json.dumps(report(timed(a.steps), a.threads)), flush=True)


if __name__ == "__main__":
    main()
