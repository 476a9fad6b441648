// The backend seam: one small interface that every device implements (ggml-style).
// Memory (alloc/free/upload/download) plus the op table of kernels.h. Callers (the binding,
// the model) call ops only through a Backend, so the CUDA twins slot in without touching them.
// Pointers passed to ops live in the backend's memory; for the CPU that is host memory.
#pragma once
#include <cstddef>

#include "kernels.h"

namespace wst {

struct Backend {
  const char* name;    // "cpu" or "cuda"
  bool host_memory;    // true when op pointers are plain host pointers (no copies needed)
  void* (*alloc)(size_t bytes);
  void (*free)(void* ptr);
  void (*upload)(void* dst, const void* host_src, size_t bytes);
  void (*download)(void* host_dst, const void* src, size_t bytes);
  void (*synchronize)();
  void (*copy)(void* dst, const void* src, size_t bytes);  // within the backend's memory
  void (*zero)(void* dst, size_t bytes);

  decltype(&::wst::sgemm) sgemm;
  decltype(&::wst::attention_forward) attention_forward;
  decltype(&::wst::attention_backward) attention_backward;
  decltype(&::wst::attention_decode) attention_decode;
  decltype(&::wst::rmsnorm_forward) rmsnorm_forward;
  decltype(&::wst::rmsnorm_backward) rmsnorm_backward;
  decltype(&::wst::rope_forward) rope_forward;
  decltype(&::wst::rope_backward) rope_backward;
  decltype(&::wst::swiglu_forward) swiglu_forward;
  decltype(&::wst::swiglu_backward) swiglu_backward;
  decltype(&::wst::embedding_forward) embedding_forward;
  decltype(&::wst::embedding_backward) embedding_backward;
  decltype(&::wst::residual_forward) residual_forward;
  decltype(&::wst::residual_backward) residual_backward;
  decltype(&::wst::softmax_forward) softmax_forward;
  decltype(&::wst::log_softmax_forward) log_softmax_forward;
  decltype(&::wst::token_logprobs_forward) token_logprobs_forward;
  decltype(&::wst::token_logprobs_backward) token_logprobs_backward;
  decltype(&::wst::crossentropy_forward) crossentropy_forward;
  decltype(&::wst::crossentropy_backward) crossentropy_backward;
  decltype(&::wst::sample_tokens) sample_tokens;
  decltype(&::wst::grpo_loss) grpo_loss;
  decltype(&::wst::adamw_update) adamw_update;
  decltype(&::wst::sum_squares) sum_squares;
  decltype(&::wst::scale_inplace) scale_inplace;
  decltype(&::wst::gemm_bf16) gemm_bf16;
  decltype(&::wst::sgemm_tf32) sgemm_tf32;
  decltype(&::wst::attention_forward_bf16) attention_forward_bf16;
  decltype(&::wst::copy_rows) copy_rows;
  decltype(&::wst::attention_decode_shared) attention_decode_shared;
};

const Backend& cpu_backend();

}  // namespace wst
