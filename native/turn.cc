// One callback in the next turn of the event loop, on request, from a handle
// made once: what setImmediate does, without the Immediate object (and the
// work Node does for it) that setImmediate allocates every time. A polling
// completion strategy asks for a turn per wait, at depth 1 one per request.
//
// A uv_check_t runs the callback right after the loop has polled for I/O (the
// phase setImmediate callbacks run in; libuv runs the check handle started
// last first, so before Node's immediates), and a uv_idle_t keeps that poll
// from blocking while a turn is due. Both are started only while a turn is
// due, so a handle keeps the process alive then, as a pending Immediate does.
// The callback is held strongly until turnClose() (or the handle's finalizer).
//
// runMicrotasks() runs the microtask queue from inside such a callback (in its
// async context): a polling engine whose drain settled a lone request lets the
// promise's continuation make the next request there, and looks for its
// completion right after, without a loop turn between (~1.5 us of a depth-1
// round trip here) and without allocating (queueMicrotask costs ~150 B a look;
// running the callback again from here, through napi_make_callback, ~0.5 us a
// look, which qemu-storage-daemon's timing turns into a third of the IOPS).
// N-API has no such call: this is V8's, built against the running Node (so the
// addon is no longer ABI-stable across Node versions, nor loadable by runtimes
// that offer N-API without V8). Node's own process._tickCallback, which also
// runs ticks, aborted the process here when a tick threw (its async-context
// stack left corrupt for this callback's scope).
#include <uv.h>
#include <v8.h>

#include "util.h"
#include "uv_group.h"

namespace vhost_user {
namespace {

constexpr napi_type_tag kTurnTag = {0x7d3a9c1e54b2f860ULL,
                                    0x19e4c6a8b05d3f72ULL};

// The libuv handles, in a group of their own (see uv_group.h).
struct Turn;
struct TurnUv final : UvGroup {
  uv_check_t check;
  uv_idle_t idle;
  Turn* owner = nullptr;  // nullptr once closing

