// Readiness of fds: libuv uv_poll_t watchers that call back into JS on the
// event loop, a blocking poll(2) for the synchronous API, a nanosecond
// sleep, the monotonic clock, and what a spin on a shared CPU needs: the
// thread's involuntary context switches and sched_yield(2).
#include <poll.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <uv.h>

#include <cerrno>
#include <climits>
#include <cstdint>

#include "util.h"
#include "uv_group.h"

namespace vhost_user {
namespace {

constexpr napi_type_tag kPollTag = {0x2c5e8f0b6d1a4e73ULL,
                                    0xb81f4c97a03d25e6ULL};
constexpr int kAllPollEvents = UV_READABLE | UV_WRITABLE | UV_DISCONNECT;
// A blocking wait sleeps on every ring's call and error eventfds and the
// socket: 517 fds for 256 virtio-scsi request queues (plus its control and
// event queues).
constexpr size_t kMaxWaitFds = 1024;
// waitReadable's mask has a bit per fd up to this one; this bit stands for
// it and every later one.
constexpr size_t kLastMaskBit = 30;

struct PollWatch;

// The uv_poll_t, in a group of its own (see uv_group.h).
struct PollUv final : UvGroup {
  uv_poll_t poll;
  PollWatch* owner = nullptr;  // nullptr once closing

