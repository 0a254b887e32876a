// Argument validation and error helpers shared by all entry points.
#include "util.h"

#include <uv.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>

namespace vhost_user {

namespace {

constexpr double kMaxSafeInteger = 9007199254740991.0;  // 2^53 - 1

struct ErrnoEntry {
  int value;
  const char* name;
};

#define VU_ERRNO(e) {e, #e}
const ErrnoEntry kErrnoNames[] = {
    VU_ERRNO(EPERM),        VU_ERRNO(ENOENT),      VU_ERRNO(ESRCH),
    VU_ERRNO(EINTR),        VU_ERRNO(EIO),         VU_ERRNO(ENXIO),
    VU_ERRNO(E2BIG),        VU_ERRNO(ENOEXEC),     VU_ERRNO(EBADF),
    VU_ERRNO(ECHILD),       VU_ERRNO(EAGAIN),      VU_ERRNO(ENOMEM),
    VU_ERRNO(EACCES),       VU_ERRNO(EFAULT),      VU_ERRNO(EBUSY),
    VU_ERRNO(EEXIST),       VU_ERRNO(EXDEV),       VU_ERRNO(ENODEV),
    VU_ERRNO(ENOTDIR),      VU_ERRNO(EISDIR),      VU_ERRNO(EINVAL),
    VU_ERRNO(ENFILE),       VU_ERRNO(EMFILE),      VU_ERRNO(ENOTTY),
    VU_ERRNO(ETXTBSY),      VU_ERRNO(EFBIG),       VU_ERRNO(ENOSPC),
    VU_ERRNO(ESPIPE),       VU_ERRNO(EROFS),       VU_ERRNO(EMLINK),
    VU_ERRNO(EPIPE),        VU_ERRNO(EDOM),        VU_ERRNO(ERANGE),
    VU_ERRNO(EDEADLK),      VU_ERRNO(ENAMETOOLONG), VU_ERRNO(ENOLCK),
    VU_ERRNO(ENOSYS),       VU_ERRNO(ENOTEMPTY),   VU_ERRNO(ELOOP),
    VU_ERRNO(ENOMSG),       VU_ERRNO(EOVERFLOW),   VU_ERRNO(EILSEQ),
    VU_ERRNO(ENOTSOCK),     VU_ERRNO(EDESTADDRREQ), VU_ERRNO(EMSGSIZE),
    VU_ERRNO(EPROTOTYPE),   VU_ERRNO(ENOPROTOOPT), VU_ERRNO(EPROTONOSUPPORT),
    VU_ERRNO(EOPNOTSUPP),   VU_ERRNO(EAFNOSUPPORT), VU_ERRNO(EADDRINUSE),
    VU_ERRNO(EADDRNOTAVAIL), VU_ERRNO(ENETDOWN),   VU_ERRNO(ENETUNREACH),
    VU_ERRNO(ECONNABORTED), VU_ERRNO(ECONNRESET),  VU_ERRNO(ENOBUFS),
    VU_ERRNO(EISCONN),      VU_ERRNO(ENOTCONN),    VU_ERRNO(ETIMEDOUT),
    VU_ERRNO(ECONNREFUSED), VU_ERRNO(EHOSTUNREACH), VU_ERRNO(EALREADY),
    VU_ERRNO(EINPROGRESS),  VU_ERRNO(ESTALE),      VU_ERRNO(EDQUOT),
    VU_ERRNO(ECANCELED),    VU_ERRNO(EOWNERDEAD),  VU_ERRNO(ENOTRECOVERABLE),
    VU_ERRNO(ENOTSUP),
};
#undef VU_ERRNO

bool TypeOf(napi_env env, napi_value value, napi_valuetype* type) {
  return napi_typeof(env, value, type) == napi_ok;
}

const char* TypeName(napi_env env, napi_value value) {
  napi_valuetype type;
  if (!TypeOf(env, value, &type)) return "an unknown value";
  switch (type) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return "type boolean";
    case napi_number: return "type number";
    case napi_string: return "type string";
    case napi_symbol: return "type symbol";
    case napi_object: return "an instance of Object";
    case napi_function: return "type function";
    case napi_external: return "an external";
    case napi_bigint: return "type bigint";
  }
  return "an unknown value";
}

void ThrowArgTypeReceived(napi_env env, const char* name, const char* expected,
                          napi_value value) {
  std::string msg = std::string("The \"") + name + "\" argument must be " +
                    expected + ". Received " +
                    (value != nullptr ? TypeName(env, value) : "undefined");
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg.c_str());
}

