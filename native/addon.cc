// Module initialisation of the vhost-user native addon.
//
// The addon only wraps what JavaScript cannot do itself: memfd/hugetlbfs
// files and shared mappings (memory.cc), eventfds (eventfd.cc), Unix sockets
// with SCM_RIGHTS (socket.cc), fd readiness via libuv or poll(2)
// (poll.cc), a reusable next-loop-turn callback (turn.cc), and a clock that
// JavaScript reads without allocating (clock.cc); the fds it made or received
// close with the thread that owns them (fds.cc). It knows nothing about
// vhost-user messages or virtqueues.
#include <node_api.h>

#include "util.h"

namespace vhost_user {
namespace {

napi_value Init(napi_env env, napi_value exports) {
  if (!RegisterFds(env) || !RegisterMemory(env, exports) ||
      !RegisterEventfd(env, exports) || !RegisterSocket(env, exports) ||
      !RegisterPoll(env, exports) || !RegisterTurn(env, exports) ||
      !RegisterClock(env, exports)) {
    return nullptr;
  }
  return exports;
}

}  // namespace
}  // namespace vhost_user

NAPI_MODULE_INIT() { return vhost_user::Init(env, exports); }
