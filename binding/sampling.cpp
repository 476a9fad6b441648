#include "util.h"

namespace wst::binding {

// TODO(helper): bind the sampling ops.
void register_sampling(Napi::Env env, Napi::Object exports) { (void)env; (void)exports; }

}  // namespace wst::binding
