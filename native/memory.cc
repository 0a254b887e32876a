// Guest memory: memfd/hugetlbfs files and shared mappings over them.
//
// A mapping is exposed as an ArrayBuffer ('plain') or a SharedArrayBuffer
// ('shared'); the JS side never sees its address. The native state of a
// mapping is a small heap struct shared by the JS handle object and the
// buffer (finalizer or BackingStore deleter); it is freed when both have let
// go of it, and munmap(2) of the real mapping happens exactly once.
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>

// V8 is needed only to create a SharedArrayBuffer over existing memory,
// which N-API cannot do in Node 20 (see MakeSharedArrayBuffer).
#include <v8.h>

#include "util.h"

#ifndef F_ADD_SEALS
#define F_ADD_SEALS 1033
#define F_GET_SEALS 1034
#endif
#ifndef F_SEAL_SEAL
#define F_SEAL_SEAL 0x0001
#define F_SEAL_SHRINK 0x0002
#define F_SEAL_GROW 0x0004
#endif
#ifndef MFD_ALLOW_SEALING
#define MFD_ALLOW_SEALING 0x0002U
#endif
#ifndef MFD_HUGE_SHIFT
#define MFD_HUGE_SHIFT 26
#endif
#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21U << MFD_HUGE_SHIFT)
#endif
#ifndef MFD_HUGE_1GB
#define MFD_HUGE_1GB (30U << MFD_HUGE_SHIFT)
#endif

namespace vhost_user {
namespace {

constexpr uint64_t k2MiB = 2097152;
constexpr uint64_t k1GiB = 1073741824;

// Distinguishes mapping handles from any other wrapped object.
constexpr napi_type_tag kMappingTag = {0x7668e5f1c0a94b21ULL,
                                       0x9d3b61a2e47f0c58ULL};

struct Mapping {
  Mapping(void* a, size_t len, size_t map_len, bool is_shared)
      : addr(a), length(len), map_length(map_len), shared(is_shared) {}

