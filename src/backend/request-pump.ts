/**
 * Moves requests from the rings of one connection through the block device and back: one drain
 * routine, called on a kick or by the polling loop, with completions either immediate or delayed
 * (fault injection), and the interrupt decision once per batch.
 */

import { native } from '../native.js';
import { VIRTIO_BLK_S_IOERR } from '../devices/blk/spec.js';
import type { BlkDevice } from './blk-device.js';
import type { DeviceChain, DeviceQueue } from './device-queue.js';
import type { FaultPlan, UsedFault } from './faults.js';
import type { Vring } from './vring.js';
import type { ServerStats } from './stats.js';

/** Chains handled per turn of the event loop before yielding to the socket and other rings. */
const BATCH = 128;
/** Empty polling rounds before the polling loop slows from setImmediate to a 1 ms timer. */
const SPIN_ROUNDS = 256;

export interface PumpHost {
  readonly rings: readonly Vring[];
  readonly polling: boolean;
  /** Whether the ring may process requests (started and enabled). */
  isRunning(ring: Vring): boolean;
  /** The fault plan asks for the connection to go. */
  drop(reason: string): void;
  /** The driver broke a queue beyond recovery. */
  queueBroken(ring: Vring, reason: string): void;
  /** Signalling the call eventfd failed: the queue is broken and the connection must go. */
  notifierFailed(ring: Vring, reason: string): void;
  /** A bug of ours in a timer or immediate: report it, drop the connection. */
  internalError(error: unknown): void;
}

export class RequestPump {
  readonly #host: PumpHost;
  readonly #device: BlkDevice;
  readonly #faults: FaultPlan;
  readonly #stats: ServerStats;
  readonly #scheduled = new Set<Vring>();
  /** Delayed completions: timer -> the completion it holds. */
  readonly #delayed = new Map<NodeJS.Timeout, () => void>();
  #pollTimer: NodeJS.Timeout | NodeJS.Immediate | undefined;
  #dropTimer: NodeJS.Timeout | undefined;
  #idleRounds = 0;
  #stopped = false;

  constructor(host: PumpHost, device: BlkDevice, faults: FaultPlan, stats: ServerStats) {
    this.#host = host;
    this.#device = device;
    this.#faults = faults;
    this.#stats = stats;
  }

