/**
 * Everything that goes over the vhost-user socket, each thing described once: header, request
 * codes, protocol feature bits, payload layouts, which payload and how many fds each request
 * carries, and the stream framing. Names follow QEMU's docs/interop/vhost-user.rst.
 */

import { InvalidArgumentError, ProtocolError } from '../errors.js';
import { defineStruct, u32, u64, type StructValue } from './struct.js';
import type { VhostUserMessage } from './transport.js';

// ---------------------------------------------------------------------------------------------
// Header

export const VHOST_USER_HEADER_SIZE = 12;
/** Bits 0-1 of flags: protocol version, always 1. */
export const VHOST_USER_VERSION = 0x1;
export const VHOST_USER_VERSION_MASK = 0x3;
/** Set on every message the backend sends in answer to a request. */
export const VHOST_USER_REPLY_MASK = 0x4;
/** Asks the backend for a u64 ack (only meaningful once REPLY_ACK is negotiated). */
export const VHOST_USER_NEED_REPLY_MASK = 0x8;
const KNOWN_FLAGS = VHOST_USER_VERSION_MASK | VHOST_USER_REPLY_MASK | VHOST_USER_NEED_REPLY_MASK;
/** Largest payload either side may send; a bigger size field means a broken or hostile peer. */
export const VHOST_USER_MAX_PAYLOAD = 0x1000;

export const VhostUserHeader = defineStruct('VhostUserHeader', VHOST_USER_HEADER_SIZE, {
  request: u32(0),
  flags: u32(4),
  size: u32(8),
});
export type VhostUserHeader = StructValue<typeof VhostUserHeader.fields>;

/** Syntax check shared by the stream parser and validateRequest: version, flag bits, size. */
export function headerError(header: VhostUserHeader): string | undefined {
  if ((header.flags & VHOST_USER_VERSION_MASK) !== VHOST_USER_VERSION) {
    return `unsupported version ${header.flags & VHOST_USER_VERSION_MASK} in flags 0x${hex(header.flags)}`;
  }
  if ((header.flags & ~KNOWN_FLAGS) !== 0) {
    return `unknown flag bits 0x${hex(header.flags & ~KNOWN_FLAGS)}`;
  }
  if (header.size > VHOST_USER_MAX_PAYLOAD) {
    return `payload size ${header.size} exceeds ${VHOST_USER_MAX_PAYLOAD}`;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Request codes (front-end message types)

export const VhostUserRequest = {
  VHOST_USER_GET_FEATURES: 1,
  VHOST_USER_SET_FEATURES: 2,
  VHOST_USER_SET_OWNER: 3,
  VHOST_USER_RESET_OWNER: 4,
  VHOST_USER_SET_MEM_TABLE: 5,
  VHOST_USER_SET_LOG_BASE: 6,
  VHOST_USER_SET_LOG_FD: 7,
  VHOST_USER_SET_VRING_NUM: 8,
  VHOST_USER_SET_VRING_ADDR: 9,
  VHOST_USER_SET_VRING_BASE: 10,
  VHOST_USER_GET_VRING_BASE: 11,
  VHOST_USER_SET_VRING_KICK: 12,
  VHOST_USER_SET_VRING_CALL: 13,
  VHOST_USER_SET_VRING_ERR: 14,
  VHOST_USER_GET_PROTOCOL_FEATURES: 15,
  VHOST_USER_SET_PROTOCOL_FEATURES: 16,
  VHOST_USER_GET_QUEUE_NUM: 17,
  VHOST_USER_SET_VRING_ENABLE: 18,
  VHOST_USER_SEND_RARP: 19,
  VHOST_USER_NET_SET_MTU: 20,
  VHOST_USER_SET_BACKEND_REQ_FD: 21,
  VHOST_USER_IOTLB_MSG: 22,
  VHOST_USER_SET_VRING_ENDIAN: 23,
  VHOST_USER_GET_CONFIG: 24,
  VHOST_USER_SET_CONFIG: 25,
  VHOST_USER_CREATE_CRYPTO_SESSION: 26,
  VHOST_USER_CLOSE_CRYPTO_SESSION: 27,
  VHOST_USER_POSTCOPY_ADVISE: 28,
  VHOST_USER_POSTCOPY_LISTEN: 29,
  VHOST_USER_POSTCOPY_END: 30,
  VHOST_USER_GET_INFLIGHT_FD: 31,
  VHOST_USER_SET_INFLIGHT_FD: 32,
  VHOST_USER_GPU_SET_SOCKET: 33,
  VHOST_USER_RESET_DEVICE: 34,
  VHOST_USER_VRING_KICK: 35,
  VHOST_USER_GET_MAX_MEM_SLOTS: 36,
  VHOST_USER_ADD_MEM_REG: 37,
  VHOST_USER_REM_MEM_REG: 38,
  VHOST_USER_SET_STATUS: 39,
  VHOST_USER_GET_STATUS: 40,
  VHOST_USER_GET_SHARED_OBJECT: 41,
  VHOST_USER_SET_DEVICE_STATE_FD: 42,
  VHOST_USER_CHECK_DEVICE_STATE: 43,
} as const;

export type VhostUserRequestName = keyof typeof VhostUserRequest;
export type VhostUserRequestCode = (typeof VhostUserRequest)[VhostUserRequestName];

const REQUEST_NAMES: ReadonlyMap<number, VhostUserRequestName> = new Map(
  (Object.entries(VhostUserRequest) as [VhostUserRequestName, number][]).map(([n, c]) => [c, n]),
);

/** Name for logs; never throws. Unknown codes read `UNKNOWN(<n>)`. */
export function requestName(code: number): string {
  return REQUEST_NAMES.get(code) ?? `UNKNOWN(${code})`;
}

/** Checked conversion of a raw request code; throws ProtocolError for codes the spec lacks. */
export function parseRequest(code: number): VhostUserRequestName {
  const name = REQUEST_NAMES.get(code);
  if (name === undefined) throw new ProtocolError(`unknown request code ${code}`);
  return name;
}

// ---------------------------------------------------------------------------------------------
// Feature bits

/** Virtio feature bit 30, reused by vhost-user to say GET/SET_PROTOCOL_FEATURES exist. */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;

/** Bit numbers of VHOST_USER_PROTOCOL_F_*, spec names without that prefix. */
export const VhostUserProtocolFeature = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  MTU: 4,
  BACKEND_REQ: 5,
  CROSS_ENDIAN: 6,
  CRYPTO_SESSION: 7,
  PAGEFAULT: 8,
  CONFIG: 9,
  BACKEND_SEND_FD: 10,
  HOST_NOTIFIER: 11,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  INBAND_NOTIFICATIONS: 14,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
  XEN_MMAP: 17,
  SHARED_OBJECT: 18,
  DEVICE_STATE: 19,
} as const;

export type VhostUserProtocolFeatureName = keyof typeof VhostUserProtocolFeature;

const FEATURE_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(VhostUserProtocolFeature).map(([n, bit]) => [bit, n]),
);

