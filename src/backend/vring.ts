/**
 * What the frontend told us about one virtqueue (SET_VRING_*), and its eventfds. The ring is
 * "started" while `queue` exists (from SET_VRING_KICK to GET_VRING_BASE) and processes requests
 * only while also enabled (vhost-user spec, "Ring states").
 */

import { native, type PollHandle } from '../native.js';
import type { DeviceQueue, RingAddresses } from './device-queue.js';

const UV_READABLE = 1;

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

  /** Takes ownership of `fd` (undefined = NOFD) and watches it; closes the previous one. */
  setKick(fd: number | undefined, onKick: (count: number) => void): void {
    this.#dropKick();
    this.kickless = fd === undefined;
    if (fd === undefined) return;
    this.#kickFd = fd;
    this.#kickPoll = native.pollStart(fd, UV_READABLE, () => {
      const count = native.eventfdRead(fd);
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

  #dropKick(): void {
    // pollStop before close: libuv must not watch an fd number that may be reused.
    if (this.#kickPoll !== undefined) native.pollStop(this.#kickPoll);
    if (this.#kickFd !== undefined) native.close(this.#kickFd);
    this.#kickPoll = undefined;
    this.#kickFd = undefined;
  }
}
