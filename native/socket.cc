// AF_UNIX stream sockets: connect/listen/accept, socketpair, and
// sendmsg/recvmsg carrying file descriptors as SCM_RIGHTS.
// Every socket is non-blocking and close-on-exec.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include "util.h"

namespace vhost_user {
namespace {

// The kernel's SCM_MAX_FD: at most this many fds per SCM_RIGHTS message.
constexpr size_t kMaxFds = 253;
constexpr int kConnectTimeoutMs = 1000;

int64_t MonotonicMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// Fills addr from a path argument; throws RangeError if it does not fit.
bool GetUnixAddress(napi_env env, napi_value value, struct sockaddr_un* addr) {
  std::string path;
  if (!GetString(env, value, "path", &path)) return false;
  if (path.empty() || path.size() >= sizeof(addr->sun_path)) {
    ThrowArgValue(env, "path",
                  "must be 1 to " + std::to_string(sizeof(addr->sun_path) - 1) +
                      " bytes long. Received " + std::to_string(path.size()) +
                      " bytes");
    return false;
  }
  std::memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  std::memcpy(addr->sun_path, path.data(), path.size());
  return true;
}

int NewUnixSocket() {
  return socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
}

// Connects the non-blocking socket fd; returns 0 or an errno value.
int ConnectWithTimeout(int fd, const struct sockaddr_un& addr) {
  const int64_t deadline = MonotonicMs() + kConnectTimeoutMs;
  for (;;) {
    if (connect(fd, reinterpret_cast<const struct sockaddr*>(&addr),
                sizeof(addr)) == 0) {
      return 0;
    }
    const int err = errno;
    if (err == EISCONN) return 0;  // an earlier attempt completed
    if (err != EINPROGRESS && err != EALREADY && err != EAGAIN &&
        err != EINTR) {
      return err;
    }
    const int64_t remaining = deadline - MonotonicMs();
    if (remaining <= 0) return ETIMEDOUT;
    if (err == EAGAIN) {
      // The listener's backlog is full; the socket is not connecting, so
      // poll() would not wait. Back off briefly and try again.
      struct timespec pause = {0, 1000000};
      nanosleep(&pause, nullptr);
      continue;
    }
    struct pollfd pfd = {fd, POLLOUT, 0};
    int n = poll(&pfd, 1, static_cast<int>(remaining));
    if (n < 0 && errno != EINTR) return errno;
    if (n == 0) return ETIMEDOUT;
    int so_error = 0;
    socklen_t len = sizeof(so_error);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len) < 0) return errno;
    if (so_error != 0) return so_error;
    // Loop: connect() again reports EISCONN once the connection is up.
  }
}

napi_value UnixConnect(napi_env env, napi_callback_info info) {
  static const char* const names[] = {"path"};
  napi_value argv[1];
  struct sockaddr_un addr;
  if (!GetArgs(env, info, 1, argv, names) ||
      !GetUnixAddress(env, argv[0], &addr)) {
    return nullptr;
  }
  int fd = NewUnixSocket();
  if (fd < 0) {
    ThrowErrno(env, "socket", errno);
    return nullptr;
  }
  int err = ConnectWithTimeout(fd, addr);
  if (err != 0) {
    close(fd);
    ThrowErrno(env, "connect", err);
    return nullptr;
  }
  return ReturnFd(env, fd);
}

napi_value UnixListen(napi_env env, napi_callback_info info) {
  static const char* const names[] = {"path", "backlog"};
  napi_value argv[2];
  struct sockaddr_un addr;
  int32_t backlog;
  if (!GetArgs(env, info, 2, argv, names) ||
      !GetUnixAddress(env, argv[0], &addr) ||
      !GetInt32(env, argv[1], "backlog", &backlog)) {
    return nullptr;
  }
  if (backlog < 0) {
    ThrowArgValue(env, "backlog", "must not be negative. Received " +
                                      std::to_string(backlog));
    return nullptr;
  }
  int fd = NewUnixSocket();
  if (fd < 0) {
    ThrowErrno(env, "socket", errno);
    return nullptr;
  }
  const char* failed = nullptr;
  if (bind(fd, reinterpret_cast<const struct sockaddr*>(&addr), sizeof(addr)) <
      0) {
    failed = "bind";
  } else if (listen(fd, backlog) < 0) {
    failed = "listen";
  }
  if (failed != nullptr) {
    int err = errno;
    close(fd);
    ThrowErrno(env, failed, err);
    return nullptr;
  }
  return ReturnFd(env, fd);
}

napi_value UnixAccept(napi_env env, napi_callback_info info) {
  static const char* const names[] = {"fd"};
  napi_value argv[1];
  int fd;
  if (!GetArgs(env, info, 1, argv, names) || !GetFd(env, argv[0], "fd", &fd)) {
    return nullptr;
  }
  for (;;) {
    int conn = accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (conn >= 0) return ReturnFd(env, conn);
    // A connection that was reset while queued: try the next one.
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return MakeInt32(env, -1);
    ThrowErrno(env, "accept4", errno);
    return nullptr;
  }
}

napi_value Socketpair(napi_env env, napi_callback_info /*info*/) {
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) <
      0) {
    ThrowErrno(env, "socketpair", errno);
    return nullptr;
  }
  napi_value result, a, b;
  if (napi_create_array_with_length(env, 2, &result) != napi_ok ||
      napi_create_int32(env, fds[0], &a) != napi_ok ||
      napi_create_int32(env, fds[1], &b) != napi_ok ||
      napi_set_element(env, result, 0, a) != napi_ok ||
      napi_set_element(env, result, 1, b) != napi_ok) {
    close(fds[0]);
    close(fds[1]);
    ThrowNapiFailure(env, "creating the socketpair result");
    return nullptr;
  }
  TrackFd(env, fds[0]);
  TrackFd(env, fds[1]);
  return result;
}