/** Names of the set bits, lowest first; unknown bits read `UNKNOWN(<bit>)`. */
export function protocolFeatureNames(bits: bigint): string[] {
  const names: string[] = [];
  for (let bit = 0; bits >> BigInt(bit) !== 0n; bit++) {
    if ((bits >> BigInt(bit)) & 1n) names.push(FEATURE_NAMES.get(bit) ?? `UNKNOWN(${bit})`);
  }
  return names;
}

// ---------------------------------------------------------------------------------------------
// Payload structs

export const U64 = defineStruct('u64', 8, { value: u64(0) });

export const VhostUserVringState = defineStruct('VhostUserVringState', 8, {
  index: u32(0),
  num: u32(4),
});
export type VhostUserVringState = StructValue<typeof VhostUserVringState.fields>;

/** Bit number in VhostUserVringAddr.flags: log used-ring writes (migration only). */
export const VHOST_VRING_F_LOG = 0;

export const VhostUserVringAddr = defineStruct('VhostUserVringAddr', 40, {
  index: u32(0),
  flags: u32(4),
  descriptor: u64(8),
  used: u64(16),
  available: u64(24),
  log: u64(32),
});
export type VhostUserVringAddr = StructValue<typeof VhostUserVringAddr.fields>;

/** Split-ring alignment from the virtio spec; a backend would fault on anything less. */
export function vringAddrError(addr: VhostUserVringAddr): string | undefined {
  if ((addr.flags & ~(1 << VHOST_VRING_F_LOG)) !== 0)
    return `unknown vring flags 0x${hex(addr.flags)}`;
  if (addr.descriptor % 16n !== 0n)
    return `descriptor table 0x${hex(addr.descriptor)} not 16-aligned`;
  if (addr.used % 4n !== 0n) return `used ring 0x${hex(addr.used)} not 4-aligned`;
  if (addr.available % 2n !== 0n) return `available ring 0x${hex(addr.available)} not 2-aligned`;
  return undefined;
}

