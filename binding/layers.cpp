#include "util.h"

namespace wst::binding {

// TODO(helper): bind the layers ops.
void register_layers(Napi::Env env, Napi::Object exports) { (void)env; (void)exports; }

}  // namespace wst::binding
