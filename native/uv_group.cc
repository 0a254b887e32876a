#include "uv_group.h"

#include <cstdlib>

namespace vhost_user {

void UvGroup::Add(uv_handle_t* handle) {
  if (count_ == kMaxHandles) abort();  // a programming error, not input
  handle->data = this;
  handles_[count_++] = handle;
  open_++;
}

bool UvGroup::HoldTeardown(napi_env env) {
  return napi_add_async_cleanup_hook(env, OnTeardown, this, &teardown_) ==
         napi_ok;
}

void UvGroup::Close() {
  if (closing_) return;
  closing_ = true;
  if (open_ == 0) {
    // Nothing was added (its initialisation failed): nothing to stop, and no
    // close callback will come.
    if (teardown_ != nullptr) napi_remove_async_cleanup_hook(teardown_);
    delete this;
    return;
  }
  Detach();
  for (int i = 0; i < count_; i++) uv_close(handles_[i], OnClosed);
}

void UvGroup::OnClosed(uv_handle_t* handle) {
  UvGroup* group = static_cast<UvGroup*>(handle->data);
  if (--group->open_ > 0) return;
  if (group->teardown_ != nullptr) {
    napi_remove_async_cleanup_hook(group->teardown_);
  }
  delete group;
}

void UvGroup::OnTeardown(napi_async_cleanup_hook_handle /*hook*/, void* arg) {
  static_cast<UvGroup*>(arg)->Close();
}

}  // namespace vhost_user
