#include "util.h"

namespace wst::binding {

// TODO(helper): bind the attention ops.
void register_attention(Napi::Env env, Napi::Object exports) { (void)env; (void)exports; }

}  // namespace wst::binding
