/**
 * A frontend at the wire level, for tests of the embedded backend below any library driver: raw
 * vhost-user messages over a real socket, with the reply's header checked.
 */
import assert from 'node:assert/strict';
import { SocketEndpoint } from '../../src/protocol/endpoint.js';
import {
  U64,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_REPLY_MASK,
  VHOST_USER_VERSION,
  VhostUserRequest,
} from '../../src/protocol/messages.js';

export type RequestName = keyof typeof VhostUserRequest;

const V = VHOST_USER_VERSION;

export class RawFrontend {
  readonly ep: SocketEndpoint;
  readonly #timeoutMs: number;

  /** `timeoutMs`: how long ask() and acked() wait for a reply. */
  constructor(socketPath: string, timeoutMs = 2000) {
    this.ep = SocketEndpoint.connect(socketPath);
    this.#timeoutMs = timeoutMs;
  }

  /** Sends `name` without waiting for anything. */
  tell(
    name: RequestName,
    payload: Uint8Array = new Uint8Array(0),
    flags = V,
    fds: number[] = [],
  ): void {
    this.ep.send(VhostUserRequest[name], flags, payload, fds);
  }

  /** Sends `name` and returns its reply's payload (the reply must be to it, version 1). */
  async ask(
    name: RequestName,
    payload?: Uint8Array,
    flags = V,
    fds?: number[],
  ): Promise<Uint8Array> {
    this.tell(name, payload, flags, fds);
    const reply = await this.ep.receive(this.#timeoutMs, name);
    assert.equal(reply.request, VhostUserRequest[name]);
    assert.equal(reply.flags, V | VHOST_USER_REPLY_MASK);
    return reply.payload;
  }

  /** Sends `name` asking for an ack (NEED_REPLY); returns it (0 = done). */
  async acked(name: RequestName, payload?: Uint8Array, fds?: number[]): Promise<bigint> {
    return U64.decode(await this.ask(name, payload, V | VHOST_USER_NEED_REPLY_MASK, fds)).value;
  }

  close(): void {
    this.ep.close();
  }
}