bool SetNamed(napi_env env, napi_value obj, const char* key, napi_value value) {
  return napi_set_named_property(env, obj, key, value) == napi_ok;
}

// Reads a number argument; throws TypeError for anything else.
bool GetNumber(napi_env env, napi_value value, const char* name, double* out) {
  napi_valuetype type;
  if (!TypeOf(env, value, &type) || type != napi_number) {
    ThrowArgTypeReceived(env, name, "of type number", value);
    return false;
  }
  if (napi_get_value_double(env, value, out) != napi_ok) {
    ThrowNapiFailure(env, "napi_get_value_double");
    return false;
  }
  return true;
}

std::string FormatNumber(double v) {
  char buf[64];
  snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

}  // namespace

std::string ErrnoName(int err) {
  for (const ErrnoEntry& entry : kErrnoNames) {
    if (entry.value == err) return entry.name;
  }
  return "E" + std::to_string(err);
}

napi_value MakeErrnoError(napi_env env, const char* syscall, int err) {
  const std::string code = ErrnoName(err);
  const std::string text = std::string(syscall) + ": " + strerror(err);
  napi_value code_value, msg_value, error, errno_value, syscall_value;
  if (napi_create_string_utf8(env, code.c_str(), NAPI_AUTO_LENGTH,
                              &code_value) != napi_ok ||
      napi_create_string_utf8(env, text.c_str(), NAPI_AUTO_LENGTH,
                              &msg_value) != napi_ok ||
      napi_create_error(env, code_value, msg_value, &error) != napi_ok ||
      napi_create_int32(env, err, &errno_value) != napi_ok ||
      napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH,
                              &syscall_value) != napi_ok ||
      !SetNamed(env, error, "errno", errno_value) ||
      !SetNamed(env, error, "syscall", syscall_value)) {
    return nullptr;
  }
  return error;
}

void ThrowErrno(napi_env env, const char* syscall, int err) {
  napi_value error = MakeErrnoError(env, syscall, err);
  if (error != nullptr) {
    napi_throw(env, error);
  } else {
    ThrowNapiFailure(env, "creating an errno error");
  }
}

void ThrowUvError(napi_env env, const char* syscall, int uv_err) {
  const std::string text = std::string(syscall) + ": " + uv_strerror(uv_err);
  napi_value code_value, msg_value, error, errno_value, syscall_value;
  if (napi_create_string_utf8(env, uv_err_name(uv_err), NAPI_AUTO_LENGTH,
                              &code_value) != napi_ok ||
      napi_create_string_utf8(env, text.c_str(), NAPI_AUTO_LENGTH,
                              &msg_value) != napi_ok ||
      napi_create_error(env, code_value, msg_value, &error) != napi_ok ||
      napi_create_int32(env, -uv_err, &errno_value) != napi_ok ||
      napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH,
                              &syscall_value) != napi_ok ||
      !SetNamed(env, error, "errno", errno_value) ||
      !SetNamed(env, error, "syscall", syscall_value)) {
    ThrowNapiFailure(env, "creating a libuv error");
    return;
  }
  napi_throw(env, error);
}

void ThrowArgType(napi_env env, const char* name, const char* expected) {
  std::string msg =
      std::string("The \"") + name + "\" argument must be " + expected;
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg.c_str());
}

void ThrowArgValue(napi_env env, const char* name, const std::string& why) {
  std::string msg = std::string("The \"") + name + "\" argument " + why;
  napi_throw_range_error(env, "ERR_INVALID_ARG_VALUE", msg.c_str());
}

