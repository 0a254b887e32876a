// Shared helpers for the vhost-user native addon: argument validation and
// error construction. Every entry point validates its arguments with these
// helpers before touching the kernel, and every failed syscall is reported
// with ThrowErrno so JavaScript sees `code` (errno name), `errno`, `syscall`.
#ifndef VHOST_USER_NATIVE_UTIL_H_
#define VHOST_USER_NATIVE_UTIL_H_

#include <node_api.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>

namespace vhost_user {

// Evaluates a napi call; on failure throws (unless an exception is already
// pending) and returns nullptr from the enclosing napi_callback.
#define VU_NAPI_CALL(env, call)                       \
  do {                                                \
    if ((call) != napi_ok) {                          \
      ::vhost_user::ThrowNapiFailure((env), #call);   \
      return nullptr;                                 \
    }                                                 \
  } while (0)

// Same as VU_NAPI_CALL, for helpers that return bool.
#define VU_NAPI_CALL_BOOL(env, call)                  \
  do {                                                \
    if ((call) != napi_ok) {                          \
      ::vhost_user::ThrowNapiFailure((env), #call);   \
      return false;                                   \
    }                                                 \
  } while (0)

// Calls f() again while it fails with -1 and errno == EINTR.
template <typename F>
auto RetryEintr(F f) -> decltype(f()) {
  decltype(f()) result;
  do {
    result = f();
  } while (result == -1 && errno == EINTR);
  return result;
}

// The name of an errno value ("ENOENT"), or "E<number>" if unknown.
std::string ErrnoName(int err);

// Throws Error(`${syscall}: ${strerror(err)}`) with code/errno/syscall set.
void ThrowErrno(napi_env env, const char* syscall, int err);
// Creates (without throwing) the same error object; nullptr on failure.
napi_value MakeErrnoError(napi_env env, const char* syscall, int err);
// Throws an error for a libuv error code (negative), code = uv_err_name.
void ThrowUvError(napi_env env, const char* syscall, int uv_err);

// TypeError with code ERR_INVALID_ARG_TYPE.
void ThrowArgType(napi_env env, const char* name, const char* expected);
// RangeError with code ERR_INVALID_ARG_VALUE.
void ThrowArgValue(napi_env env, const char* name, const std::string& why);
// Generic failure of a napi_* call (only if no exception is pending).
void ThrowNapiFailure(napi_env env, const char* what);

// Fetches exactly `count` arguments (more are ignored) into argv; if fewer
// were passed, throws a TypeError naming the first missing one.
bool GetArgs(napi_env env, napi_callback_info info, size_t count,
             napi_value* argv, const char* const* names,
             napi_value* this_arg = nullptr);

// A file descriptor: a number that is an integer in [0, INT32_MAX].
bool GetFd(napi_env env, napi_value value, const char* name, int* out);
// Any int32 (integral number in the int32 range).
bool GetInt32(napi_env env, napi_value value, const char* name, int32_t* out);
// A non-negative safe integer (0 <= n <= 2^53 - 1).
bool GetSize(napi_env env, napi_value value, const char* name, uint64_t* out);
// Any safe integer (may be negative).
bool GetSafeInteger(napi_env env, napi_value value, const char* name,
                    int64_t* out);
// A string without NUL characters (UTF-8 encoded).
bool GetString(napi_env env, napi_value value, const char* name,
               std::string* out);
// A Uint8Array (Buffer included); data may be nullptr when length is 0.
bool GetBytes(napi_env env, napi_value value, const char* name, void** data,
              size_t* length);
// An array of file descriptors of at most max_count entries.
bool GetFdArray(napi_env env, napi_value value, const char* name,
                size_t max_count, int* out, size_t* count);
// A function.
bool GetFunction(napi_env env, napi_value value, const char* name);
// An object made by this addon with `tag` (napi_type_tag_object): its wrapped
// pointer. Otherwise throws a TypeError naming `expected`.
bool GetTagged(napi_env env, napi_value value, const napi_type_tag& tag,
               const char* expected, void** out);

// A JavaScript function that libuv callbacks call, with the async context
// it runs in; the two are made and released together.
struct LoopCallback {
  napi_ref fn = nullptr;
  napi_async_context async_context = nullptr;

  LoopCallback() = default;
  // One owner: a copy would release the reference twice.
  LoopCallback(const LoopCallback&) = delete;
  LoopCallback& operator=(const LoopCallback&) = delete;

  // Holds `function` strongly, in an async context named `name` whose
  // resource is `resource`. On failure Release() frees what was made.
  bool Init(napi_env env, napi_value function, napi_value resource,
            const char* name);
  bool held() const { return fn != nullptr; }
  // Calls the function through napi_make_callback (process.nextTick
  // callbacks and microtasks run after it, as after any callback from the
  // event loop, and microtasks inside it if it calls runMicrotasks()); an
  // exception it throws goes to process 'uncaughtException'.
  // Call from a libuv callback, inside a handle scope.
  void Call(napi_env env, size_t argc, const napi_value* argv) const;
  // Idempotent.
  void Release(napi_env env);
};

// A new object tagged with `tag` (see GetTagged) that owns `data`:
// `finalize` frees it when the object is collected. On failure the caller
// still owns `data`.
bool NewTaggedObject(napi_env env, const napi_type_tag& tag, void* data,
                     napi_finalize finalize, napi_value* out);

// Small conveniences for building results.
napi_value MakeNumber(napi_env env, double value);
napi_value MakeInt32(napi_env env, int32_t value);
napi_value Undefined(napi_env env);

// fds made or received by the addon (fds.cc). TrackFd records fd as owned
// by env: it is closed when env is torn down (a worker ended by terminate()),
// unless closed first through CloseTracked (close(2) that forgets it, under
// the table's lock). ReturnFd tracks fd and returns it as a number (closes it
// on failure).
void TrackFd(napi_env env, int fd);
int CloseTracked(int fd);
napi_value ReturnFd(napi_env env, int fd);
// Registers the cleanup hook that closes env's fds.
bool RegisterFds(napi_env env);

// Registration of each source file's exports (called from addon.cc).
bool RegisterMemory(napi_env env, napi_value exports);
bool RegisterEventfd(napi_env env, napi_value exports);
bool RegisterSocket(napi_env env, napi_value exports);
bool RegisterPoll(napi_env env, napi_value exports);
bool RegisterTurn(napi_env env, napi_value exports);
bool RegisterClock(napi_env env, napi_value exports);

// Adds a function property `name` to `exports`.
bool ExportFunction(napi_env env, napi_value exports, const char* name,
                    napi_callback cb);

}  // namespace vhost_user

#endif  // VHOST_USER_NATIVE_UTIL_H_
