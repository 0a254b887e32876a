/**
 * The requests a vhost-user frontend sends, one typed method per request, over a
 * MessageTransport. Requests go out one at a time; every reply is checked in `#checkReply`.
 */

import {
  BackendRejectedError,
  DisconnectedError,
  InvalidArgumentError,
  ProtocolError,
} from '../errors.js';
import {
  U64,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_REPLY_MASK,
  VHOST_USER_VERSION,
  VHOST_USER_VERSION_MASK,
  VhostUserMessageTable,
  VhostUserRequest,
  VhostUserVringAddr,
  VhostUserVringState,
  decodeConfig,
  describeMessage,
  encodeConfig,
  encodeMemoryTable,
  encodeVringFd,
  payloadSize,
  type FrontendRequestName,
  type VhostUserMemoryRegion,
} from './messages.js';
import type { MessageTransport, VhostUserMessage } from './transport.js';

export type TraceDirection = 'send' | 'recv';

export interface VhostUserFrontendOptions {
  /** How long to wait for each reply. Default 10 000 ms. */
  timeoutMs?: number;
  /** Called with a one-line decoded summary of every message sent and received. */
  trace?: (direction: TraceDirection, summary: string) => void;
}

const DEFAULT_TIMEOUT_MS = 10_000;
const EMPTY = new Uint8Array(0);

/** What the caller expects back: a payload of `size` bytes, or nothing (an ack may still come). */
interface Expect {
  size?: number;
  /** GET_CONFIG: the spec lets the backend signal failure with an empty payload. */
  emptyMeansRejected?: boolean;
}

export class VhostUserFrontend {
  readonly #transport: MessageTransport;
  readonly #timeoutMs: number;
  readonly #trace: ((direction: TraceDirection, summary: string) => void) | undefined;
  #replyAck = false;
  /** Tail of the request chain; each request starts only after the previous one settled. */
  #queue: Promise<unknown> = Promise.resolve();
  /** Set once the stream is out of sync (timeout, protocol error, disconnect); fails later calls. */
  #broken: Error | undefined;

