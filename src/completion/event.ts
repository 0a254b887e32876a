import { native, UV_READABLE, type PollHandle } from '../native.js';
import type { DeviceQueue } from '../devices/device.js';
import {
  RecentDrain,
  settleInBurst,
  type CompletionHost,
  type CompletionStrategy,
} from './strategy.js';

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
      const onCall = (): void => this.#onCall(queue);
      const poll = native.pollStart(queue.callFd, UV_READABLE, () => settleInBurst(host, onCall));
      native.pollRef(poll, false);
      this.#polls.push(poll);
    }
  }

  #onCall(queue: DeviceQueue): void {
    if (this.#stopped) return;
    if (native.eventfdRead(queue.callFd) > 0) this.#host.countCall();
    this.#recentDrain.drained(drainWithInterrupts(this.#host, queue));
  }

  /**
   * A request made with nothing in flight is kicked in the call, as the polling strategies do
   * (there for latency), here to save the burst's end its work. Not the first resubmission after
   * a drain of several: the rest of them are coming in the same callback, and it opens their
   * burst (kicked at once, the rest at the callback's end; kicked in its call, it would cost the
   * burst a third kick).
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
 * Drains `queue`: how many used elements it consumed, or -1 if some were pending and it took
 * none (a device that failed keeps its used entries and drains nothing), so a re-check loop must
 * stop. Progress is what the drain consumed, not what is left: the device may add entries
 * meanwhile.
 */
function drainCounted(host: CompletionHost, queue: DeviceQueue): number {
  const pending = queue.vq.usedPending();
  const took = host.drain(queue);
  return took === 0 && pending > 0 ? -1 : took;
}

/** Drains `queue`; false if used entries were pending and the drain took none of them. */
export function drainTook(host: CompletionHost, queue: DeviceQueue): boolean {
  return drainCounted(host, queue) >= 0;
}

/**
 * Drain until the ring is empty with interrupts enabled (the re-check closes the race); returns
 * how many used elements the drains consumed.
 */
export function drainWithInterrupts(host: CompletionHost, queue: DeviceQueue): number {
  let drained = 0;
  do {
    const took = drainCounted(host, queue);
    if (took < 0) return drained;
    drained += took;
  } while (!queue.vq.broken && queue.vq.enableInterrupts());
  return drained;
}
