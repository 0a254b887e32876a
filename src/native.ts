/**
 * The one loader of the native addon (`vhost_user_native.node`) and the exact
 * type of what it exports. Nothing else in the package may `require` the
 * addon; everything goes through {@link native}.
 *
 * Conventions of every function below:
 * - Arguments are checked first. A wrong type throws a `TypeError` with `code`
 *   `'ERR_INVALID_ARG_TYPE'` (also for missing arguments); a value out of
 *   range (negative fd, fractional size, unaligned offset...) throws a
 *   `RangeError` with `code` `'ERR_INVALID_ARG_VALUE'`.
 * - A failed system call throws an `Error` whose message is
 *   `<syscall>: <strerror>`, with `code` the errno name (`'ENOENT'`, or
 *   `'E<number>'` if unknown), `errno` the positive errno number and
 *   `syscall` the name of the call. EINTR is retried inside the addon.
 * - Every fd created is close-on-exec; sockets and eventfds are non-blocking.
 * - Every fd created or received (recvmsg) belongs to the thread that got it: the addon closes
 *   it when that thread's Node environment is torn down (a worker's end, terminate() included;
 *   the process's normal exit), unless it was closed through {@link NativeBinding.close} first,
 *   from any thread. Close them that way: one closed otherwise (fs.closeSync) is closed then
 *   if its number still names the same device and inode, which every anonymous-inode file
 *   (eventfds, epoll) shares.
 * - No memory address ever reaches JavaScript.
 *
 * @module
 */
import { constants } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Huge page size for {@link NativeBinding.memfdCreate}: 0 means normal pages. */
export type HugePageSize = 0 | 2097152 | 1073741824;

declare const mappingBrand: unique symbol;
/** Opaque handle of a mapping made by {@link NativeBinding.mmap}. */
export interface MappingHandle {
  readonly [mappingBrand]: true;
}

declare const pollBrand: unique symbol;
/** Opaque handle of a libuv poll watcher made by {@link NativeBinding.pollStart}. */
export interface PollHandle {
  readonly [pollBrand]: true;
}

/** Events of {@link NativeBinding.pollStart} (libuv's uv_poll_event values). */
export const UV_READABLE = 1;
export const UV_WRITABLE = 2;
export const UV_DISCONNECT = 4;

/** {@link NativeBinding.waitReadable}'s last bit: set for the fd at this index or any later one. */
export const WAIT_MASK_LAST_BIT = 30;

declare const turnBrand: unique symbol;
/** Opaque handle of a next-loop-turn callback made by {@link NativeBinding.turnCreate}. */
export interface TurnHandle {
  readonly [turnBrand]: true;
}

/** Result of {@link NativeBinding.recvmsg}. */
export interface RecvResult {
  /** Bytes received: -1 if nothing was pending (EAGAIN), 0 at end of stream. */
  bytes: number;
  /** File descriptors received with the bytes; the caller owns (and must close) them. */
  fds: number[];
}