  void* const addr;
  const size_t length;      // bytes visible to JavaScript
  const size_t map_length;  // bytes mapped (rounded up to the huge page)
  const bool shared;
  std::mutex mu;          // guards the two flags below
  bool unmapped = false;  // munmap(2) of the range has been done
  bool released = false;  // munmap() was called from JavaScript
  // Owners: the JS handle object, and the buffer (its finalizer or deleter).
  std::atomic<int> refs{2};
  napi_ref buffer_ref = nullptr;  // 'plain' only: weak ref to the ArrayBuffer
};

void Unref(Mapping* m) {
  if (m->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete m;
}

// munmap(2) the whole range if nobody did yet.
void UnmapOnce(Mapping* m) {
  std::lock_guard<std::mutex> lock(m->mu);
  if (!m->unmapped) {
    munmap(m->addr, m->map_length);
    m->unmapped = true;
  }
}

// Finalizer of a 'plain' ArrayBuffer (JS thread): no view of it remains.
void PlainBufferFinalize(napi_env /*env*/, void* /*data*/, void* hint) {
  Mapping* m = static_cast<Mapping*>(hint);
  UnmapOnce(m);
  Unref(m);
}

// BackingStore deleter of a 'shared' SharedArrayBuffer. V8 may call it on
// any thread, hence the mutex and the atomic refcount.
void SharedBackingStoreDeleter(void* /*data*/, size_t /*length*/,
                               void* deleter_data) {
  Mapping* m = static_cast<Mapping*>(deleter_data);
  UnmapOnce(m);
  Unref(m);
}

void DeleteBufferRef(napi_env env, Mapping* m) {
  if (m->buffer_ref != nullptr) {
    napi_delete_reference(env, m->buffer_ref);
    m->buffer_ref = nullptr;
  }
}

// Finalizer of the JS handle object. The buffer may outlive the handle, so
// this never unmaps; it only drops the handle's share of the state.
void HandleFinalize(napi_env env, void* data, void* /*hint*/) {
  Mapping* m = static_cast<Mapping*>(data);
  DeleteBufferRef(env, m);
  Unref(m);
}

// Creates a SharedArrayBuffer whose backing store is [addr, addr+length).
// N-API (Node 20) can only create SharedArrayBuffers that V8 allocates
// itself, so this one function goes through V8's API. The result is
// converted to napi_value the way Node does internally
// (v8impl::JsValueFromV8LocalValue): a napi_value is the pointer inside a
// v8::Local. The Local lives in the handle scope Node opened for this
// callback, so it stays valid after we return it.
napi_value MakeSharedArrayBuffer(Mapping* m) {
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  std::unique_ptr<v8::BackingStore> store =
      v8::SharedArrayBuffer::NewBackingStore(
          m->addr, m->length, SharedBackingStoreDeleter, m);
  v8::Local<v8::Value> value =
      v8::SharedArrayBuffer::New(isolate, std::move(store));
  static_assert(sizeof(v8::Local<v8::Value>) == sizeof(napi_value),
                "napi_value must be the same size as v8::Local");
  napi_value result;
  std::memcpy(&result, &value, sizeof(result));
  return result;
}

napi_value MemfdCreate(napi_env env, napi_callback_info info) {
  static const char* const names[] = {"name", "hugePageSize"};
  napi_value argv[2];
  std::string name;
  uint64_t huge = 0;
  if (!GetArgs(env, info, 2, argv, names) ||
      !GetString(env, argv[0], "name", &name) ||
      !GetSize(env, argv[1], "hugePageSize", &huge)) {
    return nullptr;
  }
  unsigned int flags = MFD_CLOEXEC;
  if (huge == k2MiB) {
    flags |= MFD_HUGETLB | MFD_HUGE_2MB;
  } else if (huge == k1GiB) {
    flags |= MFD_HUGETLB | MFD_HUGE_1GB;
  } else if (huge != 0) {
    ThrowArgValue(env, "hugePageSize",
                  "must be 0, 2097152 or 1073741824. Received " +
                      std::to_string(huge));
    return nullptr;
  }
  // Sealable, so that the frontend can promise the backend (F_SEAL_SHRINK)
  // that the file never shrinks under its mapping. Kernels before 4.16
  // refuse MFD_ALLOW_SEALING together with MFD_HUGETLB (EINVAL): such a
  // hugetlb memfd is created without it, and memfdSeal then fails on it.
  int fd = memfd_create(name.c_str(), flags | MFD_ALLOW_SEALING);
  if (fd < 0 && errno == EINVAL && (flags & MFD_HUGETLB) != 0) {
    fd = memfd_create(name.c_str(), flags);
  }
  if (fd < 0) {
    ThrowErrno(env, "memfd_create", errno);
    return nullptr;
  }
  return ReturnFd(env, fd);
}

napi_value MemfdSeal(napi_env env, napi_callback_info info) {
  static const char* const names[] = {"fd"};
  napi_value argv[1];
  int fd;
  if (!GetArgs(env, info, 1, argv, names) || !GetFd(env, argv[0], "fd", &fd)) {
    return nullptr;
  }
  if (RetryEintr([&] {
        return fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
      }) < 0) {
    ThrowErrno(env, "fcntl", errno);
    return nullptr;
  }
  return Undefined(env);
}

napi_value MemfdSeals(napi_env env, napi_callback_info info) {
  static const char* const names[] = {"fd"};
  napi_value argv[1];
  int fd;
  if (!GetArgs(env, info, 1, argv, names) || !GetFd(env, argv[0], "fd", &fd)) {
    return nullptr;
  }
  int seals = RetryEintr([&] { return fcntl(fd, F_GET_SEALS); });
  if (seals < 0) {
    // EINVAL: a file without seal support (not shmem/hugetlbfs).
    if (errno == EINVAL) return MakeInt32(env, -1);
    ThrowErrno(env, "fcntl", errno);
    return nullptr;
  }
  return MakeInt32(env, seals);
}

napi_value HugetlbfsCreate(napi_env env, napi_callback_info info) {
  static const char* const names[] = {"dir"};
  napi_value argv[1];
  std::string dir;
  if (!GetArgs(env, info, 1, argv, names) ||
      !GetString(env, argv[0], "dir", &dir)) {
    return nullptr;
  }
  struct statfs fs;
  if (RetryEintr([&] { return statfs(dir.c_str(), &fs); }) < 0) {
    ThrowErrno(env, "statfs", errno);
    return nullptr;
  }
  if (static_cast<unsigned long>(fs.f_type) != HUGETLBFS_MAGIC) {
    ThrowErrno(env, "statfs", EINVAL);
    return nullptr;
  }
  int fd = RetryEintr(
      [&] { return open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600); });
  if (fd >= 0) return ReturnFd(env, fd);
  if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) {
    ThrowErrno(env, "open", errno);
    return nullptr;
  }
  // Kernel or filesystem without O_TMPFILE: create a unique file, unlink it.
  std::string path = dir + "/vhost-user-XXXXXX";
  fd = RetryEintr([&] { return mkostemp(&path[0], O_CLOEXEC); });
  if (fd < 0) {
    ThrowErrno(env, "mkstemp", errno);
    return nullptr;
  }
  if (unlink(path.c_str()) < 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, "unlink", err);
    return nullptr;
  }
  return ReturnFd(env, fd);
}

