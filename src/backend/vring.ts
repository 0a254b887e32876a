/**
 * What the frontend told us about one virtqueue (SET_VRING_*), and its eventfds. The ring is
 * "started" while `queue` exists (from SET_VRING_KICK to GET_VRING_BASE) and processes requests
 * only while also enabled (vhost-user spec, "Ring states").
 */

import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { native, UV_READABLE, type PollHandle } from '../native.js';
import type { DeviceQueue, RingAddresses } from './device-queue.js';

export class Vring {
  readonly index: number;
  /** SET_VRING_NUM; 0 until set. */
  num = 0;
  /** SET_VRING_ADDR, in frontend userspace addresses. */
  addr: Omit<RingAddresses, 'size'> | undefined;
  /** SET_VRING_BASE: the first avail index to process when the ring starts. */
  base = 0;
  /** SET_VRING_ENABLE; undefined until sent (the default then depends on PROTOCOL_FEATURES). */
  enabled: boolean | undefined;
  queue: DeviceQueue | undefined;
  /** True when SET_VRING_KICK said NOFD: the ring must be polled. */
  kickless = false;
  #kickFd: number | undefined;
  #kickPoll: PollHandle | undefined;
  #callFd: number | undefined;
  #errFd: number | undefined;

  constructor(index: number) {
    this.index = index;
  }

  get callFd(): number | undefined {
    return this.#callFd;
  }

  get errFd(): number | undefined {
    return this.#errFd;
  }

  /**
   * Takes ownership of `fd` (undefined = NOFD) and watches it; closes the previous one. If the
   * watch fails or the fd cannot be read as an eventfd, the watch stops and `onError` gets the
   * reason (the caller breaks the queue); nothing is thrown into the event loop.
   */
  setKick(
    fd: number | undefined,
    onKick: (count: number) => void,
    onError: (reason: string) => void,
  ): void {
    this.#dropKick();
    this.kickless = fd === undefined;
    if (fd === undefined) return;
    this.#kickFd = fd;
    this.#kickPoll = native.pollStart(fd, UV_READABLE, (status) => {
      let count: number;
      try {
        if (status < 0) throw new Error(`poll error ${status}`);
        count = native.eventfdRead(fd);
      } catch (err) {
        if (this.#kickFd !== fd) return;
        this.#dropKick();
        onError(`kick fd: ${(err as Error).message}`);
        return;
      }
      if (count > 0) onKick(count);
    });
  }

  setCall(fd: number | undefined): void {
    if (this.#callFd !== undefined) native.close(this.#callFd);
    this.#callFd = fd;
  }

  setErr(fd: number | undefined): void {
    if (this.#errFd !== undefined) native.close(this.#errFd);
    this.#errFd = fd;
  }

  /** Stops the ring (GET_VRING_BASE): no more kicks are watched. Returns the next avail index. */
  stop(): number {
    this.#dropKick();
    this.kickless = false;
    if (this.queue !== undefined) this.base = this.queue.lastAvail;
    this.queue = undefined;
    return this.base;
  }

  /** Stops the ring and closes every fd it holds. */
  close(): void {
    this.stop();
    this.setCall(undefined);
    this.setErr(undefined);
  }

  /** close(), and forgets everything SET_VRING_* said (RESET_OWNER). */
  reset(): void {
    this.close();
    this.num = 0;
    this.addr = undefined;
    this.base = 0;
    this.enabled = undefined;
  }

  #dropKick(): void {
    // pollStop before close: libuv must not watch an fd number that may be reused.
    if (this.#kickPoll !== undefined) native.pollStop(this.#kickPoll);
    if (this.#kickFd !== undefined) native.close(this.#kickFd);
    this.#kickPoll = undefined;
    this.#kickFd = undefined;
  }
}

/**
 * Whether `fd` is an eventfd (what SET_VRING_KICK / CALL / ERR must carry): anything else (a
 * FIFO, /dev/null, a read-only file) would make the notifier reads and writes fail later. Asked of
 * /proc/self/fd; without /proc the fd is given the benefit of the doubt (the notifier calls are
 * guarded anyway).
 */
export function isEventfd(fd: number): boolean {
  let target: string;
  try {
    target = readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return !existsSync('/proc/self/fd');
  }
  return target === 'anon_inode:[eventfd]';
}

/**
 * Whether the eventfd `fd` is in semaphore mode (EFD_SEMAPHORE), which a kick fd must not be: a
 * read takes only 1 from its count and poll stays readable while any is left, so one write of a
 * large count would have the backend read and look at the ring on every loop turn for good.
 * Linux shows the mode in /proc/self/fdinfo since 6.5; older kernels do not tell, and there the
 * fd is accepted.
 */
export function isSemaphoreEventfd(fd: number): boolean {
  try {
    return /^eventfd-semaphore:\s*1$/m.test(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  } catch {
    return false;
  }
}
