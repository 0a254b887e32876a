/**
 * One connected frontend: the backend side of the vhost-user protocol (QEMU
 * docs/interop/vhost-user.rst). Every request is checked (validateRequest for syntax, the
 * handlers for meaning); a request that fails is nacked when the frontend asked for an ack, and
 * otherwise ends the connection, since the frontend would carry on believing it succeeded.
 */

import { native } from '../native.js';
import { ProtocolError } from '../errors.js';
import { SocketEndpoint } from '../protocol/endpoint.js';
import type { VhostUserMessage } from '../protocol/transport.js';
import {
  U64,
  VHOST_USER_MAX_RAM_SLOTS,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_REPLY_MASK,
  VHOST_USER_VERSION,
  VhostUserVringAddr,
  VhostUserVringState,
  decodeConfig,
  decodeMemoryTable,
  decodeVringFd,
  describeMessage,
  encodeConfig,
  encodeMessage,
  messageSpec,
  requestName,
  validateRequest,
  VhostUserProtocolFeature,
} from '../protocol/messages.js';
import { hasBit, VhostFeature, VirtioFeature } from '../virtio/features.js';
import { MAX_CONFIG_BYTES, OFFERED_PROTOCOL_FEATURES, type DeviceModel } from './device-model.js';
import { DeviceQueue } from './device-queue.js';
import { FaultPlan } from './faults.js';
import { BackendMemory, MemoryTableError } from './guest-memory.js';
import type { ResolvedOptions } from './options.js';
import { RequestPump } from './request-pump.js';
import type { ServerStats } from './stats.js';
import { isEventfd, isSemaphoreEventfd, Vring } from './vring.js';
import { toError } from '../util/to-error.js';

/** A request that cannot be carried out; becomes a nack or a dropped connection. */
class RequestFailed extends Error {}

export interface SessionHost {
  readonly options: ResolvedOptions;
  readonly device: DeviceModel;
  /** Rings the device has (GET_QUEUE_NUM): blk's request queues; scsi's two more. */
  readonly ringCount: number;
  readonly features: bigint;
  readonly config: Uint8Array;
  readonly stats: ServerStats;
  /** The connection ended; `error` says why unless the frontend simply left. */
  onClose(error: Error | undefined): void;
  onProtocolError(error: ProtocolError): void;
  onInternalError(error: Error): void;
}

export class Session {
  readonly #host: SessionHost;
  readonly #endpoint: SocketEndpoint;
  readonly #rings: Vring[];
  readonly #pump: RequestPump;
  readonly #faults: FaultPlan;
  #memory: BackendMemory | undefined;
  #features = 0n;
  #protocolFeatures = 0n;
  /** After a truncated-reply fault the stream is out of step: say nothing more. */
  #mute = false;
  #closed = false;