/** The functions exported by the native addon. */
export interface NativeBinding {
  /** memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING | (hugePageSize ? MFD_HUGETLB | MFD_HUGE_2MB / MFD_HUGE_1GB : 0)). A kernel that refuses MFD_ALLOW_SEALING with MFD_HUGETLB (EINVAL, before 4.16) gets the call again without it. Returns the fd. */
  memfdCreate(name: string, hugePageSize: HugePageSize): number;
  /** fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW): the file's size is fixed from now on. EPERM if F_SEAL_SEAL is set (a memfd made without MFD_ALLOW_SEALING, a tmpfs or hugetlbfs file) or the fd is not open for writing; EINVAL if the file cannot have seals at all. */
  memfdSeal(fd: number): void;
  /** fcntl(fd, F_GET_SEALS): the F_SEAL_* bits (F_SEAL_SEAL 1, SHRINK 2, GROW 4, WRITE 8, FUTURE_WRITE 16), or -1 if the file does not support seals (EINVAL: not shmem or hugetlbfs). Other errors (EBADF) throw. */
  memfdSeals(fd: number): number;
  /** An unlinked file in a hugetlbfs mount: statfs(dir) must report HUGETLBFS_MAGIC (else throw code 'EINVAL', syscall 'statfs'); open O_TMPFILE|O_RDWR|O_CLOEXEC, falling back to mkstemp + unlink. Returns the fd. */
  hugetlbfsCreate(dir: string): number;
  /** ftruncate(fd, size). */
  ftruncate(fd: number, size: number): void;
  /** fstat(fd).st_size */
  fstatSize(fd: number): number;
  /** close(fd). An EINTR from close is treated as success (Linux has released the fd). The addon forgets the fd first, so its thread's teardown will not close the number again. */
  close(fd: number): void;
  /**
   * mmap(NULL, length, PROT_READ|PROT_WRITE, MAP_SHARED, fd, offset). kind 'plain' returns an external ArrayBuffer over the mapping (detachable); kind 'shared' returns a SharedArrayBuffer over it (so JS can use Atomics on it). length > 0, offset page-aligned.
   *
   * On hugetlbfs files the mapping is rounded up to whole huge pages; the buffer still has `length` bytes.
   * If neither {@link NativeBinding.munmap} is called nor the buffer kept, the mapping is unmapped when the buffer is garbage-collected.
   */
  mmap(
    fd: number,
    length: number,
    offset: number,
    kind: 'plain' | 'shared',
  ): { handle: MappingHandle; buffer: ArrayBuffer | SharedArrayBuffer };
  /**
   * Idempotent. 'plain': detach the ArrayBuffer (napi_detach_arraybuffer, via a napi_ref kept by the mapping; so every Buffer/TypedArray over it then has length 0) and munmap. 'shared': a SharedArrayBuffer cannot be detached, so replace the range with anonymous private zero pages (mmap MAP_FIXED|MAP_ANONYMOUS|MAP_PRIVATE|MAP_NORESERVE): the memfd pages are released now, stale views read zeros and never fault, and the real munmap happens in the BackingStore deleter when V8 frees the SharedArrayBuffer. The finalizer/deleter of either kind must munmap exactly once overall and never touch freed native state (use a small heap struct with a refcount or flags).
   *
   * Do not unmap a 'plain' mapping while native code outside this addon (e.g. an fs request in the thread pool) still uses a view of it.
   */
  munmap(handle: MappingHandle): void;
  /** eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC) */
  eventfd(): number;
  /**
   * Writes 1 to the eventfd (EAGAIN on counter overflow is ignored). Relies on O_NONBLOCK, which
   * a peer sharing the file can clear: the frontend's kicks, where eventfdSignal's poll would
   * cost ~0.3 µs a kick.
   */
  eventfdWrite(fd: number): void;
  /**
   * Writes 1 to the eventfd unless poll(2) finds its counter full (it is signalled already), so
   * a peer that cleared O_NONBLOCK and filled the counter cannot block it, but for a narrow race
   * (native/eventfd.cc): the server's signals to its frontends.
   */
  eventfdSignal(fd: number): void;
  /** Non-blocking read whatever the file's flags (preadv2 RWF_NOWAIT; where eventfd refuses it, before Linux ~5.8, poll(2) then read): returns the counter, or 0 if it was not signalled (EAGAIN). */
  eventfdRead(fd: number): number;
  /** socket(AF_UNIX, SOCK_STREAM|SOCK_CLOEXEC|SOCK_NONBLOCK) + connect. Path longer than sun_path: RangeError code 'ERR_INVALID_ARG_VALUE'. connect() on a Unix stream socket completes at once or fails; if it returns EINPROGRESS/EAGAIN, wait for writability with poll() for up to 1000 ms, then check SO_ERROR. Returns the fd. */
  unixConnect(path: string): number;
  /** For the embedded backend and tests: socket + bind + listen (non-blocking, cloexec). Returns the fd. */
  unixListen(path: string, backlog: number): number;
  /** accept4(SOCK_NONBLOCK|SOCK_CLOEXEC); returns -1 on EAGAIN. */
  unixAccept(fd: number): number;
  /** Copies `length` bytes from `source[sourceStart..]` to `target[targetStart..]` (memmove: overlap is fine) without making a view, as `target.set(source.subarray(...))` and Buffer#copy with offsets do (~96 B each). Both are Uint8Arrays; a range past either's end throws RangeError code 'ERR_INVALID_ARG_VALUE' (a detached one has length 0). */
  copyBytes(
    source: Uint8Array,
    sourceStart: number,
    target: Uint8Array,
    targetStart: number,
    length: number,
  ): void;
  /** socketpair(AF_UNIX, SOCK_STREAM|SOCK_NONBLOCK|SOCK_CLOEXEC) */
  socketpair(): [number, number];
  /** sendmsg with the fds as one SCM_RIGHTS control message (at most 253 fds; MSG_NOSIGNAL). Returns bytes sent, or -1 on EAGAIN. EPIPE/ECONNRESET throw with that code. `data` must not be empty when fds are sent. */
  sendmsg(fd: number, data: Uint8Array, fds: readonly number[]): number;
  /** recvmsg into data (MSG_CMSG_CLOEXEC, room for 253 fds). bytes: -1 on EAGAIN, 0 on EOF (peer closed). If MSG_CTRUNC is set, close whatever fds arrived and throw code 'EMSGSIZE'. ECONNRESET counts as EOF (return 0). `data` must not be empty. */
  recvmsg(fd: number, data: Uint8Array): RecvResult;
  /** libuv uv_poll_t on fd (events: 1 = UV_READABLE, 2 = UV_WRITABLE, 4 = UV_DISCONNECT; OR them). The callback runs on the JS thread through napi_make_callback (so microtasks run after it) with (status, events): status < 0 is a libuv error code. The handle starts ref'ed. An exception thrown by the callback is reported as an uncaught exception. */
  pollStart(
    fd: number,
    events: number,
    callback: (status: number, events: number) => void,
  ): PollHandle;
  /** Stop and close the uv handle (uv_close; free native state in the close callback; release the callback napi_ref). Idempotent. Must be called before the fd is closed. */
  pollStop(handle: PollHandle): void;
  /** uv_ref / uv_unref on the poll handle: an unref'ed poll does not keep the process alive. */
  pollRef(handle: PollHandle, ref: boolean): void;
  /** A handle that runs `callback` once per turnSchedule(), in the event loop's next check phase (where setImmediate callbacks run, before them), through napi_make_callback (process.nextTick callbacks and microtasks run after it; microtasks also inside it where it calls runMicrotasks(), in its async context). Unlike setImmediate it allocates nothing per turn. The callback is held strongly until turnClose() or until the handle is garbage-collected (its finalizer closes it; a due turn then never runs). An exception thrown by the callback is reported as an uncaught exception. */
  turnCreate(callback: () => void): TurnHandle;
  /** Asks for one run of the callback in the next turn; the loop does not block while one is due, and the process stays alive. Idempotent until it runs. A closed handle throws RangeError code 'ERR_INVALID_ARG_VALUE'. */
  turnSchedule(handle: TurnHandle): void;
  /** Withdraws a due run, if any. Idempotent. */
  turnCancel(handle: TurnHandle): void;
  /** Cancels, closes the libuv handles and releases the callback. Idempotent. */
  turnClose(handle: TurnHandle): void;
  /** Runs the microtask queue now (V8's checkpoint; a no-op inside a microtask), from inside a turn's callback: the continuations of the promises it settled run before it returns. process.nextTick callbacks still run when the callback returns. */
  runMicrotasks(): void;
  /** Blocking wait for the sync API: poll(2) the fds for POLLIN; returns a bitmask with bit i set if fds[i] is readable or hung up / errored (POLLIN|POLLHUP|POLLERR|POLLRDHUP), bit 30 for fds[30] and every later one ({@link WAIT_MASK_LAST_BIT}); 0 on timeout. timeoutMs < 0 means no timeout. At most 1024 fds. EINTR is retried with the remaining time. An fd that is not open throws code 'EBADF'. */
  waitReadable(fds: readonly number[], timeoutMs: number): number;
  /** Blocking sleep with nanosecond resolution (clock_nanosleep, CLOCK_MONOTONIC), for the sleep-poll completion strategy. 0 ≤ ns ≤ 1e9. The thread's timer slack is 1 ns during the sleep (PR_SET_TIMERSLACK, restored after): the default 50 µs would stretch every short sleep. */
  sleepNs(ns: number): void;
  /** Monotonic clock in nanoseconds as a number (CLOCK_MONOTONIC). Exact while below 2^53 ns (about 104 days of uptime). */
  nowNs(): number;
  /** A clock read that allocates no heap number, unlike performance.now() and nowNs(): `tick()` writes CLOCK_MONOTONIC in ms into `cell[0]` and returns nothing. The cell's 8 bytes belong to the addon and are never freed (a view of them may be transferred and outlive everything else). */
  clockCreate(): { readonly tick: () => void; readonly cell: Float64Array };
  /** sched_yield(2): lets another runnable thread on this CPU run first. */
  yieldThread(): void;
  /** How many times the calling (JS) thread was preempted: getrusage(RUSAGE_THREAD).ru_nivcsw. */
  threadInvoluntarySwitches(): number;
}