 private:
  void Detach() override;
};

struct Turn {
  napi_env env = nullptr;
  TurnUv* uv = nullptr;  // nullptr once closing
  LoopCallback callback;
  bool due = false;
};

void Cancel(Turn* t) {
  if (!t->due || t->uv == nullptr) return;
  t->due = false;
  uv_check_stop(&t->uv->check);
  uv_idle_stop(&t->uv->idle);
}

void TurnUv::Detach() {
  if (owner == nullptr) return;
  Cancel(owner);
  owner->uv = nullptr;
  owner = nullptr;
}

// Releases everything but the Turn struct itself (JS thread); the handles
// may have been closed already by the environment's teardown.
void Close(napi_env env, Turn* t) {
  if (t->uv != nullptr) t->uv->Close();
  t->callback.Release(env);
}

void FinalizeTurn(napi_env env, void* data, void* /*hint*/) {
  Turn* t = static_cast<Turn*>(data);
  Close(env, t);  // only does work if turnClose() was never called
  delete t;
}

void OnIdle(uv_idle_t* /*handle*/) {}

void OnCheck(uv_check_t* handle) {
  Turn* t = UvGroup::From<TurnUv>(handle)->owner;
  if (t == nullptr || !t->due || !t->callback.held()) return;
  napi_env env = t->env;
  napi_handle_scope scope;
  // Still due if this fails: tried again on the next turn.
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  // One turn per request: the callback asks again if it wants another.
  Cancel(t);
  // process.nextTick callbacks and microtasks run after it, as after each
  // Immediate (microtasks also inside it, where it calls runMicrotasks()).
  t->callback.Call(env, 0, nullptr);
  napi_close_handle_scope(env, scope);
}

// The one argument of turnSchedule / turnCancel / turnClose.
bool GetTurnArg(napi_env env, napi_callback_info info, Turn** out) {
  static const char* const names[] = {"handle"};
  napi_value argv[1];
  void* data = nullptr;
  if (!GetArgs(env, info, 1, argv, names) ||
      !GetTagged(env, argv[0], kTurnTag,
                 "a TurnHandle returned by turnCreate()", &data)) {
    return false;
  }
  *out = static_cast<Turn*>(data);
  return true;
}

napi_value TurnCreate(napi_env env, napi_callback_info info) {
  static const char* const names[] = {"callback"};
  napi_value argv[1];
  if (!GetArgs(env, info, 1, argv, names) ||
      !GetFunction(env, argv[0], "callback")) {
    return nullptr;
  }
  uv_loop_t* loop = nullptr;
  VU_NAPI_CALL(env, napi_get_uv_event_loop(env, &loop));
  TurnUv* uv = new TurnUv;
  const char* failed = "uv_check_init";
  int r = uv_check_init(loop, &uv->check);
  if (r == 0) {
    uv->Add(reinterpret_cast<uv_handle_t*>(&uv->check));
    failed = "uv_idle_init";
    r = uv_idle_init(loop, &uv->idle);
  }
  if (r != 0) {
    uv->Close();  // closes the check handle if it was initialised
    ThrowUvError(env, failed, r);
    return nullptr;
  }
  uv->Add(reinterpret_cast<uv_handle_t*>(&uv->idle));
  Turn* t = new Turn;
  t->env = env;
  t->uv = uv;
  uv->owner = t;
  napi_value handle;
  if (!NewTaggedObject(env, kTurnTag, t, FinalizeTurn, &handle)) {
    uv->Close();
    delete t;
    ThrowNapiFailure(env, "creating a turn handle");
    return nullptr;
  }
  // From here on the handle object owns t; Close() cleans up failures.
  // The callback's async resource is an object of its own, not the frozen
  // handle: the application's continuations may run inside the callback
  // (runMicrotasks), and AsyncLocalStorage stores into the current resource.
  napi_value resource;
  if (napi_create_object(env, &resource) != napi_ok ||
      !t->callback.Init(env, argv[0], resource, "vhost-user:turn") ||
      !uv->HoldTeardown(env)) {
    Close(env, t);
    ThrowNapiFailure(env, "creating a turn handle");
    return nullptr;
  }
  if (napi_object_freeze(env, handle) != napi_ok) {
    Close(env, t);
    ThrowNapiFailure(env, "creating a turn handle");
    return nullptr;
  }
  return handle;
}

napi_value TurnSchedule(napi_env env, napi_callback_info info) {
  Turn* t;
  if (!GetTurnArg(env, info, &t)) return nullptr;
  if (t->uv == nullptr) {
    ThrowArgValue(env, "handle", "is closed");
    return nullptr;
  }
  if (t->due) return Undefined(env);
  int r = uv_check_start(&t->uv->check, OnCheck);
  if (r != 0) {
    ThrowUvError(env, "uv_check_start", r);
    return nullptr;
  }
  r = uv_idle_start(&t->uv->idle, OnIdle);
  if (r != 0) {
    uv_check_stop(&t->uv->check);
    ThrowUvError(env, "uv_idle_start", r);
    return nullptr;
  }
  t->due = true;
  return Undefined(env);
}

napi_value TurnCancel(napi_env env, napi_callback_info info) {
  Turn* t;
  if (!GetTurnArg(env, info, &t)) return nullptr;
  Cancel(t);
  return Undefined(env);
}

napi_value TurnClose(napi_env env, napi_callback_info info) {
  Turn* t;
  if (!GetTurnArg(env, info, &t)) return nullptr;
  Close(env, t);
  return Undefined(env);
}

napi_value RunMicrotasks(napi_env env, napi_callback_info /*info*/) {
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  if (isolate == nullptr) return nullptr;
  // The current context's queue, as Node's own runMicrotasks() runs (a
  // context may have a queue of its own). A no-op inside a microtask.
  v8::MicrotaskQueue* queue = isolate->GetCurrentContext()->GetMicrotaskQueue();
  if (queue != nullptr) queue->PerformCheckpoint(isolate);
  return Undefined(env);
}

}  // namespace

bool RegisterTurn(napi_env env, napi_value exports) {
  return ExportFunction(env, exports, "turnCreate", TurnCreate) &&
         ExportFunction(env, exports, "turnSchedule", TurnSchedule) &&
         ExportFunction(env, exports, "turnCancel", TurnCancel) &&
         ExportFunction(env, exports, "turnClose", TurnClose) &&
         ExportFunction(env, exports, "runMicrotasks", RunMicrotasks);
}

}  // namespace vhost_user
