#include <cstdlib>
#include <cstring>
#include <new>

#include "../backend.h"

namespace wst {
namespace {
void* host_alloc(size_t bytes) {
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
  if (!p) throw std::bad_alloc();
  return p;
}
void host_free(void* p) { std::free(p); }
void host_copy(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
void host_sync() {}
void host_zero(void* p, size_t bytes) { std::memset(p, 0, bytes); }
}  // namespace

const Backend& cpu_backend() {
  static const Backend b = {
      "cpu", true, host_alloc, host_free, host_copy, host_copy, host_sync, host_copy, host_zero,
      sgemm, attention_forward, attention_backward, attention_decode,
      rmsnorm_forward, rmsnorm_backward, rope_forward, rope_backward,
      swiglu_forward, swiglu_backward, embedding_forward, embedding_backward,
      residual_forward, residual_backward, softmax_forward, log_softmax_forward,
      token_logprobs_forward, token_logprobs_backward, crossentropy_forward,
      crossentropy_backward, sample_tokens, grpo_loss, adamw_update, sum_squares, scale_inplace,
      gemm_bf16, sgemm_tf32, attention_forward_bf16, copy_rows, attention_decode_shared,
  };
  return b;
}

}  // namespace wst