// Control buffer large enough for kMaxFds descriptors, suitably aligned.
union ControlBuffer {
  char buf[CMSG_SPACE(sizeof(int) * kMaxFds)];
  struct cmsghdr align;
};

napi_value Sendmsg(napi_env env, napi_callback_info info) {
  static const char* const names[] = {"fd", "data", "fds"};
  napi_value argv[3];
  int fd;
  void* data = nullptr;
  size_t length = 0;
  int fds[kMaxFds];
  size_t nfds = 0;
  if (!GetArgs(env, info, 3, argv, names) || !GetFd(env, argv[0], "fd", &fd) ||
      !GetBytes(env, argv[1], "data", &data, &length) ||
      !GetFdArray(env, argv[2], "fds", kMaxFds, fds, &nfds)) {
    return nullptr;
  }
  if (nfds > 0 && length == 0) {
    // A stream socket drops ancillary data sent with no payload.
    ThrowArgValue(env, "data", "must not be empty when fds are sent");
    return nullptr;
  }
  struct iovec iov = {data, length};
  struct msghdr msg;
  std::memset(&msg, 0, sizeof(msg));
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  ControlBuffer control;
  if (nfds > 0) {
    std::memset(&control, 0, sizeof(control));
    msg.msg_control = control.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    struct cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    std::memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * nfds);
  }
  ssize_t n = RetryEintr(
      [&] { return sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT); });
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return MakeInt32(env, -1);
    ThrowErrno(env, "sendmsg", errno);
    return nullptr;
  }
  return MakeNumber(env, static_cast<double>(n));
}

void CloseAll(const int* fds, size_t count) {
  for (size_t i = 0; i < count; i++) close(fds[i]);
}

napi_value MakeRecvResult(napi_env env, double bytes, const int* fds,
                          size_t nfds) {
  napi_value result, bytes_value, fds_value;
  VU_NAPI_CALL(env, napi_create_object(env, &result));
  VU_NAPI_CALL(env, napi_create_double(env, bytes, &bytes_value));
  VU_NAPI_CALL(env, napi_create_array_with_length(env, nfds, &fds_value));
  for (size_t i = 0; i < nfds; i++) {
    napi_value v;
    VU_NAPI_CALL(env, napi_create_int32(env, fds[i], &v));
    VU_NAPI_CALL(env, napi_set_element(env, fds_value, i, v));
  }
  VU_NAPI_CALL(env, napi_set_named_property(env, result, "bytes", bytes_value));
  VU_NAPI_CALL(env, napi_set_named_property(env, result, "fds", fds_value));
  return result;
}

napi_value Recvmsg(napi_env env, napi_callback_info info) {
  static const char* const names[] = {"fd", "data"};
  napi_value argv[2];
  int fd;
  void* data = nullptr;
  size_t length = 0;
  if (!GetArgs(env, info, 2, argv, names) || !GetFd(env, argv[0], "fd", &fd) ||
      !GetBytes(env, argv[1], "data", &data, &length)) {
    return nullptr;
  }
  if (length == 0) {
    // recvmsg() into nothing would return 0, which means EOF.
    ThrowArgValue(env, "data", "must not be empty");
    return nullptr;
  }
  struct iovec iov = {data, length};
  struct msghdr msg;
  std::memset(&msg, 0, sizeof(msg));
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  ControlBuffer control;
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof(control.buf);
  ssize_t n = RetryEintr(
      [&] { return recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT); });
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return MakeRecvResult(env, -1, nullptr, 0);
    }
    if (errno == ECONNRESET) return MakeRecvResult(env, 0, nullptr, 0);
    ThrowErrno(env, "recvmsg", errno);
    return nullptr;
  }
  // Take ownership of every received fd at once.
  int fds[kMaxFds] = {};
  size_t nfds = 0;
  for (struct cmsghdr* cmsg = CMSG_FIRSTHDR(&msg); cmsg != nullptr;
       cmsg = CMSG_NXTHDR(&msg, cmsg)) {
    if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) {
      continue;
    }
    const size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; i++) {
      int received;
      std::memcpy(&received, CMSG_DATA(cmsg) + i * sizeof(int),
                  sizeof(received));
      if (nfds < kMaxFds) {
        fds[nfds++] = received;
      } else {
        close(received);
      }
    }
  }
  if ((msg.msg_flags & MSG_CTRUNC) != 0) {
    CloseAll(fds, nfds);
    ThrowErrno(env, "recvmsg", EMSGSIZE);
    return nullptr;
  }
  napi_value result = MakeRecvResult(env, static_cast<double>(n), fds, nfds);
  if (result == nullptr) {
    CloseAll(fds, nfds);
    return nullptr;
  }
  for (size_t i = 0; i < nfds; i++) TrackFd(env, fds[i]);
  return result;
}

}  // namespace

bool RegisterSocket(napi_env env, napi_value exports) {
  return ExportFunction(env, exports, "unixConnect", UnixConnect) &&
         ExportFunction(env, exports, "unixListen", UnixListen) &&
         ExportFunction(env, exports, "unixAccept", UnixAccept) &&
         ExportFunction(env, exports, "socketpair", Socketpair) &&
         ExportFunction(env, exports, "sendmsg", Sendmsg) &&
         ExportFunction(env, exports, "recvmsg", Recvmsg);
}

}  // namespace vhost_user