  constructor(fd: number, host: SessionHost) {
    this.#host = host;
    const opts = host.options;
    this.#rings = Array.from({ length: host.ringCount }, (_, i) => new Vring(i));
    const faults = new FaultPlan(opts.faults);
    this.#pump = new RequestPump(
      {
        rings: this.#rings,
        polling: opts.polling,
        isRunning: (ring) => this.#isEnabled(ring),
        drop: (reason) => this.close(new Error(reason)),
        queueBroken: (ring, reason) => this.#queueBroken(ring, reason),
        notifierFailed: (ring, reason) => this.#notifierFailed(ring, reason),
        internalError: (err) => this.#internalError(err),
      },
      host.device,
      faults,
      host.stats,
    );
    this.#faults = faults;
    this.#endpoint = new SocketEndpoint(fd);
    this.#endpoint.onUnsolicited = (message) => this.#onMessage(message);
    this.#endpoint.onDisconnect = (error) => {
      if (error instanceof ProtocolError) {
        this.#host.onProtocolError(error);
        this.close(error);
      } else {
        this.close(undefined);
      }
    };
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Puts a device event into the event queue; false if no buffer was there (it is missed). */
  raiseEvent(event: unknown): boolean {
    if (this.#closed) return false;
    return this.#pump.raiseEvent(event);
  }

  /**
   * Reads whatever the socket holds now. A frontend that closed and reconnected at once may be
   * knocking before its EOF was seen: this lets the old session end first.
   */
  catchUp(): void {
    if (!this.#closed) this.#endpoint.readAvailable();
  }

  /** Drops the frontend: stops the rings, closes every fd, unmaps its memory. Idempotent. */
  close(error: Error | undefined): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#pump.stop();
    for (const ring of this.#rings) ring.close();
    this.#memory?.close();
    this.#memory = undefined;
    this.#endpoint.close();
    this.#host.onClose(error);
  }

  #onMessage(message: VhostUserMessage): void {
    if (this.#closed) {
      for (const fd of message.fds) native.close(fd);
      return;
    }
    this.#trace('<-', message);
    const header = { request: message.request, flags: message.flags, size: message.payload.length };
    const invalid = validateRequest(header, message.payload, message.fds);
    if (invalid) {
      for (const fd of message.fds) native.close(fd);
      this.#refuse(message, invalid);
      return;
    }
    const name = requestName(message.request);
    let reply: Uint8Array | undefined;
    try {
      reply = this.#dispatch(name, message);
    } catch (err) {
      if (err instanceof RequestFailed || err instanceof ProtocolError) {
        this.#refuse(
          message,
          err instanceof ProtocolError ? err : new ProtocolError(err.message, name),
        );
        return;
      }
      // A bug or a failing system call of ours: report it, and do not leave the frontend hanging.
      const error = toError(err);
      this.#host.onInternalError(error);
      if (this.#wantsAck(message)) this.#send(message.request, U64.encode({ value: 1n }));
      else this.close(error);
      return;
    }
    if (this.#closed) return;
    if (reply !== undefined) this.#send(message.request, reply);
    else if (this.#wantsAck(message)) this.#send(message.request, U64.encode({ value: 0n }));
  }

  #dispatch(name: string, message: VhostUserMessage): Uint8Array | undefined {
    const { payload, fds } = message;
    const opts = this.#host.options;
    switch (name) {
      case 'VHOST_USER_GET_FEATURES':
        return u64(this.#host.features);
      case 'VHOST_USER_SET_FEATURES': {
        const value = U64.decode(payload).value;
        const extra = value & ~this.#host.features;
        if (extra !== 0n)
          throw new RequestFailed(`features 0x${extra.toString(16)} were not offered`);
        this.#features = value;
        return undefined;
      }
      case 'VHOST_USER_GET_PROTOCOL_FEATURES':
        return u64(OFFERED_PROTOCOL_FEATURES);
      case 'VHOST_USER_SET_PROTOCOL_FEATURES': {
        const value = U64.decode(payload).value;
        const extra = value & ~OFFERED_PROTOCOL_FEATURES;
        if (extra !== 0n)
          throw new RequestFailed(`protocol features 0x${extra.toString(16)} were not offered`);
        this.#protocolFeatures = value;
        return undefined;
      }
      case 'VHOST_USER_SET_OWNER':
        return undefined;
      case 'VHOST_USER_RESET_OWNER':
        this.#reset();
        return undefined;
      case 'VHOST_USER_RESET_DEVICE':
        // Only valid with the RESET_DEVICE protocol feature, which is not offered.
        if (!hasBit(this.#protocolFeatures, VhostUserProtocolFeature.RESET_DEVICE)) {
          throw new RequestFailed('request not supported (RESET_DEVICE was not negotiated)');
        }
        this.#reset();
        return undefined;
      case 'VHOST_USER_GET_QUEUE_NUM':
        return u64(BigInt(this.#host.ringCount));
      case 'VHOST_USER_GET_MAX_MEM_SLOTS':
        return u64(BigInt(VHOST_USER_MAX_RAM_SLOTS));
      case 'VHOST_USER_GET_CONFIG':
        return this.#getConfig(payload);
      case 'VHOST_USER_SET_CONFIG':
        throw new RequestFailed('no config field is writable');
      case 'VHOST_USER_SET_MEM_TABLE':
        this.#setMemTable(payload, fds);
        return undefined;
      case 'VHOST_USER_SET_VRING_NUM': {
        const { index, num } = VhostUserVringState.decode(payload);
        const ring = this.#stoppedRing(index);
        if (num < 1 || num > opts.queueSize || (num & (num - 1)) !== 0) {
          throw new RequestFailed(
            `queue size ${num} is not a power of two in 1..${opts.queueSize}`,
          );
        }
        ring.num = num;
        return undefined;
      }
      case 'VHOST_USER_SET_VRING_ADDR': {
        const addr = VhostUserVringAddr.decode(payload);
        const ring = this.#stoppedRing(addr.index);
        if (addr.flags !== 0) throw new RequestFailed('dirty logging is not supported');
        const uvas = [addr.descriptor, addr.available, addr.used].map(Number);
        if (!uvas.every(Number.isSafeInteger)) throw new RequestFailed('ring address beyond 2^53');
        ring.addr = { descUva: uvas[0]!, availUva: uvas[1]!, usedUva: uvas[2]! };
        return undefined;
      }
      case 'VHOST_USER_SET_VRING_BASE': {
        const { index, num } = VhostUserVringState.decode(payload);
        const ring = this.#stoppedRing(index);
        if (num > 0xffff) throw new RequestFailed(`base ${num} does not fit a split ring's u16`);
        ring.base = num;
        return undefined;
      }
      case 'VHOST_USER_GET_VRING_BASE': {
        const { index } = VhostUserVringState.decode(payload);
        const ring = this.#ring(index);
        this.#pump.flush();
        const base = ring.stop();
        return VhostUserVringState.encode({ index, num: base });
      }
      case 'VHOST_USER_SET_VRING_KICK':
      case 'VHOST_USER_SET_VRING_CALL':
      case 'VHOST_USER_SET_VRING_ERR':
        this.#setVringFd(name, payload, fds);
        return undefined;
      case 'VHOST_USER_SET_VRING_ENABLE': {
        const { index, num } = VhostUserVringState.decode(payload);
        const ring = this.#ring(index);
        if (num > 1) throw new RequestFailed(`enable must be 0 or 1, got ${num}`);
        ring.enabled = num === 1;
        if (ring.queue !== undefined) this.#kickStarted(ring);
        return undefined;
      }
      default:
        throw new RequestFailed('request not supported');
    }
  }

  /** Answers exactly the bytes asked for; more than the config space gets the empty refusal. */
  #getConfig(payload: Uint8Array): Uint8Array {
    const request = decodeConfig(payload, 'VHOST_USER_GET_CONFIG');
    const end = request.offset + request.data.length;
    if (end > MAX_CONFIG_BYTES) return new Uint8Array(0);
    return encodeConfig({
      offset: request.offset,
      flags: request.flags,
      data: this.#host.config.slice(request.offset, end),
    });
  }

  /**
   * Maps the new table; started rings, which point into the old mapping, are rebuilt over it. All
   * or nothing: every new queue is built before anything is replaced, so a refused table leaves
   * the old mapping and the running rings as they were.
   */
  #setMemTable(payload: Uint8Array, fds: readonly number[]): void {
    let memory: BackendMemory;
    try {
      memory = BackendMemory.map(decodeMemoryTable(payload), fds);
    } catch (err) {
      if (err instanceof MemoryTableError) throw new RequestFailed(err.message);
      throw err;
    }
    // Delayed completions belong to the old queues: deliver them while those are still mapped
    // (and before the new queues read used.idx).
    this.#pump.flush();
    if (this.#closed) {
      memory.close();
      return;
    }
    const running = this.#rings.filter((ring) => ring.queue !== undefined);
    const rebuilt: DeviceQueue[] = [];
    try {
      for (const ring of running) {
        rebuilt.push(this.#buildQueue(ring, memory, ring.queue!.lastAvail));
      }
    } catch (err) {
      memory.close();
      throw err;
    }
    const old = this.#memory;
    this.#memory = memory;
    running.forEach((ring, i) => {
      ring.base = ring.queue!.lastAvail;
      ring.queue = rebuilt[i];
    });
    old?.close();
  }

  #setVringFd(name: string, payload: Uint8Array, fds: readonly number[]): void {
    const { index, noFd } = decodeVringFd(payload, name);
    const fd = noFd ? undefined : fds[0];
    let ring: Vring;
    let queue: DeviceQueue | undefined;
    try {
      ring = this.#ring(index);
      // Anything else would make the notifier reads and writes fail later, outside any request.
      if (fd !== undefined && !isEventfd(fd)) {
        throw new RequestFailed(`${name}: fd ${fd} is not an eventfd`);
      }
      if (fd !== undefined && name === 'VHOST_USER_SET_VRING_KICK' && isSemaphoreEventfd(fd)) {
        throw new RequestFailed(`${name}: fd ${fd} is an eventfd in semaphore mode`);
      }
      // The kick fd starts the ring (vhost-user spec, "Ring states").
      if (name === 'VHOST_USER_SET_VRING_KICK') queue = ring.queue ?? this.#buildQueue(ring);
    } catch (err) {
      if (fd !== undefined) native.close(fd);
      throw err;
    }
    if (name === 'VHOST_USER_SET_VRING_CALL') ring.setCall(fd);
    else if (name === 'VHOST_USER_SET_VRING_ERR') ring.setErr(fd);
    else {
      ring.setKick(
        fd,
        () => {
          this.#host.stats.kicksReceived++;
          try {
            this.#pump.process(ring);
          } catch (err) {
            this.#internalError(err);
          }
        },
        (reason) => this.#notifierFailed(ring, reason),
      );
      ring.queue = queue;
      this.#kickStarted(ring);
    }
  }

  #buildQueue(
    ring: Vring,
    memory: BackendMemory | undefined = this.#memory,
    base: number = ring.base,
  ): DeviceQueue {
    const opts = this.#host.options;
    if (memory === undefined) throw new RequestFailed('no memory table yet');
    if (ring.num === 0) throw new RequestFailed(`vring ${ring.index} has no size yet`);
    if (ring.addr === undefined) throw new RequestFailed(`vring ${ring.index} has no address yet`);
    try {
      return new DeviceQueue(
        ring.index,
        { size: ring.num, ...ring.addr },
        base,
        memory,
        {
          eventIdx: hasBit(this.#features, VirtioFeature.VIRTIO_RING_F_EVENT_IDX),
          indirect: hasBit(this.#features, VirtioFeature.VIRTIO_RING_F_INDIRECT_DESC),
        },
        { sizeMax: opts.sizeMax, segMax: opts.segMax },
      );
    } catch (err) {
      throw new RequestFailed(`vring ${ring.index}: ${(err as Error).message}`);
    }
  }

  /** A ring just started or was enabled: set up notifications and take what is waiting. */
  #kickStarted(ring: Vring): void {
    const queue = ring.queue;
    if (queue === undefined) return;
    if (this.#host.options.polling || ring.kickless) queue.suppressKicks();
    else queue.enableKicks();
    this.#pump.updatePolling();
    // Not synchronously: the reply (or ack) to this message goes out first.
    setImmediate(() => {
      if (this.#closed) return;
      try {
        this.#pump.process(ring);
      } catch (err) {
        this.#internalError(err);
      }
    });
  }

  /** Rings start disabled when PROTOCOL_FEATURES was negotiated, enabled otherwise. */
  #isEnabled(ring: Vring): boolean {
    return ring.enabled ?? !hasBit(this.#features, VhostFeature.VHOST_USER_F_PROTOCOL_FEATURES);
  }

  #queueBroken(ring: Vring, reason: string): void {
    this.#host.options.trace?.(`vhost-user-backend: vring ${ring.index} broken: ${reason}`);
    // Stop watching it: a broken queue is not processed again until the frontend resets it.
    ring.stop();
    const fd = ring.errFd;
    if (fd === undefined) return;
    try {
      native.eventfdSignal(fd);
    } catch (err) {
      this.#notifierFailed(ring, `err fd: ${(err as Error).message}`);
    }
  }

  /**
   * A kick, call or err eventfd failed (checked at SET_VRING_*, so only a frontend that found a
   * way around that): the queue is broken, and without its notifiers the connection cannot go on.
   */
  #notifierFailed(ring: Vring, reason: string): void {
    if (this.#closed) return;
    ring.stop();
    const error = new ProtocolError(`vring ${ring.index}: ${reason}`);
    this.#host.onProtocolError(error);
    this.close(error);
  }

  /** A bug of ours outside any request (a callback of the event loop): report it, drop the frontend. */
  #internalError(err: unknown): void {
    const error = toError(err);
    this.#host.onInternalError(error);
    this.close(error);
  }

  /** RESET_OWNER: back to the state of a new connection (rings, memory, features). */
  #reset(): void {
    this.#pump.flush();
    for (const ring of this.#rings) ring.reset();
    this.#memory?.close();
    this.#memory = undefined;
    this.#features = 0n;
    this.#protocolFeatures = 0n;
  }

  #ring(index: number): Vring {
    const ring = this.#rings[index];
    if (ring === undefined) throw new RequestFailed(`vring ${index} does not exist`);
    return ring;
  }

  #stoppedRing(index: number): Vring {
    const ring = this.#ring(index);
    if (ring.queue !== undefined) throw new RequestFailed(`vring ${index} is running`);
    return ring;
  }

  #wantsAck(message: VhostUserMessage): boolean {
    return (
      (message.flags & VHOST_USER_NEED_REPLY_MASK) !== 0 &&
      hasBit(this.#protocolFeatures, VhostUserProtocolFeature.REPLY_ACK) &&
      messageSpec(requestName(message.request))?.reply === 'none'
    );
  }

  /** Nack if the frontend waits for an ack; otherwise the connection cannot go on. */
  #refuse(message: VhostUserMessage, error: ProtocolError): void {
    this.#host.options.trace?.(`vhost-user-backend: refused: ${error.message}`);
    if (this.#wantsAck(message)) {
      this.#send(message.request, U64.encode({ value: 1n }));
      return;
    }
    this.#host.onProtocolError(error);
    this.close(error);
  }

  #send(request: number, payload: Uint8Array): void {
    if (this.#mute || this.#closed) return;
    const shaped = this.#faults.reply(requestName(request), request, payload);
    const flags = VHOST_USER_VERSION | VHOST_USER_REPLY_MASK;
    this.#trace('->', { request: shaped.request, flags, payload: shaped.payload, fds: [] });
    try {
      if (shaped.truncateTo !== undefined) {
        const bytes = encodeMessage(shaped.request, flags, shaped.payload);
        native.sendmsg(this.#endpoint.fd, bytes.subarray(0, shaped.truncateTo), []);
        this.#mute = true;
        return;
      }
      this.#endpoint.send(shaped.request, flags, shaped.payload);
    } catch (err) {
      this.close(toError(err));
    }
  }

  #trace(direction: '<-' | '->', message: VhostUserMessage): void {
    this.#host.options.trace?.(`vhost-user-backend ${direction} ${describeMessage(message)}`);
  }
}

function u64(value: bigint): Uint8Array {
  return U64.encode({ value });
}