napi_value Ftruncate(napi_env env, napi_callback_info info) {
  static const char* const names[] = {"fd", "size"};
  napi_value argv[2];
  int fd;
  uint64_t size;
  if (!GetArgs(env, info, 2, argv, names) || !GetFd(env, argv[0], "fd", &fd) ||
      !GetSize(env, argv[1], "size", &size)) {
    return nullptr;
  }
  if (RetryEintr([&] { return ftruncate(fd, static_cast<off_t>(size)); }) <
      0) {
    ThrowErrno(env, "ftruncate", errno);
    return nullptr;
  }
  return Undefined(env);
}

napi_value FstatSize(napi_env env, napi_callback_info info) {
  static const char* const names[] = {"fd"};
  napi_value argv[1];
  int fd;
  if (!GetArgs(env, info, 1, argv, names) || !GetFd(env, argv[0], "fd", &fd)) {
    return nullptr;
  }
  struct stat st;
  if (RetryEintr([&] { return fstat(fd, &st); }) < 0) {
    ThrowErrno(env, "fstat", errno);
    return nullptr;
  }
  return MakeNumber(env, static_cast<double>(st.st_size));
}

napi_value Close(napi_env env, napi_callback_info info) {
  static const char* const names[] = {"fd"};
  napi_value argv[1];
  int fd;
  if (!GetArgs(env, info, 1, argv, names) || !GetFd(env, argv[0], "fd", &fd)) {
    return nullptr;
  }
  // Forgotten as it closes: the number may then be another thread's next fd,
  // which the environment's teardown must not close (fds.cc).
  if (CloseTracked(fd) < 0 && errno != EINTR) {
    ThrowErrno(env, "close", errno);
    return nullptr;
  }
  return Undefined(env);
}

napi_value Mmap(napi_env env, napi_callback_info info) {
  static const char* const names[] = {"fd", "length", "offset", "kind"};
  napi_value argv[4];
  int fd;
  uint64_t length, offset;
  std::string kind;
  if (!GetArgs(env, info, 4, argv, names) || !GetFd(env, argv[0], "fd", &fd) ||
      !GetSize(env, argv[1], "length", &length) ||
      !GetSize(env, argv[2], "offset", &offset) ||
      !GetString(env, argv[3], "kind", &kind)) {
    return nullptr;
  }
  if (length == 0) {
    ThrowArgValue(env, "length", "must be greater than 0. Received 0");
    return nullptr;
  }
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  if (offset % page != 0) {
    ThrowArgValue(env, "offset",
                  "must be a multiple of the page size (" +
                      std::to_string(page) + "). Received " +
                      std::to_string(offset));
    return nullptr;
  }
  const bool shared = kind == "shared";
  if (!shared && kind != "plain") {
    ThrowArgValue(env, "kind", "must be 'plain' or 'shared'. Received '" +
                                   kind + "'");
    return nullptr;
  }
  // hugetlbfs mappings must be unmapped (and replaced) in whole huge pages.
  uint64_t map_length = length;
  struct statfs fs;
  if (RetryEintr([&] { return fstatfs(fd, &fs); }) < 0) {
    ThrowErrno(env, "fstatfs", errno);
    return nullptr;
  }
  if (static_cast<unsigned long>(fs.f_type) == HUGETLBFS_MAGIC &&
      fs.f_bsize > 0) {
    const uint64_t huge = static_cast<uint64_t>(fs.f_bsize);
    map_length = (length + huge - 1) / huge * huge;
  }
  void* addr = mmap(nullptr, map_length, PROT_READ | PROT_WRITE, MAP_SHARED,
                    fd, static_cast<off_t>(offset));
  if (addr == MAP_FAILED) {
    ThrowErrno(env, "mmap", errno);
    return nullptr;
  }
  Mapping* m = new Mapping(addr, length, map_length, shared);

  napi_value buffer;
  if (shared) {
    buffer = MakeSharedArrayBuffer(m);  // the deleter now owns one ref
  } else {
    if (napi_create_external_arraybuffer(env, addr, length,
                                         PlainBufferFinalize, m,
                                         &buffer) != napi_ok) {
      munmap(addr, map_length);
      delete m;
      ThrowNapiFailure(env, "napi_create_external_arraybuffer");
      return nullptr;
    }
    // From here on the finalizer owns one ref. A failure below leaves the
    // buffer to the GC, which unmaps it.
    if (napi_create_reference(env, buffer, 0, &m->buffer_ref) != napi_ok) {
      Unref(m);
      ThrowNapiFailure(env, "napi_create_reference");
      return nullptr;
    }
  }

  napi_value handle, result;
  if (!NewTaggedObject(env, kMappingTag, m, HandleFinalize, &handle)) {
    DeleteBufferRef(env, m);
    Unref(m);
    ThrowNapiFailure(env, "creating a mapping handle");
    return nullptr;
  }
  VU_NAPI_CALL(env, napi_object_freeze(env, handle));
  VU_NAPI_CALL(env, napi_create_object(env, &result));
  VU_NAPI_CALL(env, napi_set_named_property(env, result, "handle", handle));
  VU_NAPI_CALL(env, napi_set_named_property(env, result, "buffer", buffer));
  return result;
}

