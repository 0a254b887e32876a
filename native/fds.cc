// The fds the addon made or received, closed when the environment (thread)
// that owns them is torn down.
//
// fds belong to the process, not to the thread that opened them: a worker
// ended by worker.terminate() runs no more JavaScript (no 'exit' event), so
// nothing in JS can close what its devices held, and the socket would keep
// the backend's connection (qemu-storage-daemon serves one at a time) open
// for the life of the process. An env cleanup hook, registered as the addon
// loads, closes every fd the environment still owns. Cleanup hooks run in
// reverse order of registration, so the async hooks of the uv_poll handles
// (uv_group.h: each is registered later, when its watcher starts) have
// already called uv_close on them, which takes the fd out of epoll at once:
// no libuv handle of the thread watches an fd this closes (one another thread
// started on it is that thread's mistake: pollStop before close). The main
// thread's environment is torn down at a normal exit too (process.exit() ends
// the process first): closing then is harmless. Node does the same for the
// fds a worker opens with fs.openSync (Worker option trackUnmanagedFds).
//
// The table is process-wide, not per environment, so that a close through
// the addon by any thread forgets the number before it can be reused. An fd
// closed behind the addon's back (fs.closeSync) cannot be forgotten; the
// number may then be reused, so the hook closes it only if it is still the
// same file (device and inode). That is a guard, not a proof: every
// anonymous-inode file (eventfds, epoll, libuv's own) shares one inode. So
// the rule is: close the addon's fds through native.close.
//
// Mappings are not this file's business: a 'plain' buffer's finalizer and a
// 'shared' buffer's BackingStore deleter unmap it as the environment's heap
// goes (memory.cc), exactly once.
#include <sys/stat.h>
#include <unistd.h>

#include <mutex>
#include <unordered_map>

#include "util.h"

namespace vhost_user {
namespace {

struct Owned {
  napi_env env;
  dev_t dev;
  ino_t ino;
};

struct Table {
  std::mutex mu;
  std::unordered_map<int, Owned> fds;
};

// Never freed: a thread may still close an fd while the process exits, after
// static destructors have run.
Table& Fds() {
  static Table* table = new Table;
  return *table;
}

void CloseOwned(void* arg) {
  napi_env env = static_cast<napi_env>(arg);
  Table& t = Fds();
  // Checked and closed under the lock: a close through the addon on another
  // thread (CloseTracked) cannot free the number in between for a newcomer.
  std::lock_guard<std::mutex> lock(t.mu);
  for (auto it = t.fds.begin(); it != t.fds.end();) {
    if (it->second.env != env) {
      ++it;
      continue;
    }
    struct stat st;
    if (fstat(it->first, &st) == 0 && st.st_dev == it->second.dev &&
        st.st_ino == it->second.ino) {
      close(it->first);  // not retried on EINTR (see CloseTracked)
    }
    it = t.fds.erase(it);
  }
}

}  // namespace

void TrackFd(napi_env env, int fd) {
  struct stat st;
  // fstat of an fd just made cannot fail; if it did, the hook could not tell
  // the file from a later one of the same number: leave it out.
  if (fstat(fd, &st) != 0) return;
  Table& t = Fds();
  std::lock_guard<std::mutex> lock(t.mu);
  // Replaces a stale entry: a number closed behind the addon's back.
  t.fds[fd] = Owned{env, st.st_dev, st.st_ino};
}

int CloseTracked(int fd) {
  Table& t = Fds();
  // Forgotten and closed under the lock, so a teardown never sees the number
  // free and given to another thread while still in the table.
  std::lock_guard<std::mutex> lock(t.mu);
  t.fds.erase(fd);
  // Not retried on EINTR: on Linux the fd is released even then, and a retry
  // could close an fd another thread has just been given.
  return close(fd);
}

napi_value ReturnFd(napi_env env, int fd) {
  napi_value result;
  if (napi_create_int32(env, fd, &result) != napi_ok) {
    close(fd);
    ThrowNapiFailure(env, "napi_create_int32");
    return nullptr;
  }
  TrackFd(env, fd);
  return result;
}

bool RegisterFds(napi_env env) {
  // Each load of the addon has a napi_env of its own, so (CloseOwned, env)
  // is registered once: a repeated pair would abort the process.
  VU_NAPI_CALL_BOOL(env, napi_add_env_cleanup_hook(env, CloseOwned, env));
  return true;
}

}  // namespace vhost_user
