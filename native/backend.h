// The backend seam: one small interface that every device implements (ggml-style).
// Memory (alloc/free/upload/download) plus the op table of kernels.h. Callers (the binding,
// the model) call ops only through a Backend, so the CUDA twins slot in without touching them.
// Pointers passed to ops live in the backend's memory; for the CPU that is host memory.
#pragma once
#include <cstddef>

#include "kernels.h"

namespace wst {

// The op list: every op of kernels.h that a backend implements, named once. The Backend struct
// below, the CPU and CUDA tables (filled by name, so two ops of one signature cannot be swapped)
// and the CUDA declarations are generated from it. Adding an op: add it here, write its CPU kernel
// (kernels.h, native/cpu/), its CUDA twin (native/cuda/, and its staging wrapper st_<op>), its
// TypeScript wrapper (src/kernels/) and its checks (native/tests/, test/).
#define WST_BACKEND_OPS(X) \
  X(sgemm) X(attention_forward) X(attention_backward) X(attention_decode) \
  X(rmsnorm_forward) X(rmsnorm_backward) X(rope_forward) X(rope_backward) \
  X(swiglu_forward) X(swiglu_backward) X(embedding_forward) X(embedding_backward) \
  X(residual_forward) X(residual_backward) X(softmax_forward) X(log_softmax_forward) \
  X(token_logprobs_forward) X(token_logprobs_backward) X(crossentropy_forward) X(crossentropy_backward) \
  X(sample_tokens) X(grpo_loss) X(adamw_update) X(sum_squares) \
  X(scale_inplace) X(gemm_bf16) X(sgemm_tf32) X(attention_forward_bf16) \
  X(copy_rows) X(attention_decode_shared) X(cast_bf16)

struct Backend {
  const char* name;    // "cpu" or "cuda"
  bool host_memory;    // true when op pointers are plain host pointers (no copies needed)
  // Capabilities the model schedules by (never the name):
  //  - concurrent_pieces: small work runs faster as concurrent single-threaded pieces (training
  //    lanes, prefill parts, decode shards) and prompts' activations can be kept for reuse (the
  //    prompt store): true for the CPU, false for one device queue;
  //  - transposed_decode_weights: decode reads a transposed copy of the linear weights (the CPU
  //    kernels' layout for single-row products).
  bool concurrent_pieces;
  bool transposed_decode_weights;
  void* (*alloc)(size_t bytes);
  void (*free)(void* ptr);
  void (*upload)(void* dst, const void* host_src, size_t bytes);
  void (*download)(void* host_dst, const void* src, size_t bytes);
  void (*synchronize)();
  void (*copy)(void* dst, const void* src, size_t bytes);  // within the backend's memory
  void (*zero)(void* dst, size_t bytes);

#define WST_BACKEND_OP_FIELD(op) decltype(&::wst::op) op;
  WST_BACKEND_OPS(WST_BACKEND_OP_FIELD)
#undef WST_BACKEND_OP_FIELD
};

const Backend& cpu_backend();

}  // namespace wst
