/**
 * Fault injection for testing frontends: decides, request by request and reply by reply, whether
 * to misbehave. One instance per connection, so every frontend sees the same script.
 */

import type { RequestFault, RequestHooks } from './device-model.js';
import type { BlockServerFaults } from './options.js';

/** How to corrupt the used element of one request. */
export type UsedFault = 'bad-id' | 'bad-len' | 'duplicate';

/** The every-Nth request faults, in the order they win when several fall on one request. */
const EVERY: readonly [keyof BlockServerFaults, RequestFault][] = [
  ['ioErrorEvery', 'io-error'],
  ['virtioBusyEvery', 'virtio-busy'],
  ['transportFailureEvery', 'transport-failure'],
  ['scsiBusyEvery', 'scsi-busy'],
  ['taskSetFullEvery', 'task-set-full'],
  ['unitAttentionEvery', 'unit-attention'],
];

export class FaultPlan implements RequestHooks {
  readonly #faults: BlockServerFaults;
  /** Virtio requests taken so far on this connection. */
  #requests = 0;
  #completed = 0;
  /** READ commands seen so far (shortReadEvery counts those, not every request). */
  #reads = 0;
  readonly #fired = new Set<UsedFault>();

  constructor(faults: BlockServerFaults) {
    this.#faults = faults;
  }

  /** How long to hold the completion of the request just counted (0 = not at all). */
  delayMs(): number {
    const every = this.#faults.delayEvery;
    if (every !== undefined && this.#requests % every !== 0) return 0;
    return this.#faults.delayCompletionsMs ?? 0;
  }

  /** Counts a new request; returns the fault it must answer instead of running, if any. */
  nextRequest(): RequestFault | undefined {
    const n = ++this.#requests;
    for (const [name, fault] of EVERY) {
      const every = this.#faults[name] as number | undefined;
      if (every !== undefined && n % every === 0) return fault;
    }
    return undefined;
  }

  /** Counts a READ; true if it must transfer only half its data (shortReadEvery). */
  shortRead(): boolean {
    const n = ++this.#reads;
    const every = this.#faults.shortReadEvery;
    return every !== undefined && n % every === 0;
  }

  /** For the request just counted: corrupt its used element? Each corruption happens once. */
  usedFault(): UsedFault | undefined {
    const n = this.#requests;
    const f = this.#faults;
    const check = (kind: UsedFault, after: number | undefined): boolean => {
      if (after === undefined || n <= after || this.#fired.has(kind)) return false;
      this.#fired.add(kind);
      return true;
    };
    if (check('bad-id', f.badUsedIdAfter)) return 'bad-id';
    if (check('bad-len', f.badUsedLenAfter)) return 'bad-len';
    if (check('duplicate', f.duplicateUsedAfter)) return 'duplicate';
    return undefined;
  }

  /** Counts a completion; true once the connection must be dropped. */
  completedAndDrop(): boolean {
    this.#completed++;
    const limit = this.#faults.dropConnectionAfterRequests;
    return limit !== undefined && this.#completed >= limit;
  }

  /** True if a request must not even start because the connection is about to drop. */
  get dropDue(): boolean {
    const limit = this.#faults.dropConnectionAfterRequests;
    return limit !== undefined && this.#completed >= limit;
  }

  /**
   * The reply to send for `name` (already encoded): wrong code, wrong size, or cut short.
   * `truncated` means: send these bytes and nothing else, and leave the socket open.
   */
  reply(
    name: string,
    request: number,
    payload: Uint8Array,
  ): { request: number; payload: Uint8Array; truncateTo: number | undefined } {
    const f = this.#faults;
    let code = request;
    let body = payload;
    if (f.wrongReplyCode === name) code = request === 1 ? 2 : 1;
    if (f.wrongReplySize === name) {
      body = new Uint8Array(payload.length + 4);
      body.set(payload);
    }
    const truncateTo = f.truncatedReply === name ? 6 : undefined;
    return { request: code, payload: body, truncateTo };
  }
}