napi_value Munmap(napi_env env, napi_callback_info info) {
  static const char* const names[] = {"handle"};
  napi_value argv[1];
  void* data = nullptr;
  if (!GetArgs(env, info, 1, argv, names) ||
      !GetTagged(env, argv[0], kMappingTag,
                 "a MappingHandle returned by mmap()", &data)) {
    return nullptr;
  }
  Mapping* m = static_cast<Mapping*>(data);

  if (!m->shared) {
    if (m->buffer_ref != nullptr) {
      napi_value buffer = nullptr;
      VU_NAPI_CALL(env,
                   napi_get_reference_value(env, m->buffer_ref, &buffer));
      // nullptr: the ArrayBuffer was collected, so no view can remain.
      if (buffer != nullptr) {
        VU_NAPI_CALL(env, napi_detach_arraybuffer(env, buffer));
      }
      DeleteBufferRef(env, m);
    }
    std::lock_guard<std::mutex> lock(m->mu);
    m->released = true;
    if (!m->unmapped) {
      if (munmap(m->addr, m->map_length) < 0) {
        ThrowErrno(env, "munmap", errno);
        return nullptr;
      }
      m->unmapped = true;
    }
    return Undefined(env);
  }

  // A SharedArrayBuffer cannot be detached: swap the range for private zero
  // pages so the file's pages are released now and stale views read zeros.
  // The address range stays reserved until the deleter munmaps it.
  std::lock_guard<std::mutex> lock(m->mu);
  if (!m->unmapped && !m->released) {
    void* r = mmap(m->addr, m->map_length, PROT_READ | PROT_WRITE,
                   MAP_FIXED | MAP_ANONYMOUS | MAP_PRIVATE | MAP_NORESERVE,
                   -1, 0);
    if (r == MAP_FAILED) {
      ThrowErrno(env, "mmap", errno);
      return nullptr;
    }
  }
  m->released = true;
  return Undefined(env);
}

// copyBytes(source, sourceStart, target, targetStart, length): memmove
// between two Uint8Arrays' ranges. JavaScript has no ranged copy that makes
// no object: `target.set(source.subarray(...))` and Buffer#copy with offsets
// both build a view (~96 B), once per bounced request.
napi_value CopyBytes(napi_env env, napi_callback_info info) {
  static const char* const names[] = {"source", "sourceStart", "target",
                                      "targetStart", "length"};
  napi_value argv[5];
  void* source = nullptr;
  void* target = nullptr;
  size_t source_length = 0;
  size_t target_length = 0;
  uint64_t source_start = 0;
  uint64_t target_start = 0;
  uint64_t length = 0;
  if (!GetArgs(env, info, 5, argv, names) ||
      !GetBytes(env, argv[0], "source", &source, &source_length) ||
      !GetSize(env, argv[1], "sourceStart", &source_start) ||
      !GetBytes(env, argv[2], "target", &target, &target_length) ||
      !GetSize(env, argv[3], "targetStart", &target_start) ||
      !GetSize(env, argv[4], "length", &length)) {
    return nullptr;
  }
  if (source_start > source_length) {
    ThrowArgValue(env, "sourceStart", "is past the end of source");
    return nullptr;
  }
  if (target_start > target_length) {
    ThrowArgValue(env, "targetStart", "is past the end of target");
    return nullptr;
  }
  if (length > source_length - source_start) {
    ThrowArgValue(env, "length", "reaches past the end of source");
    return nullptr;
  }
  if (length > target_length - target_start) {
    ThrowArgValue(env, "length", "reaches past the end of target");
    return nullptr;
  }
  if (length > 0) {
    std::memmove(static_cast<uint8_t*>(target) + target_start,
                 static_cast<const uint8_t*>(source) + source_start, length);
  }
  return nullptr;
}

}  // namespace

bool RegisterMemory(napi_env env, napi_value exports) {
  return ExportFunction(env, exports, "memfdCreate", MemfdCreate) &&
         ExportFunction(env, exports, "memfdSeal", MemfdSeal) &&
         ExportFunction(env, exports, "memfdSeals", MemfdSeals) &&
         ExportFunction(env, exports, "hugetlbfsCreate", HugetlbfsCreate) &&
         ExportFunction(env, exports, "ftruncate", Ftruncate) &&
         ExportFunction(env, exports, "fstatSize", FstatSize) &&
         ExportFunction(env, exports, "close", Close) &&
         ExportFunction(env, exports, "mmap", Mmap) &&
         ExportFunction(env, exports, "munmap", Munmap) &&
         ExportFunction(env, exports, "copyBytes", CopyBytes);
}

}  // namespace vhost_user
