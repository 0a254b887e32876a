// eventfd(2) wrappers: creation, signalling and non-blocking draining.
//
// The eventfds read and written here are shared with the peer (the frontend
// sends the backend its kick and call fds; the backend holds the frontend's),
// and with them the open file description and its flags: the peer may clear
// O_NONBLOCK whenever it likes, and may empty or fill the counter at any
// moment. So neither entry point relies on O_NONBLOCK: a peer must not be
// able to stop this thread (and the event loop on it).
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "util.h"

namespace vhost_user {
namespace {

const char* const kFdNames[] = {"fd"};

// Asks poll(2), without waiting, whether fd has any of `events` (*ready);
// false with errno set if it cannot tell (EBADF: fd is not open).
bool ReadyNow(int fd, short events, bool* ready) {
  struct pollfd p = {fd, events, 0};
  if (RetryEintr([&] { return poll(&p, 1, 0); }) < 0) return false;
  if ((p.revents & POLLNVAL) != 0) {
    errno = EBADF;
    return false;
  }
  *ready = (p.revents & events) != 0;
  return true;
}

napi_value EventfdCreate(napi_env env, napi_callback_info /*info*/) {
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) {
    ThrowErrno(env, "eventfd", errno);
    return nullptr;
  }
  return ReturnFd(env, fd);
}

// Writes 1 to fd; with `poll_first`, only if poll(2) finds the counter below
// its maximum (see EventfdSignal).
napi_value WriteOne(napi_env env, napi_callback_info info, bool poll_first) {
  napi_value argv[1];
  int fd;
  if (!GetArgs(env, info, 1, argv, kFdNames) ||
      !GetFd(env, argv[0], "fd", &fd)) {
    return nullptr;
  }
  if (poll_first) {
    bool writable = false;
    if (!ReadyNow(fd, POLLOUT, &writable)) {
      ThrowErrno(env, "poll", errno);
      return nullptr;
    }
    if (!writable) return Undefined(env);
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

// The frontend's kick: a plain write, which relies on O_NONBLOCK (set when
// the eventfd was made). A backend that clears it and fills the counter could
// block it; polling first (as EventfdSignal does) costs ~0.3 us per kick,
// up to two kicks per request at depth 1, so the kick path does not.
napi_value EventfdWrite(napi_env env, napi_callback_info info) {
  return WriteOne(env, info, false);
}

// The server's signal to a frontend that may be hostile (its call eventfds).
// A write blocks while the counter is at its maximum, unless O_NONBLOCK is
// set. RWF_NOWAIT cannot help: eventfd's write path is a plain ->write (no
// write_iter, still so in Linux 6.18), so pwritev2 refuses the flag with
// EOPNOTSUPP. Instead poll first: POLLOUT is clear exactly when a write of
// 1 would wait, and then the counter is non-zero, so the peer is signalled
// already and skipping the write loses nothing. This leaves a window: a
// peer that has cleared O_NONBLOCK and fills the counter between the poll
// and the write still blocks us until it reads the counter (one that
// empties and refills it in a loop wins every few milliseconds). Checking
// or setting O_NONBLOCK first would race the same way (the peer can clear
// it again) and would change how the peer's own reads behave; only a
// signal interrupting the write, or a signal the kernel sends for us (an
// AIO or io_uring completion with the eventfd attached), cannot wait.
napi_value EventfdSignal(napi_env env, napi_callback_info info) {
  return WriteOne(env, info, true);
}

napi_value EventfdRead(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!GetArgs(env, info, 1, argv, kFdNames) ||
      !GetFd(env, argv[0], "fd", &fd)) {
    return nullptr;
  }
  uint64_t value = 0;
  struct iovec iov = {&value, sizeof(value)};
  // Kernels whose eventfd has no read_iter (before about 5.8) refuse
  // RWF_NOWAIT: learned at the first refusal, so each later read costs one
  // syscall pair (poll, read), not a refused preadv2 as well.
  static bool nowait_refused = false;
  ssize_t n = -1;
  if (!nowait_refused) {
    // RWF_NOWAIT makes this one read return EAGAIN on an empty counter
    // whatever the file's flags; offset -1: the file position (none here).
    n = RetryEintr([&] { return preadv2(fd, &iov, 1, -1, RWF_NOWAIT); });
    if (n < 0 && (errno == EOPNOTSUPP || errno == ENOSYS)) nowait_refused = true;
  }
  if (nowait_refused) {
    // Read only what poll says is there. A peer that empties the counter
    // between the two can still block a read on a file it made blocking;
    // those kernels offer no read that ignores the file's flags.
    bool readable = false;
    if (!ReadyNow(fd, POLLIN, &readable)) {
      ThrowErrno(env, "poll", errno);
      return nullptr;
    }
    if (!readable) return MakeNumber(env, 0);
    n = RetryEintr([&] { return read(fd, &value, sizeof(value)); });
  }
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
         ExportFunction(env, exports, "eventfdSignal", EventfdSignal) &&
         ExportFunction(env, exports, "eventfdRead", EventfdRead);
}

}  // namespace vhost_user
