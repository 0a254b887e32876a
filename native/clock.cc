// A clock JavaScript reads without allocating. Node 20's performance.now()
// returns a fresh heap number on every call (its binding has no fast path),
// and the polling strategies read the clock several times per request: at
// depth 1 those numbers were most of what the library allocated per request.
// clockCreate(cell) returns a function that writes CLOCK_MONOTONIC, in ms,
// into cell[0] and returns undefined; the caller reads the cell, an unboxed
// double in optimised code.
#include <time.h>

#include "util.h"

namespace vhost_user {
namespace {

// The cell's array, held while the function that writes into it lives.
struct ClockCell {
  double* out = nullptr;
  napi_ref array = nullptr;
};

napi_value ClockTick(napi_env env, napi_callback_info info) {
  void* data = nullptr;
  if (napi_get_cb_info(env, info, nullptr, nullptr, nullptr, &data) != napi_ok) {
    ThrowNapiFailure(env, "napi_get_cb_info");
    return nullptr;
  }
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  *static_cast<ClockCell*>(data)->out =
      static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
  return nullptr;
}

void FinalizeCell(napi_env env, void* data, void* /*hint*/) {
  ClockCell* cell = static_cast<ClockCell*>(data);
  if (cell->array != nullptr) napi_delete_reference(env, cell->array);
  delete cell;
}

napi_value ClockCreate(napi_env env, napi_callback_info info) {
  static const char* const names[] = {"cell"};
  napi_value argv[1];
  if (!GetArgs(env, info, 1, argv, names)) return nullptr;
  bool is_typedarray = false;
  VU_NAPI_CALL(env, napi_is_typedarray(env, argv[0], &is_typedarray));
  napi_typedarray_type type = napi_uint8_array;
  size_t length = 0;
  void* data = nullptr;
  if (is_typedarray) {
    VU_NAPI_CALL(env, napi_get_typedarray_info(env, argv[0], &type, &length,
                                               &data, nullptr, nullptr));
  }
  if (!is_typedarray || type != napi_float64_array) {
    ThrowArgType(env, "cell", "a Float64Array");
    return nullptr;
  }
  if (length < 1) {
    ThrowArgValue(env, "cell", "must have at least one element");
    return nullptr;
  }
  ClockCell* cell = new ClockCell();
  cell->out = static_cast<double*>(data);
  napi_value tick;
  if (napi_create_function(env, "tick", NAPI_AUTO_LENGTH, ClockTick, cell,
                           &tick) != napi_ok) {
    delete cell;
    ThrowNapiFailure(env, "napi_create_function");
    return nullptr;
  }
  if (napi_add_finalizer(env, tick, cell, FinalizeCell, nullptr, nullptr) !=
      napi_ok) {
    delete cell;
    ThrowNapiFailure(env, "napi_add_finalizer");
    return nullptr;
  }
  // From here the finalizer owns the cell. A Float64Array's buffer cannot be
  // detached or shrunk by JavaScript unless it is transferred; the reference
  // keeps it from being collected while the function lives.
  VU_NAPI_CALL(env, napi_create_reference(env, argv[0], 1, &cell->array));
  return tick;
}

}  // namespace

bool RegisterClock(napi_env env, napi_value exports) {
  return ExportFunction(env, exports, "clockCreate", ClockCreate);
}

}  // namespace vhost_user
