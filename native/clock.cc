// A clock JavaScript reads without allocating. Node 20's performance.now()
// returns a fresh heap number on every call (its binding has no fast path),
// and the polling strategies read the clock several times per request: at
// depth 1 those numbers were most of what the library allocated per request.
//
// clockCreate() returns { tick, cell }: tick() writes CLOCK_MONOTONIC, in ms,
// into cell[0] and returns undefined; the caller reads the cell, an unboxed
// double in optimised code. The cell's 8 bytes are allocated here and never
// freed: a view of them may outlive the function and the environment (Node
// copies an external buffer that is transferred rather than detach it). A
// cell passed and checked on every call instead would cost 80-95 ns a read
// against 37.
#include <time.h>

#include "util.h"

namespace vhost_user {
namespace {

napi_value ClockTick(napi_env env, napi_callback_info info) {
  void* data = nullptr;
  VU_NAPI_CALL(env,
               napi_get_cb_info(env, info, nullptr, nullptr, nullptr, &data));
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  *static_cast<double*>(data) = static_cast<double>(ts.tv_sec) * 1e3 +
                                static_cast<double>(ts.tv_nsec) / 1e6;
  return nullptr;
}

napi_value ClockCreate(napi_env env, napi_callback_info /*info*/) {
  double* cell = new double(0);  // never freed (see above)
  napi_value buffer, array, tick, result;
  VU_NAPI_CALL(env, napi_create_external_arraybuffer(env, cell, sizeof *cell,
                                                     nullptr, nullptr, &buffer));
  VU_NAPI_CALL(env, napi_create_typedarray(env, napi_float64_array, 1, buffer,
                                           0, &array));
  VU_NAPI_CALL(env, napi_create_function(env, "tick", NAPI_AUTO_LENGTH,
                                         ClockTick, cell, &tick));
  VU_NAPI_CALL(env, napi_create_object(env, &result));
  VU_NAPI_CALL(env, napi_set_named_property(env, result, "tick", tick));
  VU_NAPI_CALL(env, napi_set_named_property(env, result, "cell", array));
  return result;
}

}  // namespace

bool RegisterClock(napi_env env, napi_value exports) {
  return ExportFunction(env, exports, "clockCreate", ClockCreate);
}

}  // namespace vhost_user