void ThrowNapiFailure(napi_env env, const char* what) {
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) return;
  const napi_extended_error_info* info = nullptr;
  std::string msg = std::string("vhost-user native: ") + what + " failed";
  if (napi_get_last_error_info(env, &info) == napi_ok && info != nullptr &&
      info->error_message != nullptr) {
    msg += std::string(": ") + info->error_message;
  }
  napi_throw_error(env, "ERR_VHOST_USER_NAPI", msg.c_str());
}

bool GetArgs(napi_env env, napi_callback_info info, size_t count,
             napi_value* argv, const char* const* names,
             napi_value* this_arg) {
  size_t argc = count;
  VU_NAPI_CALL_BOOL(env,
                    napi_get_cb_info(env, info, &argc, argv, this_arg, nullptr));
  if (argc < count) {
    ThrowArgTypeReceived(env, names[argc], "provided", nullptr);
    return false;
  }
  return true;
}

bool GetInt32(napi_env env, napi_value value, const char* name, int32_t* out) {
  double v;
  if (!GetNumber(env, value, name, &v)) return false;
  if (!std::isfinite(v) || std::trunc(v) != v || v < INT32_MIN ||
      v > INT32_MAX) {
    ThrowArgValue(env, name, "must be an int32 integer. Received " +
                                 FormatNumber(v));
    return false;
  }
  *out = static_cast<int32_t>(v);
  return true;
}

bool GetFd(napi_env env, napi_value value, const char* name, int* out) {
  double v;
  if (!GetNumber(env, value, name, &v)) return false;
  if (!std::isfinite(v) || std::trunc(v) != v || v < 0 || v > INT32_MAX) {
    ThrowArgValue(env, name,
                  "must be a non-negative int32 file descriptor. Received " +
                      FormatNumber(v));
    return false;
  }
  *out = static_cast<int>(v);
  return true;
}

bool GetSafeInteger(napi_env env, napi_value value, const char* name,
                    int64_t* out) {
  double v;
  if (!GetNumber(env, value, name, &v)) return false;
  if (!std::isfinite(v) || std::trunc(v) != v || v < -kMaxSafeInteger ||
      v > kMaxSafeInteger) {
    ThrowArgValue(env, name,
                  "must be a safe integer. Received " + FormatNumber(v));
    return false;
  }
  *out = static_cast<int64_t>(v);
  return true;
}

bool GetSize(napi_env env, napi_value value, const char* name, uint64_t* out) {
  double v;
  if (!GetNumber(env, value, name, &v)) return false;
  if (!std::isfinite(v) || std::trunc(v) != v || v < 0 ||
      v > kMaxSafeInteger) {
    ThrowArgValue(env, name,
                  "must be a non-negative safe integer. Received " +
                      FormatNumber(v));
    return false;
  }
  *out = static_cast<uint64_t>(v);
  return true;
}

bool GetString(napi_env env, napi_value value, const char* name,
               std::string* out) {
  napi_valuetype type;
  if (!TypeOf(env, value, &type) || type != napi_string) {
    ThrowArgTypeReceived(env, name, "of type string", value);
    return false;
  }
  size_t length = 0;
  VU_NAPI_CALL_BOOL(env,
                    napi_get_value_string_utf8(env, value, nullptr, 0, &length));
  std::string result(length + 1, '\0');
  VU_NAPI_CALL_BOOL(env, napi_get_value_string_utf8(env, value, &result[0],
                                                    length + 1, &length));
  result.resize(length);
  if (result.find('\0') != std::string::npos) {
    ThrowArgValue(env, name, "must not contain null bytes");
    return false;
  }
  *out = std::move(result);
  return true;
}

bool GetBytes(napi_env env, napi_value value, const char* name, void** data,
              size_t* length) {
  bool is_typedarray = false;
  napi_typedarray_type type = napi_int8_array;
  if (napi_is_typedarray(env, value, &is_typedarray) != napi_ok ||
      !is_typedarray ||
      napi_get_typedarray_info(env, value, &type, length, data, nullptr,
                               nullptr) != napi_ok ||
      type != napi_uint8_array) {
    ThrowArgTypeReceived(env, name, "an instance of Uint8Array", value);
    return false;
  }
  return true;
}