  /** Throws InvalidArgumentError for a non-positive or non-finite timeoutMs. */
  constructor(transport: MessageTransport, options: VhostUserFrontendOptions = {}) {
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
      throw new InvalidArgumentError(`timeoutMs must be a positive number, got ${timeoutMs}`);
    }
    this.#transport = transport;
    this.#timeoutMs = timeoutMs;
    this.#trace = options.trace;
  }

  /**
   * Call with true once VHOST_USER_PROTOCOL_F_REPLY_ACK is negotiated: from then on every request
   * without a reply of its own carries NEED_REPLY and waits for the backend's u64 ack.
   */
  setReplyAck(enabled: boolean): void {
    this.#replyAck = enabled;
  }

  get replyAck(): boolean {
    return this.#replyAck;
  }

  /** How long each request waits for its reply (ms). */
  get timeoutMs(): number {
    return this.#timeoutMs;
  }

  /**
   * VHOST_USER_GET_FEATURES: the backend's virtio feature bits.
   * @throws ProtocolError, TimeoutError, DisconnectedError
   */
  async getFeatures(): Promise<bigint> {
    return this.#u64('VHOST_USER_GET_FEATURES');
  }

  /**
   * VHOST_USER_SET_FEATURES.
   * @throws InvalidArgumentError (not a u64), BackendRejectedError, ProtocolError, TimeoutError,
   * DisconnectedError
   */
  async setFeatures(features: bigint): Promise<void> {
    await this.#request('VHOST_USER_SET_FEATURES', U64.encode({ value: features }));
  }

  /**
   * VHOST_USER_GET_PROTOCOL_FEATURES (only if VHOST_USER_F_PROTOCOL_FEATURES was offered).
   * @throws ProtocolError, TimeoutError, DisconnectedError
   */
  async getProtocolFeatures(): Promise<bigint> {
    return this.#u64('VHOST_USER_GET_PROTOCOL_FEATURES');
  }

  /**
   * VHOST_USER_SET_PROTOCOL_FEATURES. Does not turn on acks by itself: call setReplyAck after.
   * @throws InvalidArgumentError, BackendRejectedError, ProtocolError, TimeoutError,
   * DisconnectedError
   */
  async setProtocolFeatures(features: bigint): Promise<void> {
    await this.#request('VHOST_USER_SET_PROTOCOL_FEATURES', U64.encode({ value: features }));
  }

  /**
   * VHOST_USER_SET_OWNER: claims the session; first request on a new connection.
   * @throws BackendRejectedError, ProtocolError, TimeoutError, DisconnectedError
   */
  async setOwner(): Promise<void> {
    await this.#request('VHOST_USER_SET_OWNER', EMPTY);
  }

  /**
   * VHOST_USER_RESET_DEVICE (needs protocol feature RESET_DEVICE).
   * @throws BackendRejectedError, ProtocolError, TimeoutError, DisconnectedError
   */
  async resetDevice(): Promise<void> {
    await this.#request('VHOST_USER_RESET_DEVICE', EMPTY);
  }

  /**
   * VHOST_USER_GET_QUEUE_NUM (needs protocol feature MQ): most queues the backend supports.
   * @throws ProtocolError (also for a count of 0 or above 2^32 - 1), TimeoutError,
   * DisconnectedError
   */
  async getQueueNum(): Promise<number> {
    const name = 'VHOST_USER_GET_QUEUE_NUM';
    const queues = await this.#smallU64(name);
    // Every device has a queue: 0 is a broken backend, not a count the caller asked too much of.
    if (queues === 0) throw new ProtocolError('backend reports 0 queues', name);
    return queues;
  }

  /**
   * VHOST_USER_GET_MAX_MEM_SLOTS (needs protocol feature CONFIGURE_MEM_SLOTS).
   * @throws ProtocolError, TimeoutError, DisconnectedError
   */
  async getMaxMemSlots(): Promise<number> {
    return this.#smallU64('VHOST_USER_GET_MAX_MEM_SLOTS');
  }

  /**
   * VHOST_USER_GET_CONFIG (needs protocol feature CONFIG): `size` bytes of device config space
   * from `offset`.
   * @throws InvalidArgumentError (bad offset/size), BackendRejectedError (backend answered with an
   * empty payload, its way to refuse; value 0), ProtocolError (including a reply whose offset or
   * size differs from the request), TimeoutError, DisconnectedError
   */
  async getConfig(offset: number, size: number, flags = 0): Promise<Uint8Array> {
    const name = 'VHOST_USER_GET_CONFIG';
    if (!Number.isInteger(size) || size < 0) {
      throw new InvalidArgumentError(`${name}: size must be a non-negative integer, got ${size}`);
    }
    const payload = encodeConfig({ offset, flags, data: new Uint8Array(size) });
    const reply = await this.#request(name, payload, undefined, {
      size: payload.length,
      emptyMeansRejected: true,
    });
    const config = decodeConfig(reply, name);
    if (config.offset !== offset || config.data.length !== size) {
      throw new ProtocolError(
        `reply is for offset ${config.offset} size ${config.data.length}, expected offset ${offset} size ${size}`,
        name,
      );
    }
    return config.data;
  }

  /**
   * VHOST_USER_SET_CONFIG (needs protocol feature CONFIG).
   * @throws InvalidArgumentError, BackendRejectedError, ProtocolError, TimeoutError,
   * DisconnectedError
   */
  async setConfig(offset: number, data: Uint8Array, flags = 0): Promise<void> {
    await this.#request('VHOST_USER_SET_CONFIG', encodeConfig({ offset, flags, data }));
  }

  /**
   * VHOST_USER_SET_MEM_TABLE: one fd per region, in the same order. The fds stay owned by the
   * caller (the transport duplicates them into the message).
   * @throws InvalidArgumentError (more than 8 regions, count mismatch, invalid region),
   * BackendRejectedError, ProtocolError, TimeoutError, DisconnectedError
   */
  async setMemTable(
    regions: readonly VhostUserMemoryRegion[],
    fds: readonly number[],
  ): Promise<void> {
    const name = 'VHOST_USER_SET_MEM_TABLE';
    if (regions.length !== fds.length) {
      throw new InvalidArgumentError(`${name}: ${regions.length} regions but ${fds.length} fds`);
    }
    await this.#request(name, encodeMemoryTable(regions), fds);
  }

  /**
   * VHOST_USER_SET_VRING_NUM: queue size.
   * @throws InvalidArgumentError, BackendRejectedError, ProtocolError, TimeoutError,
   * DisconnectedError
   */
  async setVringNum(index: number, num: number): Promise<void> {
    await this.#request('VHOST_USER_SET_VRING_NUM', VhostUserVringState.encode({ index, num }));
  }

  /**
   * VHOST_USER_SET_VRING_ADDR: ring addresses in the backend's address space (user addresses).
   * @throws InvalidArgumentError, BackendRejectedError, ProtocolError, TimeoutError,
   * DisconnectedError
   */
  async setVringAddr(addr: VhostUserVringAddr): Promise<void> {
    await this.#request('VHOST_USER_SET_VRING_ADDR', VhostUserVringAddr.encode(addr));
  }

  /**
   * VHOST_USER_SET_VRING_BASE: the next available index the backend should read.
   * @throws InvalidArgumentError, BackendRejectedError, ProtocolError, TimeoutError,
   * DisconnectedError
   */
  async setVringBase(index: number, num: number): Promise<void> {
    await this.#request('VHOST_USER_SET_VRING_BASE', VhostUserVringState.encode({ index, num }));
  }

  /**
   * VHOST_USER_GET_VRING_BASE: stops the ring and returns its next available index.
   * @throws InvalidArgumentError, ProtocolError (including a reply for another index),
   * TimeoutError, DisconnectedError
   */
  async getVringBase(index: number): Promise<number> {
    const name = 'VHOST_USER_GET_VRING_BASE';
    const reply = await this.#request(name, VhostUserVringState.encode({ index, num: 0 }));
    const state = VhostUserVringState.decode(reply);
    if (state.index !== index) {
      throw new ProtocolError(`reply is for vring ${state.index}, expected ${index}`, name);
    }
    return state.num;
  }

  /**
   * VHOST_USER_SET_VRING_KICK: eventfd the backend waits on; undefined = NOFD (backend polls).
   * @throws InvalidArgumentError (index above 255), BackendRejectedError, ProtocolError,
   * TimeoutError, DisconnectedError
   */
  async setVringKick(index: number, fd: number | undefined): Promise<void> {
    await this.#vringFd('VHOST_USER_SET_VRING_KICK', index, fd);
  }

  /**
   * VHOST_USER_SET_VRING_CALL: eventfd the backend signals on completion; undefined = NOFD.
   * @throws InvalidArgumentError, BackendRejectedError, ProtocolError, TimeoutError,
   * DisconnectedError
   */
  async setVringCall(index: number, fd: number | undefined): Promise<void> {
    await this.#vringFd('VHOST_USER_SET_VRING_CALL', index, fd);
  }

  /**
   * VHOST_USER_SET_VRING_ERR: eventfd the backend signals on ring errors; undefined = NOFD.
   * @throws InvalidArgumentError, BackendRejectedError, ProtocolError, TimeoutError,
   * DisconnectedError
   */
  async setVringErr(index: number, fd: number | undefined): Promise<void> {
    await this.#vringFd('VHOST_USER_SET_VRING_ERR', index, fd);
  }

  /**
   * VHOST_USER_SET_VRING_ENABLE (only once VHOST_USER_F_PROTOCOL_FEATURES is negotiated).
   * @throws InvalidArgumentError, BackendRejectedError, ProtocolError, TimeoutError,
   * DisconnectedError
   */
  async setVringEnable(index: number, enabled: boolean): Promise<void> {
    const payload = VhostUserVringState.encode({ index, num: enabled ? 1 : 0 });
    await this.#request('VHOST_USER_SET_VRING_ENABLE', payload);
  }

  /**
   * Resolves once the backend has processed every earlier request. Without REPLY_ACK the SET_*
   * requests are fire-and-forget, so this does a GET_FEATURES round trip (as SPDK does after
   * SET_MEM_TABLE); with REPLY_ACK every request was already acknowledged and no message is sent.
   * @throws ProtocolError, TimeoutError, DisconnectedError
   */
  async barrier(): Promise<void> {
    if (this.#replyAck) {
      await this.#serialize(async () => this.#throwIfBroken());
      return;
    }
    await this.getFeatures();
  }

  async #u64(name: FrontendRequestName): Promise<bigint> {
    const reply = await this.#request(name, EMPTY);
    return U64.decode(reply).value;
  }

  async #smallU64(name: FrontendRequestName): Promise<number> {
    const value = await this.#u64(name);
    if (value > 0xffff_ffffn) throw new ProtocolError(`implausible value ${value}`, name);
    return Number(value);
  }

  async #vringFd(name: FrontendRequestName, index: number, fd: number | undefined): Promise<void> {
    const payload = encodeVringFd(index, fd !== undefined);
    await this.#request(name, payload, fd === undefined ? undefined : [fd]);
  }

  /**
   * Sends one request and, when one is due, waits for and checks its reply. Returns the reply
   * payload ('empty' when nothing came back or for acks, which are consumed here).
   */
  #request(
    name: FrontendRequestName,
    payload: Uint8Array,
    fds?: readonly number[],
    expect: Expect = {},
  ): Promise<Uint8Array> {
    return this.#serialize(async () => {
      this.#throwIfBroken();
      try {
        return await this.#exchange(name, payload, fds, expect);
      } catch (err) {
        // A backend NACK leaves the stream in sync; anything else (lost or garbled reply) may not.
        if (!(err instanceof BackendRejectedError) && err instanceof Error) this.#broken = err;
        throw err;
      }
    });
  }

  async #exchange(
    name: FrontendRequestName,
    payload: Uint8Array,
    fds: readonly number[] | undefined,
    expect: Expect,
  ): Promise<Uint8Array> {
    const code = VhostUserRequest[name];
    const hasReply = VhostUserMessageTable[name].reply !== 'none';
    const wantAck = this.#replyAck && !hasReply;
    const flags = VHOST_USER_VERSION | (wantAck ? VHOST_USER_NEED_REPLY_MASK : 0);
    this.#trace?.(
      'send',
      describeMessage({ request: code, flags, payload, fds: [...(fds ?? [])] }),
    );
    this.#transport.send(code, flags, payload, fds);
    if (!hasReply && !wantAck) return EMPTY;

    const reply = await this.#transport.receive(this.#timeoutMs, name);
    this.#trace?.('recv', describeMessage(reply));
    const size = wantAck ? U64.size : (expect.size ?? replySize(name));
    this.#checkReply(name, reply, size, expect.emptyMeansRejected === true);
    if (!wantAck) return reply.payload;
    const ack = U64.decode(reply.payload).value;
    if (ack !== 0n) throw new BackendRejectedError(name, ack);
    return EMPTY;
  }

  /** The one place replies are checked: fds, flags, request code, payload size. */
  #checkReply(
    name: FrontendRequestName,
    reply: VhostUserMessage,
    size: number,
    emptyMeansRejected: boolean,
  ): void {
    if (reply.fds.length > 0) {
      for (const fd of reply.fds) this.#transport.closeFd(fd);
      throw new ProtocolError(`reply carries ${reply.fds.length} fds, expected none`, name);
    }
    if ((reply.flags & VHOST_USER_REPLY_MASK) === 0) {
      throw new ProtocolError(
        `reply lacks the REPLY flag (flags 0x${reply.flags.toString(16)})`,
        name,
      );
    }
    if ((reply.flags & VHOST_USER_VERSION_MASK) !== VHOST_USER_VERSION) {
      throw new ProtocolError(`reply has version ${reply.flags & VHOST_USER_VERSION_MASK}`, name);
    }
    const code = VhostUserRequest[name];
    if (reply.request !== code) {
      throw new ProtocolError(`reply has request code ${reply.request}, expected ${code}`, name);
    }
    if (emptyMeansRejected && reply.payload.length === 0) throw new BackendRejectedError(name, 0n);
    if (reply.payload.length !== size) {
      throw new ProtocolError(
        `reply payload is ${reply.payload.length} bytes, expected ${size}`,
        name,
      );
    }
  }

  #serialize<T>(work: () => Promise<T>): Promise<T> {
    const result = this.#queue.then(work);
    this.#queue = result.catch(() => undefined);
    return result;
  }

  #throwIfBroken(): void {
    if (!this.#broken) return;
    const cause = this.#broken;
    throw new DisconnectedError(
      `vhost-user connection unusable after earlier error: ${cause.message}`,
      {
        cause,
      },
    );
  }
}

/** Size of a fixed-layout reply; variable replies (GET_CONFIG) pass their size explicitly. */
function replySize(name: FrontendRequestName): number {
  const kind = VhostUserMessageTable[name].reply;
  const size = kind === 'none' ? undefined : payloadSize(kind);
  if (size === undefined) throw new InvalidArgumentError(`${name}: reply size not known`);
  return size;
}
