/**
 * Fault injection for testing frontends: decides, request by request and reply by reply, whether
 * to misbehave. One instance per connection, so every frontend sees the same script.
 */

import type { BlockServerFaults } from './options.js';

/** How to corrupt the used element of one request. */
export type UsedFault = 'bad-id' | 'bad-len' | 'duplicate';

export class FaultPlan {
  readonly #faults: BlockServerFaults;
  /** Virtio requests taken so far on this connection. */
  #requests = 0;
  #completed = 0;
  readonly #fired = new Set<UsedFault>();

  constructor(faults: BlockServerFaults) {
    this.#faults = faults;
  }

  get delayMs(): number {
    return this.#faults.delayCompletionsMs ?? 0;
  }

  /** Counts a new request; returns true if it must fail with IOERR instead of running. */
  nextRequestFails(): boolean {
    this.#requests++;
    const every = this.#faults.ioErrorEvery;
    return every !== undefined && this.#requests % every === 0;
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