  /** Starts the polling loop if some ring needs it (polling mode, or a NOFD kick). */
  updatePolling(): void {
    const needed = this.#host.rings.some(
      (r) => r.queue !== undefined && (this.#host.polling || r.kickless),
    );
    if (needed && this.#pollTimer === undefined && !this.#stopped) this.#schedulePoll(true);
  }

  /** Drains `ring` now (up to one batch; the rest on the next turn). */
  process(ring: Vring): number {
    const queue = ring.queue;
    if (this.#stopped || queue === undefined || !this.#host.isRunning(ring)) return 0;
    const poll = this.#host.polling || ring.kickless;
    let handled = 0;
    for (;;) {
      if (this.#faults.dropDue) break;
      const chain = queue.pop();
      if (chain === undefined) {
        if (queue.broken !== undefined) {
          this.#host.queueBroken(ring, queue.broken);
          break;
        }
        if (poll) {
          queue.suppressKicks();
          break;
        }
        // Re-enable kicks, then look again: a chain published in between gets no kick.
        if (queue.enableKicks()) continue;
        break;
      }
      this.#handle(ring, queue, chain);
      if (++handled === BATCH) {
        if (!poll) this.#scheduleRing(ring);
        break;
      }
    }
    // Polling: keep avail_event out of the driver's reach as it moves on.
    if (poll && handled > 0) queue.suppressKicks();
    this.#interrupt(ring, queue);
    return handled;
  }

  /**
   * Delayed completions are delivered at once: at GET_VRING_BASE, RESET_OWNER, and before
   * SET_MEM_TABLE rebuilds the queues (a completion must reach the queue its chain came from).
   */
  flush(): void {
    const pending = [...this.#delayed];
    this.#delayed.clear();
    for (const [timer, complete] of pending) {
      clearTimeout(timer);
      complete();
    }
  }

  /** The connection is gone: nothing touches the rings any more. */
  stop(): void {
    this.#stopped = true;
    for (const timer of this.#delayed.keys()) clearTimeout(timer);
    this.#delayed.clear();
    this.#scheduled.clear();
    clearTimeout(this.#dropTimer);
    if (this.#pollTimer !== undefined) {
      clearTimeout(this.#pollTimer as NodeJS.Timeout);
      clearImmediate(this.#pollTimer as NodeJS.Immediate);
      this.#pollTimer = undefined;
    }
  }

  #handle(ring: Vring, queue: DeviceQueue, chain: DeviceChain): void {
    this.#stats.requests++;
    let len: number;
    if (this.#faults.nextRequestFails()) {
      chain.status[0] = VIRTIO_BLK_S_IOERR;
      len = 1;
    } else {
      const result = this.#device.execute(chain);
      if (result.rejected) this.#stats.rejected++;
      len = result.len;
    }
    const fault = this.#faults.usedFault();
    const delay = this.#faults.delayMs;
    if (delay <= 0) {
      this.#complete(queue, chain, len, fault);
      return;
    }
    const complete = (): void => {
      // The ring stopped or broke since: nobody waits for this chain on this queue any more.
      if (this.#stopped || ring.queue !== queue) return;
      this.#complete(queue, chain, len, fault);
      this.#interrupt(ring, queue);
    };
    const timer = setTimeout(() => {
      this.#delayed.delete(timer);
      this.#guard(complete);
    }, delay);
    this.#delayed.set(timer, complete);
  }

  #complete(
    queue: DeviceQueue,
    chain: DeviceChain,
    len: number,
    fault: UsedFault | undefined,
  ): void {
    switch (fault) {
      case 'bad-id':
        queue.pushUsed(queue.idNotInFlight(), len);
        break;
      case 'bad-len':
        queue.pushUsed(chain.head, chain.writableBytes + 1);
        break;
      case 'duplicate':
        queue.pushUsed(chain.head, len);
        queue.pushUsed(chain.head, len);
        break;
      default:
        queue.pushUsed(chain.head, len);
    }
    if (this.#faults.completedAndDrop()) {
      // Give the frontend a moment to drain what completed before it sees the hang-up.
      this.#dropTimer ??= setTimeout(
        () => this.#guard(() => this.#host.drop('fault: dropConnectionAfterRequests')),
        10,
      );
    }
  }

  #interrupt(ring: Vring, queue: DeviceQueue): void {
    if (!queue.needsInterrupt()) return;
    const fd = ring.callFd;
    if (fd === undefined) return;
    try {
      native.eventfdWrite(fd);
    } catch (err) {
      this.#host.notifierFailed(ring, `call fd: ${(err as Error).message}`);
      return;
    }
    this.#stats.callsSent++;
  }

  /** For callbacks of the event loop: an exception there would kill the process. */
  #guard(body: () => void): void {
    try {
      body();
    } catch (err) {
      this.#host.internalError(err);
    }
  }

  #scheduleRing(ring: Vring): void {
    if (this.#scheduled.has(ring)) return;
    this.#scheduled.add(ring);
    setImmediate(() => {
      if (!this.#scheduled.delete(ring)) return;
      this.#guard(() => this.process(ring));
    });
  }

  #schedulePoll(fast: boolean): void {
    const tick = (): void => {
      this.#pollTimer = undefined;
      if (this.#stopped) return;
      let work = 0;
      let active = false;
      for (const ring of this.#host.rings) {
        if (ring.queue === undefined || !(this.#host.polling || ring.kickless)) continue;
        active = true;
        work += this.process(ring);
      }
      if (!active || this.#stopped) return;
      this.#idleRounds = work > 0 ? 0 : this.#idleRounds + 1;
      this.#schedulePoll(this.#idleRounds < SPIN_ROUNDS);
    };
    this.#pollTimer = fast
      ? setImmediate(() => this.#guard(tick))
      : setTimeout(() => this.#guard(tick), 1);
  }
}
