// eventfd(2) wrappers: creation, signalling and non-blocking draining.
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "util.h"

namespace vhost_user {
namespace {

const char* const kFdNames[] = {"fd"};

napi_value EventfdCreate(napi_env env, napi_callback_info /*info*/) {
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) {
    ThrowErrno(env, "eventfd", errno);
    return nullptr;
  }
  return MakeInt32(env, fd);
}

napi_value EventfdWrite(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!GetArgs(env, info, 1, argv, kFdNames) ||
      !GetFd(env, argv[0], "fd", &fd)) {
    return nullptr;
  }
  const uint64_t one = 1;
  ssize_t n = RetryEintr([&] { return write(fd, &one, sizeof(one)); });
  // EAGAIN: the counter is about to overflow, so it is already signalled.
  if (n < 0 && errno != EAGAIN) {
    ThrowErrno(env, "write", errno);
    return nullptr;
  }
  return Undefined(env);
}

napi_value EventfdRead(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!GetArgs(env, info, 1, argv, kFdNames) ||
      !GetFd(env, argv[0], "fd", &fd)) {
    return nullptr;
  }
  uint64_t value = 0;
  ssize_t n = RetryEintr([&] { return read(fd, &value, sizeof(value)); });
  if (n < 0) {
    if (errno == EAGAIN) return MakeNumber(env, 0);
    ThrowErrno(env, "read", errno);
    return nullptr;
  }
  if (n != sizeof(value)) {
    ThrowErrno(env, "read", EINVAL);
    return nullptr;
  }
  return MakeNumber(env, static_cast<double>(value));
}

}  // namespace

bool RegisterEventfd(napi_env env, napi_value exports) {
  return ExportFunction(env, exports, "eventfd", EventfdCreate) &&
         ExportFunction(env, exports, "eventfdWrite", EventfdWrite) &&
         ExportFunction(env, exports, "eventfdRead", EventfdRead);
}

}  // namespace vhost_user