 private:
  void Detach() override;
};

// State of one pollStart() watcher. It is owned by the JS handle object
// (freed by its finalizer). While the watcher is active the handle object
// is held by a strong reference, so it cannot be collected; pollStop()
// drops that reference.
struct PollWatch {
  napi_env env = nullptr;
  PollUv* uv = nullptr;  // nullptr once stopped
  LoopCallback callback;
  napi_ref self = nullptr;
};

void PollUv::Detach() {
  if (owner != nullptr) owner->uv = nullptr;
  owner = nullptr;
  uv_poll_stop(&poll);
}

// Releases everything but the PollWatch struct itself (JS thread); the
// handles may have been closed already by the environment's teardown.
void StopWatch(napi_env env, PollWatch* w) {
  if (w->uv != nullptr) w->uv->Close();
  w->callback.Release(env);
  if (w->self != nullptr) napi_delete_reference(env, w->self);
  w->self = nullptr;
}

void FinalizeWatch(napi_env env, void* data, void* /*hint*/) {
  PollWatch* w = static_cast<PollWatch*>(data);
  StopWatch(env, w);  // only does work if the handle was never stopped
  delete w;
}

void OnPoll(uv_poll_t* handle, int status, int events) {
  PollWatch* w = UvGroup::From<PollUv>(handle)->owner;
  if (w == nullptr || !w->callback.held()) return;
  napi_env env = w->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value argv[2];
  if (napi_create_int32(env, status, &argv[0]) == napi_ok &&
      napi_create_int32(env, events, &argv[1]) == napi_ok) {
    w->callback.Call(env, 2, argv);
  }
  napi_close_handle_scope(env, scope);
}

bool GetWatch(napi_env env, napi_value value, PollWatch** out) {
  void* data = nullptr;
  if (!GetTagged(env, value, kPollTag, "a PollHandle returned by pollStart()",
                 &data)) {
    return false;
  }
  *out = static_cast<PollWatch*>(data);
  return true;
}

napi_value PollStart(napi_env env, napi_callback_info info) {
  static const char* const names[] = {"fd", "events", "callback"};
  napi_value argv[3];
  int fd;
  int32_t events;
  if (!GetArgs(env, info, 3, argv, names) || !GetFd(env, argv[0], "fd", &fd) ||
      !GetInt32(env, argv[1], "events", &events) ||
      !GetFunction(env, argv[2], "callback")) {
    return nullptr;
  }
  if (events <= 0 || (events & ~kAllPollEvents) != 0) {
    ThrowArgValue(env, "events",
                  "must be a non-empty combination of 1 (readable), "
                  "2 (writable) and 4 (disconnect). Received " +
                      std::to_string(events));
    return nullptr;
  }
  uv_loop_t* loop = nullptr;
  VU_NAPI_CALL(env, napi_get_uv_event_loop(env, &loop));

  PollUv* uv = new PollUv;
  int r = uv_poll_init(loop, &uv->poll, fd);
  if (r != 0) {
    uv->Close();  // uv_poll_init failed: nothing to close, the group goes
    ThrowUvError(env, "uv_poll_init", r);
    return nullptr;
  }
  uv->Add(reinterpret_cast<uv_handle_t*>(&uv->poll));
  PollWatch* w = new PollWatch;
  w->env = env;
  w->uv = uv;
  uv->owner = w;

  napi_value handle;
  if (!NewTaggedObject(env, kPollTag, w, FinalizeWatch, &handle)) {
    uv->Close();
    delete w;
    ThrowNapiFailure(env, "creating a poll handle");
    return nullptr;
  }
  // From here on the handle object owns w; StopWatch() cleans up failures.
  // The callback's async resource is an object of its own, not the frozen
  // handle: the strategies run the application's continuations inside the
  // callback (runMicrotasks), and AsyncLocalStorage stores into the current
  // resource.
  napi_value resource;
  if (napi_create_object(env, &resource) != napi_ok ||
      !w->callback.Init(env, argv[2], resource, "vhost-user:poll") ||
      napi_create_reference(env, handle, 1, &w->self) != napi_ok ||
      !uv->HoldTeardown(env)) {
    StopWatch(env, w);
    ThrowNapiFailure(env, "creating a poll handle");
    return nullptr;
  }
  r = uv_poll_start(&uv->poll, events, OnPoll);
  if (r != 0) {
    StopWatch(env, w);
    ThrowUvError(env, "uv_poll_start", r);
    return nullptr;
  }
  if (napi_object_freeze(env, handle) != napi_ok) {
    StopWatch(env, w);  // never returned: nothing could stop it later
    ThrowNapiFailure(env, "creating a poll handle");
    return nullptr;
  }
  return handle;
}

napi_value PollStop(napi_env env, napi_callback_info info) {
  static const char* const names[] = {"handle"};
  napi_value argv[1];
  PollWatch* w;
  if (!GetArgs(env, info, 1, argv, names) || !GetWatch(env, argv[0], &w)) {
    return nullptr;
  }
  StopWatch(env, w);
  return Undefined(env);
}

napi_value PollRef(napi_env env, napi_callback_info info) {
  static const char* const names[] = {"handle", "ref"};
  napi_value argv[2];
  PollWatch* w;
  if (!GetArgs(env, info, 2, argv, names) || !GetWatch(env, argv[0], &w)) {
    return nullptr;
  }
  napi_valuetype type;
  bool ref = false;
  if (napi_typeof(env, argv[1], &type) != napi_ok || type != napi_boolean ||
      napi_get_value_bool(env, argv[1], &ref) != napi_ok) {
    ThrowArgType(env, "ref", "of type boolean");
    return nullptr;
  }
  if (w->uv != nullptr) {
    if (ref) {
      uv_ref(reinterpret_cast<uv_handle_t*>(&w->uv->poll));
    } else {
      uv_unref(reinterpret_cast<uv_handle_t*>(&w->uv->poll));
    }
  }
  return Undefined(env);
}

int64_t NowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

napi_value WaitReadable(napi_env env, napi_callback_info info) {
  static const char* const names[] = {"fds", "timeoutMs"};
  napi_value argv[2];
  int fds[kMaxWaitFds];
  size_t nfds = 0;
  int64_t timeout_ms;
  if (!GetArgs(env, info, 2, argv, names) ||
      !GetFdArray(env, argv[0], "fds", kMaxWaitFds, fds, &nfds) ||
      !GetSafeInteger(env, argv[1], "timeoutMs", &timeout_ms)) {
    return nullptr;
  }
  struct pollfd pfds[kMaxWaitFds];
  for (size_t i = 0; i < nfds; i++) {
    pfds[i].fd = fds[i];
    pfds[i].events = POLLIN | POLLRDHUP;
    pfds[i].revents = 0;
  }
  const bool forever = timeout_ms < 0;
  const int64_t deadline = forever ? 0 : NowNs() + timeout_ms * 1000000;
  int n;
  for (;;) {
    int wait_ms = -1;
    if (!forever) {
      const int64_t remaining_ns = deadline - NowNs();
      // Round up so that we never return before the deadline.
      const int64_t remaining_ms =
          remaining_ns <= 0 ? 0 : (remaining_ns + 999999) / 1000000;
      wait_ms = remaining_ms > INT_MAX ? INT_MAX : static_cast<int>(remaining_ms);
    }
    n = poll(pfds, nfds, wait_ms);
    if (n >= 0 || errno != EINTR) break;
  }
  if (n < 0) {
    ThrowErrno(env, "poll", errno);
    return nullptr;
  }
  int32_t mask = 0;
  for (size_t i = 0; i < nfds; i++) {
    if ((pfds[i].revents & POLLNVAL) != 0) {
      ThrowErrno(env, "poll", EBADF);
      return nullptr;
    }
    if ((pfds[i].revents & (POLLIN | POLLHUP | POLLERR | POLLRDHUP)) != 0) {
      mask |= 1 << (i < kLastMaskBit ? i : kLastMaskBit);
    }
  }
  return MakeInt32(env, mask);
}

napi_value SleepNs(napi_env env, napi_callback_info info) {
  static const char* const names[] = {"ns"};
  napi_value argv[1];
  uint64_t ns;
  if (!GetArgs(env, info, 1, argv, names) || !GetSize(env, argv[0], "ns", &ns)) {
    return nullptr;
  }
  if (ns > 1000000000) {
    ThrowArgValue(env, "ns", "must be at most 1e9. Received " +
                                 std::to_string(ns));
    return nullptr;
  }
  if (ns == 0) return Undefined(env);
  // The thread's timer slack (50 us by default) would stretch every short sleep. It is set to
  // 1 ns for this sleep only: the setting would otherwise stay with the thread (Node's main
  // thread: every timer of the application) and pass to the threads and processes it starts.
  int slack = prctl(PR_GET_TIMERSLACK, 0UL, 0UL, 0UL, 0UL);
  bool precise = slack > 1 && prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL) == 0;
  // An absolute deadline makes EINTR retries exact.
  struct timespec deadline;
  clock_gettime(CLOCK_MONOTONIC, &deadline);
  deadline.tv_nsec += static_cast<long>(ns);
  while (deadline.tv_nsec >= 1000000000) {
    deadline.tv_nsec -= 1000000000;
    deadline.tv_sec += 1;
  }
  int r;
  do {
    r = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &deadline, nullptr);
  } while (r == EINTR);
  if (precise) prctl(PR_SET_TIMERSLACK, static_cast<unsigned long>(slack), 0UL, 0UL, 0UL);
  if (r != 0) {
    ThrowErrno(env, "clock_nanosleep", r);
    return nullptr;
  }
  return Undefined(env);
}

