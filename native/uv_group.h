// libuv handles that close together, apart from the object that used them.
//
// uv_close completes on a later loop iteration, possibly after the JS handle
// object (and the struct it owns) is gone: the handles live in a group of
// their own, which the last close callback frees. Until then an async cleanup
// hook holds up the environment's teardown (a worker that exits): the addon
// may be unloaded right after it, and a close callback left pending would
// then jump into unmapped code.
#ifndef VHOST_USER_NATIVE_UV_GROUP_H_
#define VHOST_USER_NATIVE_UV_GROUP_H_

#include <node_api.h>
#include <uv.h>

namespace vhost_user {

class UvGroup {
 public:
  UvGroup() = default;
  UvGroup(const UvGroup&) = delete;
  UvGroup& operator=(const UvGroup&) = delete;

  // Adds an initialised handle, which then closes with the group; its data
  // points to the group (see From).
  void Add(uv_handle_t* handle);
  // Closes the group if the environment is torn down first.
  bool HoldTeardown(napi_env env);
  // Detaches from the owner and closes every handle; idempotent. The group
  // frees itself once they have closed (at once if none was added: then
  // there is no owner yet either).
  void Close();

  // The group a handle of it belongs to.
  template <typename Group, typename Handle>
  static Group* From(Handle* handle) {
    return static_cast<Group*>(static_cast<UvGroup*>(handle->data));
  }

 protected:
  virtual ~UvGroup() = default;
  // Called once, by Close(), before the handles close: stop them, and cut
  // the owner's link to the group.
  virtual void Detach() = 0;

 private:
  static void OnClosed(uv_handle_t* handle);
  static void OnTeardown(napi_async_cleanup_hook_handle hook, void* arg);

  static constexpr int kMaxHandles = 2;
  uv_handle_t* handles_[kMaxHandles] = {};
  int count_ = 0;
  int open_ = 0;
  bool closing_ = false;
  napi_async_cleanup_hook_handle teardown_ = nullptr;
};

}  // namespace vhost_user

#endif  // VHOST_USER_NATIVE_UV_GROUP_H_