const ADDON_FILE = 'vhost_user_native.node';

/**
 * dlopen(3)'s RTLD_NODELETE (the same in glibc and musl; os.constants.dlopen leaves it out). A
 * worker thread's exit unloads the addons it loaded (when no other thread of the process holds
 * them), before V8 frees the worker's heap, and with it the rings' SharedArrayBuffer, whose
 * deleter is the addon's: without it the process died of SIGSEGV there.
 */
const RTLD_NODELETE = 0x1000;

function loadNative(): NativeBinding {
  // Compiled JS lives in dist/src/, so the package root is two levels up.
  const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
  const tried: string[] = [];
  const errors: unknown[] = [];
  for (const dir of ['build/Release', 'build/Debug']) {
    const path = join(root, dir, ADDON_FILE);
    try {
      const addon = { exports: {} };
      process.dlopen(addon, path, constants.dlopen.RTLD_LAZY | RTLD_NODELETE);
      return addon.exports as NativeBinding;
    } catch (err) {
      tried.push(`${path} (${err instanceof Error ? err.message.split('\n')[0] : String(err)})`);
      errors.push(err);
    }
  }
  throw new Error(
    `vhost-user: cannot load the native addon ${ADDON_FILE}; tried:\n  ${tried.join('\n  ')}\n` +
      'Build it with `node-gyp rebuild`.',
    { cause: new AggregateError(errors, 'native addon load errors') },
  );
}

/** The native addon, loaded once when this module is first imported. */
export const native: NativeBinding = loadNative();