export const VhostUserMemoryRegion = defineStruct('VhostUserMemoryRegion', 32, {
  guestPhysAddr: u64(0),
  memorySize: u64(8),
  userspaceAddr: u64(16),
  mmapOffset: u64(24),
});
export type VhostUserMemoryRegion = StructValue<typeof VhostUserMemoryRegion.fields>;

/** Most regions one SET_MEM_TABLE may carry (and so most fds). */
export const VHOST_USER_MAX_RAM_SLOTS = 8;

export const VhostUserMemoryHeader = defineStruct('VhostUserMemory', 8, {
  nregions: u32(0),
  padding: u32(4),
});

const U64_END = 1n << 64n;

/** Empty regions and ranges that wrap past 2^64 are meaningless and would break lookups. */
export function memoryRegionError(region: VhostUserMemoryRegion): string | undefined {
  const { memorySize: size } = region;
  if (size === 0n) return 'region has size 0';
  if (region.guestPhysAddr + size > U64_END) return 'guest address + size overflows';
  if (region.userspaceAddr + size > U64_END) return 'user address + size overflows';
  if (region.mmapOffset + size > U64_END) return 'mmap offset + size overflows';
  return undefined;
}

/** SET_MEM_TABLE payload: header then exactly `regions.length` regions. Throws InvalidArgumentError. */
export function encodeMemoryTable(regions: readonly VhostUserMemoryRegion[]): Uint8Array {
  if (regions.length > VHOST_USER_MAX_RAM_SLOTS) {
    throw new InvalidArgumentError(
      `${regions.length} memory regions, at most ${VHOST_USER_MAX_RAM_SLOTS} allowed`,
    );
  }
  const bytes = new Uint8Array(VhostUserMemoryHeader.size + regions.length * 32);
  const view = new DataView(bytes.buffer);
  VhostUserMemoryHeader.encodeInto(view, 0, { nregions: regions.length, padding: 0 });
  regions.forEach((region, i) => {
    const problem = memoryRegionError(region);
    if (problem) throw new InvalidArgumentError(`memory region ${i}: ${problem}`);
    VhostUserMemoryRegion.encodeInto(view, VhostUserMemoryHeader.size + i * 32, region);
  });
  return bytes;
}

