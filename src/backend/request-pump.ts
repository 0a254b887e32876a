/**
 * Moves requests from the rings of one connection through the device and back: one drain
 * routine, called on a kick or by the polling loop, with completions either immediate or held
 * (fault injection), and the interrupt decision once per batch. Each ring is served by its role
 * (device-model.ts): request queues execute and may hold completions, a control queue answers at
 * once and may complete held requests, an event queue keeps its buffers in the avail ring until
 * the device raises an event.
 */

import { native } from '../native.js';
import type { DeviceModel, HeldRequests, QueueRole, TaskRef } from './device-model.js';
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

/** A completion held back by delayCompletionsMs. */
interface Held {
  ring: Vring;
  queue: DeviceQueue;
  chain: DeviceChain;
  len: number;
  fault: UsedFault | undefined;
  task: TaskRef | undefined;
  timer: NodeJS.Timeout;
}

export class RequestPump implements HeldRequests {
  readonly #host: PumpHost;
  readonly #device: DeviceModel;
  readonly #faults: FaultPlan;
  readonly #stats: ServerStats;
  readonly #scheduled = new Set<Vring>();
  /** Held completions, in the order their requests arrived. */
  readonly #held = new Set<Held>();
  /** An event found no eventq buffer: the next event delivered says VIRTIO_SCSI_T_EVENTS_MISSED. */
  #eventsMissed = false;
  #pollTimer: NodeJS.Timeout | NodeJS.Immediate | undefined;
  #dropTimer: NodeJS.Timeout | undefined;
  #idleRounds = 0;
  #stopped = false;

  constructor(host: PumpHost, device: DeviceModel, faults: FaultPlan, stats: ServerStats) {
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
    const role = this.#roleOf(ring);
    if (role === 'event') return this.#eventRing(queue, poll);
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
      if (role === 'control') this.#control(queue, chain);
      else this.#handle(ring, queue, chain);
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
    const pending = [...this.#held];
    this.#held.clear();
    for (const held of pending) {
      clearTimeout(held.timer);
      this.#completeHeld(held);
    }
  }

  /** HeldRequests: task management completes matching held requests at once. */
  complete(match: (task: TaskRef) => boolean, rewrite: (chain: DeviceChain) => number): number {
    let n = 0;
    for (const held of [...this.#held]) {
      if (held.task === undefined || !match(held.task)) continue;
      this.#held.delete(held);
      clearTimeout(held.timer);
      held.len = rewrite(held.chain);
      this.#completeHeld(held);
      n++;
    }
    return n;
  }

  has(match: (task: TaskRef) => boolean): boolean {
    for (const held of this.#held) if (held.task !== undefined && match(held.task)) return true;
    return false;
  }

  /**
   * Puts `event` into the next eventq buffer the driver posted, or remembers that one was missed
   * (the next event delivered carries the flag). Returns true if delivered.
   */
  raiseEvent(event: unknown): boolean {
    const delivered = this.#deliverEvent(event);
    if (!delivered) this.#eventsMissed = true;
    return delivered;
  }

  /** The connection is gone: nothing touches the rings any more. */
  stop(): void {
    this.#stopped = true;
    for (const held of this.#held) clearTimeout(held.timer);
    this.#held.clear();
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
    const result = this.#device.execute(chain, this.#faults.nextRequest(), this.#faults);
    if (result.rejected) this.#stats.rejected++;
    const fault = this.#faults.usedFault();
    const delay = this.#faults.delayMs();
    if (delay <= 0) {
      this.#complete(queue, chain, result.len, fault);
      return;
    }
    const held: Held = {
      ring,
      queue,
      chain,
      len: result.len,
      fault,
      task: result.task,
      timer: setTimeout(() => {
        this.#held.delete(held);
        this.#guard(() => this.#completeHeld(held));
      }, delay),
    };
    this.#held.add(held);
  }

  #roleOf(ring: Vring): QueueRole {
    return this.#device.roleOf?.(ring.index) ?? 'request';
  }

  #completeHeld(held: Held): void {
    // The ring stopped or broke since: nobody waits for this chain on this queue any more.
    if (this.#stopped || held.ring.queue !== held.queue) return;
    this.#complete(held.queue, held.chain, held.len, held.fault);
    this.#interrupt(held.ring, held.queue);
  }

  /**
   * Control requests are answered at once: task management must not wait behind what it aborts.
   * One the device leaves unanswered (ignoreTaskManagement) is not kept here: it stays in flight
   * on its queue until the ring stops (GET_VRING_BASE, RESET_OWNER), its queue is rebuilt
   * (SET_MEM_TABLE) or the connection goes, and nothing writes into its buffers again (they may
   * be unmapped by then).
   */
  #control(queue: DeviceQueue, chain: DeviceChain): void {
    const len = this.#device.control === undefined ? 0 : this.#device.control(chain, this);
    if (len !== undefined) queue.pushUsed(chain.head, len);
  }

  /**
   * An event ring is not drained: its buffers wait in the avail ring (so GET_VRING_BASE and a
   * disconnect need not give anything back). A kick after events were missed gets an empty event
   * with VIRTIO_SCSI_T_EVENTS_MISSED, as QEMU does, so the driver rescans.
   */
  #eventRing(queue: DeviceQueue, poll: boolean): number {
    if (poll) queue.suppressKicks();
    else queue.enableKicks();
    if (this.#eventsMissed && queue.hasAvail()) this.#deliverEvent(undefined);
    return 0;
  }

  #deliverEvent(event: unknown): boolean {
    if (this.#stopped || this.#device.writeEvent === undefined) return false;
    const ring = this.#host.rings.find((r) => this.#roleOf(r) === 'event');
    const queue = ring?.queue;
    if (ring === undefined || queue === undefined || !this.#host.isRunning(ring)) return false;
    for (;;) {
      const chain = queue.pop();
      if (chain === undefined) {
        if (queue.broken !== undefined) this.#host.queueBroken(ring, queue.broken);
        return false;
      }
      const len = this.#device.writeEvent(chain, event, this.#eventsMissed);
      queue.pushUsed(chain.head, len);
      this.#interrupt(ring, queue);
      // A buffer too small for an event is returned empty; try the next one.
      if (len > 0) {
        this.#eventsMissed = false;
        return true;
      }
    }
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
      native.eventfdSignal(fd);
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
