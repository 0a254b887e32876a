/**
 * A minimal virtio-scsi driver for the embedded vhost-user-scsi backend, over a real socket: raw
 * vhost-user messages, the three rings (controlq, eventq, one request queue) in one sealed memfd.
 * It exists to test the backend at the wire level, below any library driver: request framing,
 * residuals, task management, events, faults. Also here: the scsi server it talks to (on a
 * socket in a temporary folder removed after the tests) and the command and TMF round trips.
 */
import { after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { native } from '../../src/native.js';
import {
  U64,
  encodeMemoryTable,
  encodeVringFd,
  VhostUserVringAddr,
  VhostUserVringState,
} from '../../src/protocol/messages.js';
import {
  splitRingLayout,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from '../../src/virtqueue/layout.js';
import {
  createBlockServer,
  type BlockServer,
  type BlockServerOptions,
} from '../../src/backend/index.js';
import {
  encodeVirtioLun,
  VirtioScsiCmdRespHeader,
  VirtioScsiResponse,
} from '../../src/devices/scsi/spec.js';
import { buildReadWrite, buildTestUnitReady, lbaRange } from '../../src/devices/scsi/cdb.js';
import { decodeSense } from '../../src/devices/scsi/sense.js';
import { RawFrontend } from './raw-frontend.js';

const MEM = 2 << 20;
const GPA = 0x1000_0000;
const UVA = 0x7e00_0000_0000;
const QSIZE = 32;
const LAYOUT = splitRingLayout(QSIZE, 0);
const RINGS = 3;

export const CONTROLQ = 0;
export const EVENTQ = 1;
export const REQUESTQ = 2;
/** The target and LUN the servers here serve. */
export const TARGET = 1;
export const LUN = 0;
export const BS = 512;
/** The servers' disk size. */
export const DISK = 4 << 20;
/** The response buffer of a command: virtio_scsi_cmd_resp with 96 bytes of sense. */
export const RESP = 12 + 96;

const dir = mkdtempSync(join(tmpdir(), 'vhost-user-mini-scsi-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let serial = 0;

/** A fresh socket path in the temporary folder. */
export function socketPath(): string {
  return join(dir, `s${serial++}.sock`);
}

/** A listening scsi server on a fresh socket, serving TARGET and LUN on a DISK-sized disk. */
export async function server(extra: Partial<BlockServerOptions> = {}): Promise<BlockServer> {
  const s = createBlockServer({
    type: 'scsi',
    socketPath: socketPath(),
    size: DISK,
    target: TARGET,
    lun: LUN,
    ...extra,
  });
  await s.listen();
  return s;
}

/** Records the server's 'error' and 'protocol-error' events, and disconnects that carried an error. */
export function watchProblems(s: BlockServer): string[] {
  const problems: string[] = [];
  s.on('error', (err: Error) => problems.push(`error ${err.message}`));
  s.on('protocol-error', (err: Error) => problems.push(`protocol-error ${err.message}`));
  s.on('disconnect', (err?: Error) => {
    if (err) problems.push(`disconnect ${err.message}`);
  });
  return problems;
}

/**
 * Runs `body` with a driver connected to a fresh server; closes both. With `noProblems`, asserts
 * afterwards that the server reported no problem (see watchProblems).
 */
export async function withDriver(
  extra: Partial<BlockServerOptions>,
  body: (d: MiniDriver, s: BlockServer) => Promise<void>,
  o: { noProblems?: boolean } = {},
): Promise<void> {
  const s = await server(extra);
  const problems = o.noProblems ? watchProblems(s) : undefined;
  let d: MiniDriver | undefined;
  try {
    d = await MiniDriver.open(s);
    await body(d, s);
  } finally {
    d?.close();
    await s.close();
  }
  if (problems) assert.deepEqual(problems, []);
}

export interface Used {
  id: number;
  len: number;
}

/** A minimal virtio-scsi driver: raw vhost-user messages, three rings in one sealed memfd. */
export class MiniDriver extends RawFrontend {
  readonly bytes: Buffer;
  readonly #fd: number;
  readonly #handle: ReturnType<typeof native.mmap>['handle'];
  readonly #kicks: number[] = [];
  readonly #avail = [0, 0, 0];
  readonly #used = [0, 0, 0];
  readonly #slot = [0, 0, 0];
  /** Bump allocator for buffers, above the rings. */
  #next = 0x10000;
  #closed = false;

  private constructor(path: string) {
    super(path);
    this.#fd = native.memfdCreate('mini-scsi', 0);
    native.ftruncate(this.#fd, MEM);
    native.memfdSeal(this.#fd);
    const m = native.mmap(this.#fd, MEM, 0, 'shared');
    this.#handle = m.handle;
    this.bytes = Buffer.from(m.buffer as ArrayBuffer);
  }

  /** Connects, negotiates `features` (default: all offered), maps the memory, starts the rings. */
  static async open(s: BlockServer | string, features?: bigint): Promise<MiniDriver> {
    const d = new MiniDriver(typeof s === 'string' ? s : s.socketPath!);
    try {
      const offered = U64.decode(await d.ask('VHOST_USER_GET_FEATURES')).value;
      const protocol = U64.decode(await d.ask('VHOST_USER_GET_PROTOCOL_FEATURES')).value;
      d.tell('VHOST_USER_SET_PROTOCOL_FEATURES', U64.encode({ value: protocol }));
      assert.equal(
        await d.acked('VHOST_USER_SET_FEATURES', U64.encode({ value: features ?? offered })),
        0n,
      );
      assert.equal(await d.acked('VHOST_USER_SET_OWNER'), 0n);
      const table = encodeMemoryTable([
        {
          guestPhysAddr: BigInt(GPA),
          memorySize: BigInt(MEM),
          userspaceAddr: BigInt(UVA),
          mmapOffset: 0n,
        },
      ]);
      assert.equal(await d.acked('VHOST_USER_SET_MEM_TABLE', table, [d.#fd]), 0n);
      for (let ring = 0; ring < RINGS; ring++) await d.startRing(ring);
    } catch (err) {
      d.close();
      throw err;
    }
    return d;
  }

  ringBase(ring: number): number {
    return ring * 0x2000;
  }

  /** GET_VRING_BASE: stops `ring` (delivering held completions); returns the base. */
  async stopRing(ring: number): Promise<number> {
    const reply = await this.ask(
      'VHOST_USER_GET_VRING_BASE',
      VhostUserVringState.encode({ index: ring, num: 0 }),
    );
    return VhostUserVringState.decode(reply).num;
  }

  /** Starts `ring` at `base` (after a stop: what GET_VRING_BASE said); the used ring stays. */
  async startRing(ring: number, base = 0): Promise<void> {
    this.#avail[ring] = base;
    const state = (num: number): Uint8Array => VhostUserVringState.encode({ index: ring, num });
    const ringUva = UVA + this.ringBase(ring);
    assert.equal(await this.acked('VHOST_USER_SET_VRING_NUM', state(QSIZE)), 0n);
    const addr = VhostUserVringAddr.encode({
      index: ring,
      flags: 0,
      descriptor: BigInt(ringUva + LAYOUT.descOffset),
      used: BigInt(ringUva + LAYOUT.usedOffset),
      available: BigInt(ringUva + LAYOUT.availOffset),
      log: 0n,
    });
    assert.equal(await this.acked('VHOST_USER_SET_VRING_ADDR', addr), 0n);
    assert.equal(await this.acked('VHOST_USER_SET_VRING_BASE', state(base)), 0n);
    const call = native.eventfd();
    assert.equal(
      await this.acked('VHOST_USER_SET_VRING_CALL', encodeVringFd(ring, true), [call]),
      0n,
    );
    native.close(call);
    const kick = native.eventfd();
    assert.equal(
      await this.acked('VHOST_USER_SET_VRING_KICK', encodeVringFd(ring, true), [kick]),
      0n,
    );
    if (this.#kicks[ring] !== undefined) native.close(this.#kicks[ring]);
    this.#kicks[ring] = kick;
    assert.equal(await this.acked('VHOST_USER_SET_VRING_ENABLE', state(1)), 0n);
  }

  /** A buffer of `length` bytes (0xcc, or `data` at its start); returns its offset. */
  alloc(length: number, data?: Uint8Array): number {
    const off = this.#next;
    this.#next += Math.ceil(Math.max(length, 1) / 64) * 64;
    assert.ok(this.#next < MEM, 'test memory exhausted');
    this.bytes.fill(0xcc, off, off + length);
    if (data) this.bytes.set(data, off);
    return off;
  }

  /** Publishes a chain of (offset, length, writable) buffers on `ring` and kicks; returns the head. */
  post(ring: number, parts: [number, number, boolean][], kick = true): number {
    const view = new DataView(this.bytes.buffer);
    const table = this.ringBase(ring) + LAYOUT.descOffset;
    const first = (this.#slot[ring]! * 4) % QSIZE;
    this.#slot[ring]!++;
    parts.forEach(([off, len, write], i) => {
      const at = table + 16 * (first + i);
      view.setBigUint64(at, BigInt(GPA + off), true);
      view.setUint32(at + 8, len, true);
      const last = i === parts.length - 1;
      view.setUint16(
        at + 12,
        (write ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT),
        true,
      );
      view.setUint16(at + 14, first + i + 1, true);
    });
    const avail = this.ringBase(ring) + LAYOUT.availOffset;
    const idx = this.#avail[ring]!;
    view.setUint16(avail + 4 + 2 * (idx % QSIZE), first, true);
    this.#avail[ring] = (idx + 1) & 0xffff;
    Atomics.store(new Uint16Array(this.bytes.buffer), (avail + 2) / 2, this.#avail[ring]!);
    if (kick) this.kick(ring);
    return first;
  }

  kick(ring: number): void {
    native.eventfdWrite(this.#kicks[ring]!);
  }

  /** The next used element of `ring`, or undefined after `ms`. */
  async nextUsed(ring: number, ms = 2000): Promise<Used | undefined> {
    const used = this.ringBase(ring) + LAYOUT.usedOffset;
    const u16 = new Uint16Array(this.bytes.buffer);
    const deadline = Date.now() + ms;
    while (Atomics.load(u16, (used + 2) / 2) === this.#used[ring]) {
      if (Date.now() > deadline) return undefined;
      await new Promise((r) => setTimeout(r, 2));
    }
    const slot = this.#used[ring]! % QSIZE;
    this.#used[ring] = (this.#used[ring]! + 1) & 0xffff;
    return {
      id: this.bytes.readUInt32LE(used + 4 + 8 * slot),
      len: this.bytes.readUInt32LE(used + 8 + 8 * slot),
    };
  }

  override close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.ep.close();
    for (const k of this.#kicks) if (k !== undefined) native.close(k);
    native.munmap(this.#handle);
    native.close(this.#fd);
  }
}

export interface CommandOptions {
  target?: number;
  lun?: number;
  tag?: bigint;
  out?: Buffer;
  inLen?: number;
  /** Readable request bytes (default 51: header + 32-byte CDB). */
  reqLen?: number;
}

export interface Posted {
  head: number;
  resp: number;
  dataIn: number;
}

/** Posts a command on the request queue: request, data-out, response, data-in. */
export function postCommand(d: MiniDriver, cdb: Uint8Array, o: CommandOptions = {}): Posted {
  const req = Buffer.alloc(51);
  encodeVirtioLun(req, 0, o.target ?? TARGET, o.lun ?? LUN);
  req.writeBigUInt64LE(o.tag ?? 1n, 8);
  req.set(cdb.subarray(0, 32), 19);
  const parts: [number, number, boolean][] = [[d.alloc(51, req), o.reqLen ?? 51, false]];
  if (o.out) parts.push([d.alloc(o.out.length, o.out), o.out.length, false]);
  const resp = d.alloc(RESP);
  parts.push([resp, RESP, true]);
  const dataIn = o.inLen ? d.alloc(o.inLen) : 0;
  if (o.inLen) parts.push([dataIn, o.inLen, true]);
  return { head: d.post(REQUESTQ, parts), resp, dataIn };
}

export interface Completed {
  used: Used;
  response: number;
  status: number;
  resid: number;
  sense: ReturnType<typeof decodeSense>;
  senseLen: number;
  data: Buffer;
}

/** The completion of posted command `p` (which must have completed as `used`). */
export function completed(d: MiniDriver, p: Posted, used: Used | undefined, inLen = 0): Completed {
  assert.ok(used, 'command completed');
  assert.equal(used.id, p.head, 'used id is the chain head');
  const header = VirtioScsiCmdRespHeader.decode(d.bytes.subarray(p.resp, p.resp + 12));
  return {
    used,
    response: header.response,
    status: header.status,
    resid: header.resid,
    senseLen: header.senseLen,
    sense: header.senseLen
      ? decodeSense(d.bytes.subarray(p.resp + 12, p.resp + 12 + header.senseLen))
      : undefined,
    data: Buffer.from(d.bytes.subarray(p.dataIn, p.dataIn + inLen - header.resid)),
  };
}

/** Posts a command and waits for its completion. */
export async function command(
  d: MiniDriver,
  cdb: Uint8Array,
  o: CommandOptions = {},
): Promise<Completed> {
  const p = postCommand(d, cdb, o);
  return completed(d, p, await d.nextUsed(REQUESTQ), o.inLen ?? 0);
}

/** A 32-byte CDB field filled by `build`. */
export function cdbOf(build: (out: Uint8Array, at: number) => number): Uint8Array {
  const out = new Uint8Array(32);
  build(out, 0);
  return out;
}

export const readCdb = (lba: number, blocks: number): Uint8Array =>
  cdbOf((o, a) => buildReadWrite(o, a, false, lbaRange(lba, blocks), false));
export const writeCdb = (lba: number, blocks: number): Uint8Array =>
  cdbOf((o, a) => buildReadWrite(o, a, true, lbaRange(lba, blocks), false));
export const TUR = cdbOf(buildTestUnitReady);

export interface TmfOptions {
  target?: number;
  lun?: number;
  /** Readable request bytes (default 24; fewer cut it short). */
  bytes?: number;
}

/** Posts a TMF on the controlq; returns its chain head and the offset of its response byte. */
export function postTmf(
  d: MiniDriver,
  subtype: number,
  tag = 0n,
  o: TmfOptions = {},
): { head: number; resp: number } {
  const req = Buffer.alloc(24);
  req.writeUInt32LE(0, 0);
  req.writeUInt32LE(subtype, 4);
  encodeVirtioLun(req, 8, o.target ?? TARGET, o.lun ?? LUN);
  req.writeBigUInt64LE(tag, 16);
  const resp = d.alloc(1);
  const head = d.post(CONTROLQ, [
    [d.alloc(24, req), o.bytes ?? 24, false],
    [resp, 1, true],
  ]);
  return { head, resp };
}

/** A TMF that must be answered; returns the response byte. */
export async function tmf(
  d: MiniDriver,
  subtype: number,
  tag = 0n,
  o: Omit<TmfOptions, 'bytes'> = {},
): Promise<number> {
  const { head, resp } = postTmf(d, subtype, tag, o);
  const used = await d.nextUsed(CONTROLQ);
  assert.ok(used, 'TMF answered');
  assert.deepEqual(used, { id: head, len: 1 });
  return d.bytes[resp]!;
}

/** Posts an AN_QUERY on the controlq for the events in `requested`; returns head and response. */
export function postAnQuery(d: MiniDriver, requested = 0): { head: number; resp: number } {
  const an = Buffer.alloc(16);
  an.writeUInt32LE(1, 0);
  encodeVirtioLun(an, 4, TARGET, LUN);
  an.writeUInt32LE(requested, 12);
  const resp = d.alloc(5);
  const head = d.post(CONTROLQ, [
    [d.alloc(16, an), 16, false],
    [resp, 5, true],
  ]);
  return { head, resp };
}

/** AN_QUERY on the controlq, which must be answered OK (even when task management is ignored). */
export async function anQuery(d: MiniDriver): Promise<void> {
  const { head, resp } = postAnQuery(d);
  assert.deepEqual(await d.nextUsed(CONTROLQ), { id: head, len: 5 });
  assert.equal(d.bytes[resp + 4], VirtioScsiResponse.VIRTIO_SCSI_S_OK);
}
