import type { BlkQueue } from '../devices/blk/blk-queue.js';

/**
 * What a completion strategy drives. Strategies differ only in *when* they call `drain`;
 * the drain routine itself (pop used elements, complete requests, submit what waits, kick) is
 * the device's, and there is one of it.
 */
export interface CompletionHost {
  readonly queues: readonly BlkQueue[];
  /** Drains one queue's used ring and lets waiting work submit. */
  drain(queue: BlkQueue): void;
  /** The device's call eventfd fired `count` times. */
  countCall(): void;
}

export interface CompletionStrategy {
  readonly name: string;
  /** Requests are (or are no longer) in flight: keep the process alive accordingly. */
  setBusy(busy: boolean): void;
  stop(): void;
}
