/**
 * A scripted vhost-user-blk backend on a real Unix socket, for the handshake's negative cases.
 * It answers like qemu-storage-daemon unless `override` returns something else for a request.
 * node:net does not receive SCM_RIGHTS, so the fds the frontend sends are dropped by the kernel.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  VHOST_USER_HEADER_SIZE,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_REPLY_MASK,
  VHOST_USER_VERSION,
  VhostUserRequest,
  encodeMessage,
  requestName,
} from '../../src/protocol/messages.js';

export type ScriptedReply =
  | { kind: 'default' }
  | { kind: 'raw'; bytes: Uint8Array }
  | { kind: 'hang' }
  | { kind: 'close' }
  /** The default reply, sent this much later (later requests are answered meanwhile). */
  | { kind: 'delay'; ms: number };

export interface ScriptedBackendOptions {
  /** Request queues offered (VIRTIO_BLK_F_MQ and the MQ protocol feature when above 1). Default 1. */
  queues?: number;
  /** size_max offered (VIRTIO_BLK_F_SIZE_MAX; no SEG_MAX is ever offered). Default: none. */
  sizeMax?: number;
  /** blk_size in the config (BLK_SIZE is offered). Default 512. */
  blkSize?: number;
}

export interface ScriptedBackend {
  socketPath: string;
  /** Names of the requests received, in order. */
  received: string[];
  stop(): Promise<void>;
}

const FEATURES =
  (1n << 32n) | // VERSION_1
  (1n << 30n) | // PROTOCOL_FEATURES
  (1n << 28n) | // INDIRECT_DESC
  (1n << 6n) | // BLK_SIZE
  (1n << 9n); // FLUSH
const PROTOCOL_FEATURES = (1n << 3n) | (1n << 9n); // REPLY_ACK | CONFIG

function u64(value: bigint): Uint8Array {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(value);
  return b;
}

export function reply(
  request: number,
  payload: Uint8Array,
  flags = VHOST_USER_VERSION | VHOST_USER_REPLY_MASK,
): Uint8Array {
  return encodeMessage(request, flags, payload);
}

export function blkConfig(
  opts: { capacitySectors?: bigint; blkSize?: number; numQueues?: number; sizeMax?: number } = {},
): Uint8Array {
  const c = Buffer.alloc(60);
  c.writeBigUInt64LE(opts.capacitySectors ?? 2048n, 0);
  c.writeUInt32LE(opts.sizeMax ?? 0, 8);
  c.writeUInt32LE(opts.blkSize ?? 512, 20);
  c.writeUInt16LE(opts.numQueues ?? 1, 34);
  return c;
}

/** The answer a well-behaved backend gives, or undefined when the request gets none. */
function defaultReply(
  request: number,
  flags: number,
  payload: Buffer,
  options: ScriptedBackendOptions,
): Uint8Array | undefined {
  const R = VhostUserRequest;
  const queues = options.queues ?? 1;
  const mq = queues > 1;
  switch (request) {
    case R.VHOST_USER_GET_FEATURES: {
      let features = mq ? FEATURES | (1n << 12n) : FEATURES;
      if (options.sizeMax !== undefined) features |= 1n << 1n; // SIZE_MAX
      return reply(request, u64(features));
    }
    case R.VHOST_USER_GET_PROTOCOL_FEATURES:
      return reply(request, u64(mq ? PROTOCOL_FEATURES | 1n : PROTOCOL_FEATURES));
    case R.VHOST_USER_GET_QUEUE_NUM:
      return reply(request, u64(BigInt(queues)));
    case R.VHOST_USER_GET_CONFIG: {
      const out = Buffer.alloc(payload.length);
      payload.copy(out, 0, 0, 12);
      const config = blkConfig({
        numQueues: queues,
        sizeMax: options.sizeMax,
        blkSize: options.blkSize,
      });
      Buffer.from(config).copy(out, 12, 0, Math.min(60, payload.length - 12));
      return reply(request, out);
    }
    case R.VHOST_USER_GET_VRING_BASE:
      return reply(request, payload.subarray(0, 8));
    default:
      return (flags & VHOST_USER_NEED_REPLY_MASK) !== 0 ? reply(request, u64(0n)) : undefined;
  }
}

export async function startScriptedBackend(
  override: (request: number, payload: Buffer) => ScriptedReply = () => ({ kind: 'default' }),
  options: ScriptedBackendOptions = {},
): Promise<ScriptedBackend> {
  const dir = mkdtempSync(join(tmpdir(), 'vhost-user-scripted-'));
  const socketPath = join(dir, 'backend.sock');
  const received: string[] = [];
  const sockets: Socket[] = [];
  const server: Server = createServer((socket) => {
    sockets.push(socket);
    let pending = Buffer.alloc(0);
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= VHOST_USER_HEADER_SIZE) {
        const size = pending.readUInt32LE(8);
        if (pending.length < VHOST_USER_HEADER_SIZE + size) break;
        const request = pending.readUInt32LE(0);
        const flags = pending.readUInt32LE(4);
        const payload = pending.subarray(VHOST_USER_HEADER_SIZE, VHOST_USER_HEADER_SIZE + size);
        pending = pending.subarray(VHOST_USER_HEADER_SIZE + size);
        received.push(requestName(request));
        const action = override(request, payload);
        if (action.kind === 'hang') continue;
        if (action.kind === 'close') {
          socket.destroy();
          return;
        }
        const bytes =
          action.kind === 'raw' ? action.bytes : defaultReply(request, flags, payload, options);
        if (!bytes) continue;
        if (action.kind === 'delay') {
          const timer = setTimeout(() => socket.writable && socket.write(bytes), action.ms);
          socket.once('close', () => clearTimeout(timer));
        } else {
          socket.write(bytes);
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  return {
    socketPath,
    received,
    stop: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
