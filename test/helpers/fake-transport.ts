/**
 * An in-memory MessageTransport that plays the backend from a script: each message the frontend
 * sends is recorded and handed to the next scripted step, which may deliver replies.
 */

import { DisconnectedError, TimeoutError } from '../../src/errors.js';
import { U64, VHOST_USER_REPLY_MASK, VHOST_USER_VERSION } from '../../src/protocol/messages.js';
import type { MessageTransport, VhostUserMessage } from '../../src/protocol/transport.js';

/** One scripted backend step; runs synchronously inside `send`. */
export type Step = (sent: VhostUserMessage, fake: FakeTransport) => void;

export class FakeTransport implements MessageTransport {
  /** Every message the frontend sent, payload and fds copied. */
  readonly sent: VhostUserMessage[] = [];
  readonly closedFds: number[] = [];
  readonly receives: { timeoutMs: number; operation: string }[] = [];
  #steps: Step[] = [];
  #inbox: VhostUserMessage[] = [];
  #waiter:
    | { resolve: (m: VhostUserMessage) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }
    | undefined;
  #disconnected = false;

  /** Adds steps, consumed one per sent message. A send with no step left gets no reply. */
  script(...steps: Step[]): this {
    this.#steps.push(...steps);
    return this;
  }

  /** Queues a message for the frontend's next receive. */
  deliver(message: VhostUserMessage): void {
    const waiter = this.#waiter;
    if (waiter) {
      this.#waiter = undefined;
      clearTimeout(waiter.timer);
      waiter.resolve(message);
    } else {
      this.#inbox.push(message);
    }
  }

  /** Backend goes away: a pending receive and every later send/receive fail. */
  disconnect(): void {
    this.#disconnected = true;
    const waiter = this.#waiter;
    this.#waiter = undefined;
    if (waiter) {
      clearTimeout(waiter.timer);
      waiter.reject(new DisconnectedError());
    }
  }

  send(request: number, flags: number, payload: Uint8Array, fds: readonly number[] = []): void {
    if (this.#disconnected) throw new DisconnectedError();
    const message = { request, flags, payload: payload.slice(), fds: [...fds] };
    this.sent.push(message);
    this.#steps.shift()?.(message, this);
  }

  receive(timeoutMs: number, operation: string): Promise<VhostUserMessage> {
    this.receives.push({ timeoutMs, operation });
    const next = this.#inbox.shift();
    if (next) return Promise.resolve(next);
    if (this.#disconnected) return Promise.reject(new DisconnectedError());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiter = undefined;
        reject(new TimeoutError(operation, timeoutMs));
      }, timeoutMs);
      this.#waiter = { resolve, reject, timer };
    });
  }

  closeFd(fd: number): void {
    this.closedFds.push(fd);
  }
}

/** A well-formed reply to `sent`, with fields overridable to build broken ones. */
export function replyTo(
  sent: VhostUserMessage,
  payload: Uint8Array,
  overrides: Partial<VhostUserMessage> = {},
): VhostUserMessage {
  return {
    request: sent.request,
    flags: VHOST_USER_VERSION | VHOST_USER_REPLY_MASK,
    payload,
    fds: [],
    ...overrides,
  };
}

/** Step: reply with a u64 (a GET_* value or an ack). */
export const replyU64 =
  (value: bigint, overrides: Partial<VhostUserMessage> = {}): Step =>
  (sent, fake) =>
    fake.deliver(replyTo(sent, U64.encode({ value }), overrides));

/** Step: reply with raw payload bytes. */
export const replyBytes =
  (payload: Uint8Array, overrides: Partial<VhostUserMessage> = {}): Step =>
  (sent, fake) =>
    fake.deliver(replyTo(sent, payload, overrides));

/** Step: accept the message silently (requests without a reply, or a lost reply). */
export const noReply: Step = () => undefined;