bool GetFdArray(napi_env env, napi_value value, const char* name,
                size_t max_count, int* out, size_t* count) {
  bool is_array = false;
  if (napi_is_array(env, value, &is_array) != napi_ok || !is_array) {
    ThrowArgTypeReceived(env, name, "an instance of Array", value);
    return false;
  }
  uint32_t length = 0;
  VU_NAPI_CALL_BOOL(env, napi_get_array_length(env, value, &length));
  if (length > max_count) {
    ThrowArgValue(env, name,
                  "must have at most " + std::to_string(max_count) +
                      " elements. Received " + std::to_string(length));
    return false;
  }
  const std::string element_name = std::string(name) + "[i]";
  for (uint32_t i = 0; i < length; i++) {
    napi_value element;
    VU_NAPI_CALL_BOOL(env, napi_get_element(env, value, i, &element));
    if (!GetFd(env, element, element_name.c_str(), &out[i])) return false;
  }
  *count = length;
  return true;
}

bool GetFunction(napi_env env, napi_value value, const char* name) {
  napi_valuetype type;
  if (!TypeOf(env, value, &type) || type != napi_function) {
    ThrowArgTypeReceived(env, name, "of type function", value);
    return false;
  }
  return true;
}

bool GetTagged(napi_env env, napi_value value, const napi_type_tag& tag,
               const char* expected, void** out) {
  napi_valuetype type;
  bool tagged = false;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_object ||
      napi_check_object_type_tag(env, value, &tag, &tagged) != napi_ok ||
      !tagged || napi_unwrap(env, value, out) != napi_ok) {
    ThrowArgType(env, "handle", expected);
    return false;
  }
  return true;
}

bool LoopCallback::Init(napi_env env, napi_value function,
                        napi_value resource, const char* name) {
  napi_value resource_name;
  return napi_create_reference(env, function, 1, &fn) == napi_ok &&
         napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH,
                                 &resource_name) == napi_ok &&
         napi_async_init(env, resource, resource_name, &async_context) ==
             napi_ok;
}

void LoopCallback::Call(napi_env env, size_t argc,
                        const napi_value* argv) const {
  napi_value function = nullptr, recv, result;
  if (napi_get_reference_value(env, fn, &function) != napi_ok ||
      function == nullptr || napi_get_global(env, &recv) != napi_ok) {
    return;
  }
  // napi_make_callback needs an object as receiver.
  if (napi_make_callback(env, async_context, recv, function, argc, argv,
                         &result) == napi_pending_exception) {
    napi_value error;
    if (napi_get_and_clear_last_exception(env, &error) == napi_ok) {
      napi_fatal_exception(env, error);  // -> process 'uncaughtException'
    }
  }
}

void LoopCallback::Release(napi_env env) {
  if (fn != nullptr) napi_delete_reference(env, fn);
  if (async_context != nullptr) napi_async_destroy(env, async_context);
  fn = nullptr;
  async_context = nullptr;
}

bool NewTaggedObject(napi_env env, const napi_type_tag& tag, void* data,
                     napi_finalize finalize, napi_value* out) {
  // napi_wrap last: only once it succeeded does the object own `data`.
  return napi_create_object(env, out) == napi_ok &&
         napi_type_tag_object(env, *out, &tag) == napi_ok &&
         napi_wrap(env, *out, data, finalize, nullptr, nullptr) == napi_ok;
}

napi_value MakeNumber(napi_env env, double value) {
  napi_value result;
  VU_NAPI_CALL(env, napi_create_double(env, value, &result));
  return result;
}

napi_value MakeInt32(napi_env env, int32_t value) {
  napi_value result;
  VU_NAPI_CALL(env, napi_create_int32(env, value, &result));
  return result;
}

napi_value Undefined(napi_env env) {
  napi_value result;
  VU_NAPI_CALL(env, napi_get_undefined(env, &result));
  return result;
}

bool ExportFunction(napi_env env, napi_value exports, const char* name,
                    napi_callback cb) {
  napi_value fn;
  VU_NAPI_CALL_BOOL(env, napi_create_function(env, name, NAPI_AUTO_LENGTH, cb,
                                              nullptr, &fn));
  VU_NAPI_CALL_BOOL(env, napi_set_named_property(env, exports, name, fn));
  return true;
}

}  // namespace vhost_user
