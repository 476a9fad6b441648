#include "util.h"

namespace wst::binding {

// TODO(helper): bind the optim ops.
void register_optim(Napi::Env env, Napi::Object exports) { (void)env; (void)exports; }

}  // namespace wst::binding