/** Parses a SET_MEM_TABLE payload; throws ProtocolError on any layout or range violation. */
export function decodeMemoryTable(bytes: Uint8Array): VhostUserMemoryRegion[] {
  const request = 'VHOST_USER_SET_MEM_TABLE';
  if (bytes.length < VhostUserMemoryHeader.size) {
    throw new ProtocolError(`payload is ${bytes.length} bytes, shorter than its header`, request);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const { nregions, padding } = VhostUserMemoryHeader.decodeFrom(view, 0);
  if (padding !== 0) throw new ProtocolError(`padding is ${padding}, expected 0`, request);
  if (nregions > VHOST_USER_MAX_RAM_SLOTS) {
    throw new ProtocolError(`${nregions} regions, at most ${VHOST_USER_MAX_RAM_SLOTS}`, request);
  }
  const expected = VhostUserMemoryHeader.size + nregions * VhostUserMemoryRegion.size;
  if (bytes.length !== expected) {
    throw new ProtocolError(
      `payload is ${bytes.length} bytes, expected ${expected} for ${nregions} regions`,
      request,
    );
  }
  const regions: VhostUserMemoryRegion[] = [];
  for (let i = 0; i < nregions; i++) {
    const region = VhostUserMemoryRegion.decodeFrom(view, VhostUserMemoryHeader.size + i * 32);
    const problem = memoryRegionError(region);
    if (problem) throw new ProtocolError(`region ${i}: ${problem}`, request);
    regions.push(region);
  }
  return regions;
}

export const VhostUserConfigHeader = defineStruct('VhostUserConfig', 12, {
  offset: u32(0),
  size: u32(4),
  flags: u32(8),
});

/** VhostUserConfig.flags: 0 = writable fields, 1 = live migration. */
export const VHOST_SET_CONFIG_TYPE_FRONTEND = 0;
export const VHOST_SET_CONFIG_TYPE_MIGRATION = 1;

export interface VhostUserConfig {
  offset: number;
  flags: number;
  /** Config-space bytes; the wire `size` field is its length. */
  data: Uint8Array;
}

const MAX_CONFIG_DATA = VHOST_USER_MAX_PAYLOAD - VhostUserConfigHeader.size;

/** GET_CONFIG/SET_CONFIG payload. Throws InvalidArgumentError if data does not fit a message. */
export function encodeConfig(config: VhostUserConfig): Uint8Array {
  if (config.data.length > MAX_CONFIG_DATA) {
    throw new InvalidArgumentError(`config size ${config.data.length} exceeds ${MAX_CONFIG_DATA}`);
  }
  const bytes = new Uint8Array(VhostUserConfigHeader.size + config.data.length);
  VhostUserConfigHeader.encodeInto(new DataView(bytes.buffer), 0, {
    offset: config.offset,
    size: config.data.length,
    flags: config.flags,
  });
  bytes.set(config.data, VhostUserConfigHeader.size);
  return bytes;
}

/** Throws ProtocolError unless the size field matches the bytes that follow the header. */
export function decodeConfig(bytes: Uint8Array, request: string): VhostUserConfig {
  if (bytes.length < VhostUserConfigHeader.size) {
    throw new ProtocolError(`payload is ${bytes.length} bytes, shorter than its header`, request);
  }
  const head = VhostUserConfigHeader.decode(bytes.subarray(0, VhostUserConfigHeader.size));
  const dataLength = bytes.length - VhostUserConfigHeader.size;
  if (head.size !== dataLength) {
    throw new ProtocolError(
      `config size field is ${head.size}, payload holds ${dataLength}`,
      request,
    );
  }
  return { offset: head.offset, flags: head.flags, data: bytes.slice(VhostUserConfigHeader.size) };
}

/** SET_VRING_KICK/CALL/ERR u64: bits 0-7 queue index, bit 8 "no fd attached" (poll instead). */
export const VHOST_USER_VRING_IDX_MASK = 0xff;
export const VHOST_USER_VRING_NOFD_MASK = 0x100;

/** Throws InvalidArgumentError if index does not fit in 8 bits. */
export function encodeVringFd(index: number, hasFd: boolean): Uint8Array {
  if (!Number.isInteger(index) || index < 0 || index > VHOST_USER_VRING_IDX_MASK) {
    throw new InvalidArgumentError(`vring index ${index} must be in [0, 255]`);
  }
  return U64.encode({ value: BigInt(index | (hasFd ? 0 : VHOST_USER_VRING_NOFD_MASK)) });
}

/** Throws ProtocolError if bits above 8 are set. */
export function decodeVringFd(
  bytes: Uint8Array,
  request: string,
): { index: number; noFd: boolean } {
  const { value } = U64.decode(bytes);
  if (value & ~BigInt(VHOST_USER_VRING_IDX_MASK | VHOST_USER_VRING_NOFD_MASK)) {
    throw new ProtocolError(`reserved bits set in vring fd payload 0x${hex(value)}`, request);
  }
  const bits = Number(value);
  return {
    index: bits & VHOST_USER_VRING_IDX_MASK,
    noFd: (bits & VHOST_USER_VRING_NOFD_MASK) !== 0,
  };
}

// ---------------------------------------------------------------------------------------------
// Message table: what a blk/scsi frontend sends, and what comes back

/** Payload layouts. `empty` = zero bytes; `vringFd` = u64 index + NOFD bit. */
export type PayloadKind =
  'empty' | 'u64' | 'vringState' | 'vringAddr' | 'vringFd' | 'memory' | 'config';

/** Which fds a request may carry: none, one per memory region, or one unless NOFD is set. */
export type FdRule = 'none' | 'perRegion' | 'vringFd';

export interface MessageSpec {
  readonly request: PayloadKind;
  /** 'none': no reply, except a u64 ack when NEED_REPLY is set and REPLY_ACK negotiated. */
  readonly reply: PayloadKind | 'none';
  readonly fds: FdRule;
}

export const VhostUserMessageTable = {
  VHOST_USER_GET_FEATURES: { request: 'empty', reply: 'u64', fds: 'none' },
  VHOST_USER_SET_FEATURES: { request: 'u64', reply: 'none', fds: 'none' },
  VHOST_USER_SET_OWNER: { request: 'empty', reply: 'none', fds: 'none' },
  VHOST_USER_RESET_OWNER: { request: 'empty', reply: 'none', fds: 'none' },
  VHOST_USER_SET_MEM_TABLE: { request: 'memory', reply: 'none', fds: 'perRegion' },
  VHOST_USER_SET_VRING_NUM: { request: 'vringState', reply: 'none', fds: 'none' },
  VHOST_USER_SET_VRING_ADDR: { request: 'vringAddr', reply: 'none', fds: 'none' },
  VHOST_USER_SET_VRING_BASE: { request: 'vringState', reply: 'none', fds: 'none' },
  VHOST_USER_GET_VRING_BASE: { request: 'vringState', reply: 'vringState', fds: 'none' },
  VHOST_USER_SET_VRING_KICK: { request: 'vringFd', reply: 'none', fds: 'vringFd' },
  VHOST_USER_SET_VRING_CALL: { request: 'vringFd', reply: 'none', fds: 'vringFd' },
  VHOST_USER_SET_VRING_ERR: { request: 'vringFd', reply: 'none', fds: 'vringFd' },
  VHOST_USER_GET_PROTOCOL_FEATURES: { request: 'empty', reply: 'u64', fds: 'none' },
  VHOST_USER_SET_PROTOCOL_FEATURES: { request: 'u64', reply: 'none', fds: 'none' },
  VHOST_USER_GET_QUEUE_NUM: { request: 'empty', reply: 'u64', fds: 'none' },
  VHOST_USER_SET_VRING_ENABLE: { request: 'vringState', reply: 'none', fds: 'none' },
  VHOST_USER_GET_CONFIG: { request: 'config', reply: 'config', fds: 'none' },
  VHOST_USER_SET_CONFIG: { request: 'config', reply: 'none', fds: 'none' },
  VHOST_USER_GET_MAX_MEM_SLOTS: { request: 'empty', reply: 'u64', fds: 'none' },
  VHOST_USER_RESET_DEVICE: { request: 'empty', reply: 'none', fds: 'none' },
} as const satisfies { readonly [K in VhostUserRequestName]?: MessageSpec };

/** The requests this library speaks (the rest of VhostUserRequest is known but unsupported). */
export type FrontendRequestName = keyof typeof VhostUserMessageTable;

export function messageSpec(name: string): MessageSpec | undefined {
  return Object.hasOwn(VhostUserMessageTable, name)
    ? VhostUserMessageTable[name as FrontendRequestName]
    : undefined;
}

const FIXED_SIZE: Readonly<Record<PayloadKind, number | undefined>> = {
  empty: 0,
  u64: 8,
  vringState: VhostUserVringState.size,
  vringAddr: VhostUserVringAddr.size,
  vringFd: 8,
  memory: undefined,
  config: undefined,
};

/** Wire size of a fixed-layout payload kind; undefined for the variable ones (memory, config). */
export function payloadSize(kind: PayloadKind): number | undefined {
  return FIXED_SIZE[kind];
}

/**
 * Receiving-side check of one request (the backend's counterpart of the frontend's reply check):
 * known and supported code, valid header, payload exactly as long as the header says and as the
 * payload kind requires, and exactly the fds the request may carry. Returns the error rather than
 * throwing so the caller can close the fds and the connection in one place.
 */
export function validateRequest(
  header: VhostUserHeader,
  payload: Uint8Array,
  fds: readonly number[],
): ProtocolError | undefined {
  const name = requestName(header.request);
  const spec = messageSpec(name);
  if (!spec) {
    return new ProtocolError(
      REQUEST_NAMES.has(header.request) ? 'request not supported' : 'unknown request code',
      name,
    );
  }
  const problem =
    headerError(header) ??
    ((header.flags & VHOST_USER_REPLY_MASK) !== 0 ? 'REPLY flag set on a request' : undefined) ??
    (payload.length !== header.size
      ? `header says ${header.size} payload bytes, got ${payload.length}`
      : undefined);
  if (problem) return new ProtocolError(problem, name);
  try {
    const allowedFds = checkPayload(spec.request, payload, name);
    const fdCount = spec.fds === 'none' ? 0 : allowedFds;
    if (fds.length !== fdCount) {
      return new ProtocolError(`carries ${fds.length} fds, expected ${fdCount}`, name);
    }
  } catch (err) {
    if (err instanceof ProtocolError) return err;
    throw err;
  }
  return undefined;
}

/** Throws ProtocolError on a malformed payload; returns the fd count the payload implies. */
function checkPayload(kind: PayloadKind, payload: Uint8Array, request: string): number {
  const fixed = FIXED_SIZE[kind];
  if (fixed !== undefined && payload.length !== fixed) {
    throw new ProtocolError(`payload is ${payload.length} bytes, expected ${fixed}`, request);
  }
  switch (kind) {
    case 'memory':
      return decodeMemoryTable(payload).length;
    case 'config':
      decodeConfig(payload, request);
      return 0;
    case 'vringFd':
      return decodeVringFd(payload, request).noFd ? 0 : 1;
    case 'vringAddr': {
      const problem = vringAddrError(VhostUserVringAddr.decode(payload));
      if (problem) throw new ProtocolError(problem, request);
      return 0;
    }
    default:
      return 0;
  }
}

// ---------------------------------------------------------------------------------------------
// Framing

/** Header + payload in one buffer. Throws InvalidArgumentError if the payload is too large. */
export function encodeMessage(request: number, flags: number, payload: Uint8Array): Uint8Array {
  if (payload.length > VHOST_USER_MAX_PAYLOAD) {
    throw new InvalidArgumentError(
      `${requestName(request)}: payload of ${payload.length} bytes exceeds ${VHOST_USER_MAX_PAYLOAD}`,
    );
  }
  const bytes = new Uint8Array(VHOST_USER_HEADER_SIZE + payload.length);
  VhostUserHeader.encodeInto(new DataView(bytes.buffer), 0, {
    request,
    flags,
    size: payload.length,
  });
  bytes.set(payload, VHOST_USER_HEADER_SIZE);
  return bytes;
}

export interface MessageParserOptions {
  /** Called for every fd the parser drops (on a protocol error or reset) instead of returning it. */
  closeFd: (fd: number) => void;
}

/**
 * Splits a byte stream into messages. Chunk boundaries are arbitrary. fds passed with a chunk
 * belong to the last message that starts in that chunk: the kernel attaches SCM_RIGHTS to the
 * first byte of the sendmsg that carried them and ends a recvmsg right after such a segment, so
 * any earlier message in the same read arrived without fds. Header violations throw ProtocolError
 * and the parser stays failed; every fd it held or was given is closed through `closeFd` first.
 */
export class MessageParser {
  readonly #closeFd: (fd: number) => void;
  /** Bytes of the message in progress (header not yet complete, or payload not yet complete). */
  #partial: Uint8Array = new Uint8Array(0);
  /** fds belonging to the message in progress. */
  #partialFds: number[] = [];
  #failed: ProtocolError | undefined;

  constructor(options: MessageParserOptions) {
    this.#closeFd = options.closeFd;
  }

  /** Bytes held for a message not yet complete. */
  get pendingBytes(): number {
    return this.#partial.length;
  }

  /**
   * Feeds one received chunk and the fds that came with it; returns the messages it completed,
   * in order, each with its own copy of the payload. Throws ProtocolError (see class doc).
   */
  push(chunk: Uint8Array, fds: readonly number[] = []): VhostUserMessage[] {
    if (this.#failed) {
      this.#close(fds);
      throw new ProtocolError(`stream unusable after earlier error: ${this.#failed.message}`);
    }
    const data = concat(this.#partial, chunk);
    const chunkStart = this.#partial.length;
    const done: { start: number; message: VhostUserMessage }[] = [];
    let pos = 0;
    let carried = this.#partialFds;
    try {
      for (;;) {
        if (data.length - pos < VHOST_USER_HEADER_SIZE) break;
        const view = new DataView(data.buffer, data.byteOffset + pos, VHOST_USER_HEADER_SIZE);
        const header = VhostUserHeader.decodeFrom(view, 0);
        const problem = headerError(header);
        if (problem) throw new ProtocolError(`${requestName(header.request)}: ${problem}`);
        const end = pos + VHOST_USER_HEADER_SIZE + header.size;
        if (end > data.length) break;
        const payload = data.slice(pos + VHOST_USER_HEADER_SIZE, end);
        done.push({
          start: pos,
          message: { request: header.request, flags: header.flags, payload, fds: carried },
        });
        carried = [];
        pos = end;
      }
      const partialStartsHere = pos < data.length && pos >= chunkStart;
      if (fds.length > 0) {
        if (partialStartsHere) {
          carried = [...carried, ...fds];
        } else {
          let owner: (typeof done)[number] | undefined;
          for (const d of done) if (d.start >= chunkStart) owner = d;
          if (!owner) throw new ProtocolError(`${fds.length} fds arrived with no message start`);
          owner.message.fds = [...owner.message.fds, ...fds];
        }
      }
    } catch (err) {
      // Nothing is returned on failure, so every fd this call knows about must be closed here.
      this.#failed = err instanceof ProtocolError ? err : new ProtocolError(String(err));
      this.#close(carried);
      for (const d of done) this.#close(d.message.fds);
      this.#close(fds);
      this.#partial = new Uint8Array(0);
      this.#partialFds = [];
      throw err;
    }
    this.#partial = data.slice(pos);
    this.#partialFds = carried;
    return done.map((d) => d.message);
  }

  /** Drops a partial message (e.g. on disconnect), closing its fds, and clears any failure. */
  reset(): void {
    this.#close(this.#partialFds);
    this.#partial = new Uint8Array(0);
    this.#partialFds = [];
    this.#failed = undefined;
  }

  #close(fds: readonly number[]): void {
    for (const fd of fds) this.#closeFd(fd);
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b;
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

// ---------------------------------------------------------------------------------------------
// One-line summaries for tracing

/**
 * `VHOST_USER_SET_VRING_ADDR flags=0x9 size=40 fds=0 {index=0 flags=0 descriptor=0x1000 ...}`.
 * Replies are decoded as their reply kind (or a u64 ack). Never throws: a payload that does not
 * fit its kind is shown as hex.
 */
export function describeMessage(message: VhostUserMessage): string {
  const { request, flags, payload, fds } = message;
  const names: string[] = [];
  if (flags & VHOST_USER_REPLY_MASK) names.push('REPLY');
  if (flags & VHOST_USER_NEED_REPLY_MASK) names.push('NEED_REPLY');
  const head =
    `${requestName(request)} flags=0x${hex(flags)}${names.length ? `(${names.join('|')})` : ''}` +
    ` size=${payload.length} fds=${fds.length}`;
  const spec = messageSpec(requestName(request));
  let kind: PayloadKind | undefined;
  if (spec) {
    const isReply = (flags & VHOST_USER_REPLY_MASK) !== 0;
    kind = isReply ? (spec.reply === 'none' ? 'u64' : spec.reply) : spec.request;
  }
  if (payload.length === 0) return head;
  try {
    if (kind) return `${head} ${describePayload(kind, payload, requestName(request))}`;
  } catch {
    // Fall through to hex: tracing must never be what fails.
  }
  return `${head} payload=${hexBytes(payload, 64)}`;
}

function describePayload(kind: PayloadKind, payload: Uint8Array, request: string): string {
  switch (kind) {
    case 'empty':
      throw new ProtocolError('unexpected payload');
    case 'u64':
      return fields(U64.decode(payload));
    case 'vringState':
      return fields(VhostUserVringState.decode(payload));
    case 'vringAddr':
      return fields(VhostUserVringAddr.decode(payload));
    case 'vringFd': {
      const { index, noFd } = decodeVringFd(payload, request);
      return `{index=${index}${noFd ? ' NOFD' : ''}}`;
    }
    case 'memory': {
      const regions = decodeMemoryTable(payload).map((r) => fields(r));
      return `{nregions=${regions.length}${regions.map((r) => ` ${r}`).join('')}}`;
    }
    case 'config': {
      const c = decodeConfig(payload, request);
      return `{offset=${c.offset} size=${c.data.length} flags=${c.flags} data=${hexBytes(c.data, 32)}}`;
    }
  }
}

function fields(value: Record<string, number | bigint>): string {
  const parts = Object.entries(value).map(([k, v]) =>
    typeof v === 'bigint' ? `${k}=0x${v.toString(16)}` : `${k}=${v}`,
  );
  return `{${parts.join(' ')}}`;
}

function hex(value: number | bigint): string {
  return (typeof value === 'number' ? value >>> 0 : value).toString(16);
}

function hexBytes(bytes: Uint8Array, max: number): string {
  const shown = Buffer.from(bytes.subarray(0, max)).toString('hex');
  return bytes.length > max ? `${shown}...` : shown;
}