// The JS thread's own count (RUSAGE_THREAD): process.resourceUsage() sums every thread, the
// libuv pool's and V8's helpers included, and cannot tell who was preempted.
napi_value ThreadInvoluntarySwitches(napi_env env, napi_callback_info /*info*/) {
  struct rusage usage;
  if (getrusage(RUSAGE_THREAD, &usage) != 0) {
    ThrowErrno(env, "getrusage", errno);
    return nullptr;
  }
  return MakeNumber(env, static_cast<double>(usage.ru_nivcsw));
}

// Gives the CPU to another runnable thread (a backend sharing this CPU) without sleeping.
napi_value YieldThread(napi_env env, napi_callback_info /*info*/) {
  if (sched_yield() != 0) {
    ThrowErrno(env, "sched_yield", errno);
    return nullptr;
  }
  return Undefined(env);
}

napi_value NowNsJs(napi_env env, napi_callback_info /*info*/) {
  return MakeNumber(env, static_cast<double>(NowNs()));
}

}  // namespace

bool RegisterPoll(napi_env env, napi_value exports) {
  return ExportFunction(env, exports, "pollStart", PollStart) &&
         ExportFunction(env, exports, "pollStop", PollStop) &&
         ExportFunction(env, exports, "pollRef", PollRef) &&
         ExportFunction(env, exports, "waitReadable", WaitReadable) &&
         ExportFunction(env, exports, "sleepNs", SleepNs) &&
         ExportFunction(env, exports, "nowNs", NowNsJs) &&
         ExportFunction(env, exports, "yieldThread", YieldThread) &&
         ExportFunction(env, exports, "threadInvoluntarySwitches",
                        ThreadInvoluntarySwitches);
}

}  // namespace vhost_user
