#include "util.h"

namespace wst::binding {

// TODO(helper): bind the losses ops.
void register_losses(Napi::Env env, Napi::Object exports) { (void)env; (void)exports; }

}  // namespace wst::binding
