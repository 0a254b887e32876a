import { native, UV_READABLE, type PollHandle } from '../native.js';
import type { DeviceQueue } from '../devices/device.js';
import { RecentDrain, type CompletionHost, type CompletionStrategy } from './strategy.js';

/**
 * 'event': sleep until the device signals a call eventfd (libuv watches it), then drain,
 * re-enable interrupts and check the used ring once more, so a completion that lands between
 * the drain and the re-enable is not left waiting for an interrupt that will never come.
 */
export class EventCompletion implements CompletionStrategy {
  readonly name = 'event';
  readonly #host: CompletionHost;
  readonly #polls: PollHandle[] = [];
  #busy = false;
  #stopped = false;
  readonly #recentDrain = new RecentDrain();

  constructor(host: CompletionHost) {
    this.#host = host;
    for (const queue of host.queues) {
      queue.vq.enableInterrupts();
      const poll = native.pollStart(queue.callFd, UV_READABLE, () => this.#onCall(queue));
      native.pollRef(poll, false);
      this.#polls.push(poll);
    }
  }

  #onCall(queue: DeviceQueue): void {
    if (this.#stopped) return;
    if (native.eventfdRead(queue.callFd) > 0) this.#host.countCall();
    const before = queue.vq.lastUsedIdx;
    drainWithInterrupts(this.#host, queue);
    this.#recentDrain.drained(queue.vq.usedSince(before));
  }

  /**
   * A request made with nothing in flight is kicked in the call, as the polling strategies do
   * (there for latency), here to save the batch's process.nextTick: at depth 1 that was one
   * object per request. Not the first resubmission after a drain of several: the rest of them
   * are coming in the same tick, and share one kick.
   */
  quietKick(): boolean {
    if (this.#busy || this.#stopped) return false;
    return !this.#recentDrain.burstJustBefore();
  }

  afterBlockingWait(drained: number): void {
    if (!this.#stopped) this.#recentDrain.drained(drained);
  }

  setBusy(busy: boolean): void {
    if (busy === this.#busy || this.#stopped) return;
    this.#busy = busy;
    // While requests are in flight, the pending completions keep the process alive.
    for (const poll of this.#polls) native.pollRef(poll, busy);
  }

  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    for (const poll of this.#polls) native.pollStop(poll);
  }
}

/**
 * Drains `queue`; false if used entries were pending and the drain took none of them (a device
 * that failed keeps its used entries and drains nothing), so a re-check loop must stop.
 */
export function drainTook(host: CompletionHost, queue: DeviceQueue): boolean {
  // Progress is what the drain consumed, not what is left: the device may add entries meanwhile.
  const before = queue.vq.lastUsedIdx;
  const pending = queue.vq.usedPending();
  host.drain(queue);
  return pending === 0 || queue.vq.lastUsedIdx !== before;
}

/** Drain until the ring is empty with interrupts enabled (the re-check closes the race). */
export function drainWithInterrupts(host: CompletionHost, queue: DeviceQueue): void {
  do {
    if (!drainTook(host, queue)) return;
  } while (!queue.vq.broken && queue.vq.enableInterrupts());
}
