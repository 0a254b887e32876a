/**
 * Task management in the embedded vhost-user-scsi backend over a real socket, with a minimal
 * virtio-scsi driver written here (as in test/integration/backend-scsi.test.ts): ABORT TASK and
 * LOGICAL UNIT RESET on held commands, the faults rejectAbortTask and ignoreTaskManagement, and
 * the tmf* counters, both in-process and from a child's STATS line.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { native } from '../../src/native.js';
import { SocketEndpoint } from '../../src/protocol/endpoint.js';
import {
  U64,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_REPLY_MASK,
  VHOST_USER_VERSION,
  VhostUserRequest,
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
  type ServerStats,
} from '../../src/backend/index.js';
import {
  encodeVirtioLun,
  VirtioScsiCmdRespHeader,
  VirtioScsiResponse,
  VirtioScsiTmf,
  VIRTIO_SCSI_S_FUNCTION_COMPLETE,
} from '../../src/devices/scsi/spec.js';
import { buildReadWrite, buildTestUnitReady, ScsiStatus } from '../../src/devices/scsi/cdb.js';
import { decodeSense, SenseKey } from '../../src/devices/scsi/sense.js';
import { startEmbedded } from '../helpers/embedded-backend.js';

const V = VHOST_USER_VERSION;
const ACK = V | VHOST_USER_NEED_REPLY_MASK;
const MEM = 2 << 20;
const GPA = 0x1000_0000;
const UVA = 0x7e00_0000_0000;
const QSIZE = 32;
const LAYOUT = splitRingLayout(QSIZE, 0);
const RINGS = 3;
const CONTROLQ = 0;
const REQUESTQ = 2;
const TARGET = 1;
const LUN = 0;
const BS = 512;
const DISK = 4 << 20;
const RESP = 12 + 96;
const REJECTED = VirtioScsiResponse.VIRTIO_SCSI_S_FUNCTION_REJECTED;
const {
  VIRTIO_SCSI_T_TMF_ABORT_TASK: ABORT_TASK,
  VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET: LUN_RESET,
} = VirtioScsiTmf;

const dir = mkdtempSync(join(tmpdir(), 'vhost-user-backend-scsi-tmf-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let serial = 0;

interface Used {
  id: number;
  len: number;
}

/** A minimal virtio-scsi driver: raw vhost-user messages, three rings in one sealed memfd. */
class MiniDriver {
  readonly ep: SocketEndpoint;
  readonly bytes: Buffer;
  readonly #fd: number;
  readonly #handle: ReturnType<typeof native.mmap>['handle'];
  readonly #kicks: number[] = [];
  readonly #avail = [0, 0, 0];
  readonly #used = [0, 0, 0];
  readonly #slot = [0, 0, 0];
  #next = 0x10000;
  #closed = false;

  private constructor(path: string) {
    this.ep = SocketEndpoint.connect(path);
    this.#fd = native.memfdCreate('mini-scsi-tmf', 0);
    native.ftruncate(this.#fd, MEM);
    native.memfdSeal(this.#fd);
    const m = native.mmap(this.#fd, MEM, 0, 'shared');
    this.#handle = m.handle;
    this.bytes = Buffer.from(m.buffer as ArrayBuffer);
  }

  static async open(path: string): Promise<MiniDriver> {
    const d = new MiniDriver(path);
    try {
      const offered = U64.decode(await d.ask('VHOST_USER_GET_FEATURES')).value;
      const protocol = U64.decode(await d.ask('VHOST_USER_GET_PROTOCOL_FEATURES')).value;
      d.tell('VHOST_USER_SET_PROTOCOL_FEATURES', U64.encode({ value: protocol }));
      assert.equal(await d.acked('VHOST_USER_SET_FEATURES', U64.encode({ value: offered })), 0n);
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

  async ask(
    name: keyof typeof VhostUserRequest,
    payload: Uint8Array = new Uint8Array(0),
  ): Promise<Uint8Array> {
    this.tell(name, payload);
    const reply = await this.ep.receive(2000, name);
    assert.equal(reply.request, VhostUserRequest[name]);
    assert.equal(reply.flags, V | VHOST_USER_REPLY_MASK);
    return reply.payload;
  }

  tell(
    name: keyof typeof VhostUserRequest,
    payload: Uint8Array = new Uint8Array(0),
    flags = V,
    fds: number[] = [],
  ): void {
    this.ep.send(VhostUserRequest[name], flags, payload, fds);
  }

  async acked(
    name: keyof typeof VhostUserRequest,
    payload: Uint8Array = new Uint8Array(0),
    fds: number[] = [],
  ): Promise<bigint> {
    this.tell(name, payload, ACK, fds);
    const reply = await this.ep.receive(2000, name);
    return U64.decode(reply.payload).value;
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

  alloc(length: number, data?: Uint8Array): number {
    const off = this.#next;
    this.#next += Math.ceil(Math.max(length, 1) / 64) * 64;
    assert.ok(this.#next < MEM, 'test memory exhausted');
    this.bytes.fill(0xcc, off, off + length);
    if (data) this.bytes.set(data, off);
    return off;
  }

  /** Publishes a chain of (offset, length, writable) buffers on `ring` and kicks; returns the head. */
  post(ring: number, parts: [number, number, boolean][]): number {
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
    native.eventfdWrite(this.#kicks[ring]!);
    return first;
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

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.ep.close();
    for (const k of this.#kicks) if (k !== undefined) native.close(k);
    native.munmap(this.#handle);
    native.close(this.#fd);
  }
}

interface Posted {
  head: number;
  resp: number;
  dataIn: number;
}

function postCommand(
  d: MiniDriver,
  cdb: Uint8Array,
  o: { tag?: bigint; out?: Buffer; inLen?: number } = {},
): Posted {
  const req = Buffer.alloc(51);
  encodeVirtioLun(req, 0, TARGET, LUN);
  req.writeBigUInt64LE(o.tag ?? 1n, 8);
  req.set(cdb.subarray(0, 32), 19);
  const parts: [number, number, boolean][] = [[d.alloc(51, req), 51, false]];
  if (o.out) parts.push([d.alloc(o.out.length, o.out), o.out.length, false]);
  const resp = d.alloc(RESP);
  parts.push([resp, RESP, true]);
  const dataIn = o.inLen ? d.alloc(o.inLen) : 0;
  if (o.inLen) parts.push([dataIn, o.inLen, true]);
  return { head: d.post(REQUESTQ, parts), resp, dataIn };
}

interface Completed {
  used: Used;
  response: number;
  status: number;
  resid: number;
  sense: ReturnType<typeof decodeSense>;
  data: Buffer;
}

function completed(d: MiniDriver, p: Posted, used: Used | undefined, inLen = 0): Completed {
  assert.ok(used, 'command completed');
  assert.equal(used.id, p.head, 'used id is the chain head');
  const header = VirtioScsiCmdRespHeader.decode(d.bytes.subarray(p.resp, p.resp + 12));
  return {
    used,
    response: header.response,
    status: header.status,
    resid: header.resid,
    sense: header.senseLen
      ? decodeSense(d.bytes.subarray(p.resp + 12, p.resp + 12 + header.senseLen))
      : undefined,
    data: Buffer.from(d.bytes.subarray(p.dataIn, p.dataIn + inLen - header.resid)),
  };
}

async function command(
  d: MiniDriver,
  cdb: Uint8Array,
  o: { tag?: bigint; out?: Buffer; inLen?: number } = {},
): Promise<Completed> {
  const p = postCommand(d, cdb, o);
  return completed(d, p, await d.nextUsed(REQUESTQ), o.inLen ?? 0);
}

function cdbOf(build: (out: Uint8Array, at: number) => number): Uint8Array {
  const out = new Uint8Array(32);
  build(out, 0);
  return out;
}

const readCdb = (lba: number, blocks: number): Uint8Array =>
  cdbOf((o, a) => buildReadWrite(o, a, false, lba, blocks, false));
const writeCdb = (lba: number, blocks: number): Uint8Array =>
  cdbOf((o, a) => buildReadWrite(o, a, true, lba, blocks, false));
const TUR = cdbOf(buildTestUnitReady);

/** Posts a TMF on the controlq (`bytes`: readable length, 24 unless cut short); returns its response byte. */
function postTmf(
  d: MiniDriver,
  subtype: number,
  tag = 0n,
  bytes = 24,
): { head: number; resp: number } {
  const req = Buffer.alloc(24);
  req.writeUInt32LE(0, 0);
  req.writeUInt32LE(subtype, 4);
  encodeVirtioLun(req, 8, TARGET, LUN);
  req.writeBigUInt64LE(tag, 16);
  const resp = d.alloc(1);
  const head = d.post(CONTROLQ, [
    [d.alloc(24, req), bytes, false],
    [resp, 1, true],
  ]);
  return { head, resp };
}

/** A TMF that must be answered; returns the response byte. */
async function tmf(d: MiniDriver, subtype: number, tag = 0n): Promise<number> {
  const { head, resp } = postTmf(d, subtype, tag);
  const used = await d.nextUsed(CONTROLQ);
  assert.ok(used, 'TMF answered');
  assert.deepEqual(used, { id: head, len: 1 });
  return d.bytes[resp]!;
}

/** AN_QUERY on the controlq: answered even when task management is ignored. */
async function anQuery(d: MiniDriver): Promise<void> {
  const an = Buffer.alloc(16);
  an.writeUInt32LE(1, 0);
  encodeVirtioLun(an, 4, TARGET, LUN);
  const resp = d.alloc(5);
  const head = d.post(CONTROLQ, [
    [d.alloc(16, an), 16, false],
    [resp, 5, true],
  ]);
  assert.deepEqual(await d.nextUsed(CONTROLQ), { id: head, len: 5 });
  assert.equal(d.bytes[resp + 4], VirtioScsiResponse.VIRTIO_SCSI_S_OK);
}

type Tmf = Pick<ServerStats, 'tmfAbortTask' | 'tmfAbortMatched' | 'tmfLunReset' | 'tmfOther'>;
const tmfStats = (s: ServerStats): Tmf => ({
  tmfAbortTask: s.tmfAbortTask,
  tmfAbortMatched: s.tmfAbortMatched,
  tmfLunReset: s.tmfLunReset,
  tmfOther: s.tmfOther,
});

interface Watched {
  server: BlockServer;
  /** 'error' and 'protocol-error' events, and disconnects that carried an error. */
  problems: string[];
}

async function server(faults: BlockServerOptions['faults']): Promise<Watched> {
  const s = createBlockServer({
    type: 'scsi',
    socketPath: join(dir, `s${serial++}.sock`),
    size: DISK,
    target: TARGET,
    lun: LUN,
    faults,
  });
  const problems: string[] = [];
  s.on('error', (err: Error) => problems.push(`error ${err.message}`));
  s.on('protocol-error', (err: Error) => problems.push(`protocol-error ${err.message}`));
  s.on('disconnect', (err?: Error) => {
    if (err) problems.push(`disconnect ${err.message}`);
  });
  await s.listen();
  return { server: s, problems };
}

async function withDriver(
  faults: BlockServerOptions['faults'],
  body: (d: MiniDriver, s: BlockServer) => Promise<void>,
): Promise<void> {
  const { server: s, problems } = await server(faults);
  let d: MiniDriver | undefined;
  try {
    d = await MiniDriver.open(s.socketPath!);
    await body(d, s);
  } finally {
    d?.close();
    await s.close();
  }
  assert.deepEqual(problems, []);
}

test('ABORT TASK on a held command: ABORTED, FUNCTION COMPLETE, counted as matched', async () => {
  await withDriver({ delayCompletionsMs: 20_000 }, async (d, s) => {
    assert.deepEqual(tmfStats(s.stats), {
      tmfAbortTask: 0,
      tmfAbortMatched: 0,
      tmfLunReset: 0,
      tmfOther: 0,
    });
    const a = postCommand(d, readCdb(0, 1), { tag: 77n, inLen: BS });
    postCommand(d, readCdb(1, 1), { tag: 78n, inLen: BS });
    assert.equal(await d.nextUsed(REQUESTQ, 100), undefined, 'held by the fault');
    assert.equal(await tmf(d, ABORT_TASK, 77n), VIRTIO_SCSI_S_FUNCTION_COMPLETE);
    const aborted = completed(d, a, await d.nextUsed(REQUESTQ, 100), BS);
    assert.equal(aborted.response, VirtioScsiResponse.VIRTIO_SCSI_S_ABORTED);
    assert.equal(aborted.resid, BS);
    assert.equal(aborted.used.len, RESP);
    assert.deepEqual(tmfStats(s.stats), {
      tmfAbortTask: 1,
      tmfAbortMatched: 1,
      tmfLunReset: 0,
      tmfOther: 0,
    });
    assert.equal(await d.nextUsed(REQUESTQ, 50), undefined, 'tag 78 is still held');
    // A tag nobody holds: FUNCTION COMPLETE all the same, but not a match.
    assert.equal(await tmf(d, ABORT_TASK, 999n), VIRTIO_SCSI_S_FUNCTION_COMPLETE);
    assert.equal(
      await tmf(d, VirtioScsiTmf.VIRTIO_SCSI_T_TMF_QUERY_TASK, 78n),
      VirtioScsiResponse.VIRTIO_SCSI_S_FUNCTION_SUCCEEDED,
    );
    assert.deepEqual(tmfStats(s.stats), {
      tmfAbortTask: 2,
      tmfAbortMatched: 1,
      tmfLunReset: 0,
      tmfOther: 1,
    });
  });
});

test('rejectAbortTask: FUNCTION REJECTED, the command completes later normally; LUN RESET still works', async () => {
  await withDriver({ delayCompletionsMs: 400, rejectAbortTask: true }, async (d, s) => {
    const pattern = Buffer.alloc(BS);
    for (let i = 0; i < BS; i++) pattern[i] = (i * 7) & 0xff;
    assert.equal((await command(d, writeCdb(5, 1), { out: pattern })).status, ScsiStatus.GOOD);
    const start = Date.now();
    const r = postCommand(d, readCdb(5, 1), { tag: 5n, inLen: BS });
    assert.equal(await tmf(d, ABORT_TASK, 5n), REJECTED);
    assert.equal(await d.nextUsed(REQUESTQ, 50), undefined, 'still held');
    const done = completed(d, r, await d.nextUsed(REQUESTQ), BS);
    assert.ok(Date.now() - start >= 350, 'completed when its delay ran out');
    assert.equal(done.response, VirtioScsiResponse.VIRTIO_SCSI_S_OK);
    assert.equal(done.status, ScsiStatus.GOOD);
    assert.deepEqual(done.data, pattern);
    assert.deepEqual(tmfStats(s.stats), {
      tmfAbortTask: 1,
      tmfAbortMatched: 0,
      tmfLunReset: 0,
      tmfOther: 0,
    });
    // LOGICAL UNIT RESET is not affected by the fault.
    const held = postCommand(d, readCdb(6, 1), { tag: 6n, inLen: BS });
    assert.equal(await tmf(d, LUN_RESET), VIRTIO_SCSI_S_FUNCTION_COMPLETE);
    const reset = completed(d, held, await d.nextUsed(REQUESTQ, 100), BS);
    assert.equal(reset.response, VirtioScsiResponse.VIRTIO_SCSI_S_RESET);
    const ua = await command(d, TUR);
    assert.equal(ua.status, ScsiStatus.CHECK_CONDITION);
    assert.deepEqual(
      [ua.sense?.senseKey, ua.sense?.asc, ua.sense?.ascq],
      [SenseKey.UNIT_ATTENTION, 0x29, 0],
    );
    assert.equal((await command(d, TUR)).status, ScsiStatus.GOOD);
    assert.equal(tmfStats(s.stats).tmfLunReset, 1);
  });
});

test('LOGICAL UNIT RESET: held commands complete RESET, the next command gets UNIT ATTENTION once', async () => {
  await withDriver({ delayCompletionsMs: 300 }, async (d, s) => {
    const a = postCommand(d, readCdb(0, 1), { tag: 1n, inLen: BS });
    const b = postCommand(d, writeCdb(1, 1), { tag: 2n, out: Buffer.alloc(BS, 9) });
    assert.equal(await tmf(d, LUN_RESET), VIRTIO_SCSI_S_FUNCTION_COMPLETE);
    const ra = completed(d, a, await d.nextUsed(REQUESTQ, 100), BS);
    const rb = completed(d, b, await d.nextUsed(REQUESTQ, 100));
    for (const r of [ra, rb]) {
      assert.equal(r.response, VirtioScsiResponse.VIRTIO_SCSI_S_RESET);
      assert.equal(r.used.len, RESP);
    }
    assert.equal(ra.resid, BS);
    assert.equal(rb.resid, BS);
    const ua = await command(d, TUR);
    assert.equal(ua.response, VirtioScsiResponse.VIRTIO_SCSI_S_OK);
    assert.equal(ua.status, ScsiStatus.CHECK_CONDITION);
    assert.deepEqual(
      [ua.sense?.senseKey, ua.sense?.asc, ua.sense?.ascq],
      [SenseKey.UNIT_ATTENTION, 0x29, 0],
    );
    assert.equal((await command(d, TUR)).status, ScsiStatus.GOOD, 'reported once');
    assert.deepEqual(tmfStats(s.stats), {
      tmfAbortTask: 0,
      tmfAbortMatched: 0,
      tmfLunReset: 1,
      tmfOther: 0,
    });
  });
});

test('ignoreTaskManagement: no answer, nothing aborted; GET_VRING_BASE, reconnect and disconnect still work', async () => {
  const { server: s, problems } = await server({
    delayCompletionsMs: 20_000,
    ignoreTaskManagement: true,
  });
  let d: MiniDriver | undefined;
  try {
    d = await MiniDriver.open(s.socketPath!);
    const held = postCommand(d, readCdb(0, 1), { tag: 9n, inLen: BS });
    postTmf(d, ABORT_TASK, 9n);
    postTmf(d, LUN_RESET);
    postTmf(d, ABORT_TASK, 9n, 10); // cut short: not answered either
    assert.equal(await d.nextUsed(CONTROLQ, 300), undefined, 'no TMF answered within 300 ms');
    assert.equal(await d.nextUsed(REQUESTQ, 10), undefined, 'the command was not aborted');
    // Asynchronous-notification requests are still answered.
    await anQuery(d);
    assert.deepEqual(tmfStats(s.stats), {
      tmfAbortTask: 1,
      tmfAbortMatched: 0,
      tmfLunReset: 1,
      tmfOther: 0,
    });
    // The controlq stops: its base counts the unanswered TMFs; the held command is delivered.
    assert.equal(await d.stopRing(CONTROLQ), 4);
    const done = completed(d, held, await d.nextUsed(REQUESTQ, 500), BS);
    assert.equal(done.response, VirtioScsiResponse.VIRTIO_SCSI_S_OK);
    assert.equal(done.status, ScsiStatus.GOOD);
    // The ignored LUN RESET armed no UNIT ATTENTION.
    const tur = postCommand(d, TUR, { tag: 10n });
    assert.equal(await d.stopRing(REQUESTQ), 2);
    assert.equal(completed(d, tur, await d.nextUsed(REQUESTQ, 500)).status, ScsiStatus.GOOD);
    await d.startRing(REQUESTQ, 2);
    // Restarted at that base, the controlq serves again, and still ignores TMFs.
    await d.startRing(CONTROLQ, 4);
    await anQuery(d);
    postTmf(d, VirtioScsiTmf.VIRTIO_SCSI_T_TMF_I_T_NEXUS_RESET);
    assert.equal(await d.nextUsed(CONTROLQ, 300), undefined);
    assert.equal(tmfStats(s.stats).tmfOther, 1);
    // Disconnect with a TMF unanswered and a command held.
    postCommand(d, readCdb(2, 1), { tag: 11n, inLen: BS });
    postTmf(d, ABORT_TASK, 11n);
    assert.equal(await d.nextUsed(CONTROLQ, 100), undefined);
    const gone = once(s, 'disconnect');
    d.close();
    await gone;
    // A new connection is served.
    d = await MiniDriver.open(s.socketPath!);
    await anQuery(d);
    postTmf(d, ABORT_TASK, 1n);
    assert.equal(await d.nextUsed(CONTROLQ, 300), undefined);
    assert.deepEqual(tmfStats(s.stats), {
      tmfAbortTask: 3,
      tmfAbortMatched: 0,
      tmfLunReset: 1,
      tmfOther: 1,
    });
    assert.equal(s.stats.connections, 2);
  } finally {
    d?.close();
    await s.close();
  }
  assert.deepEqual(problems, []);
});

test('the tmf counters reach the STATS line of a child backend (SIGUSR2)', async () => {
  const backend = await startEmbedded({
    type: 'scsi',
    target: TARGET,
    lun: LUN,
    size: DISK,
    faults: { delayCompletionsMs: 20_000, rejectAbortTask: true },
  });
  let d: MiniDriver | undefined;
  try {
    d = await MiniDriver.open(backend.socketPath);
    const held = postCommand(d, readCdb(0, 1), { tag: 3n, inLen: BS });
    assert.equal(await tmf(d, ABORT_TASK, 3n), REJECTED);
    assert.equal(await tmf(d, LUN_RESET), VIRTIO_SCSI_S_FUNCTION_COMPLETE);
    const reset = completed(d, held, await d.nextUsed(REQUESTQ, 500), BS);
    assert.equal(reset.response, VirtioScsiResponse.VIRTIO_SCSI_S_RESET);
    assert.equal(
      await tmf(d, VirtioScsiTmf.VIRTIO_SCSI_T_TMF_I_T_NEXUS_RESET),
      VIRTIO_SCSI_S_FUNCTION_COMPLETE,
    );
    const stats = await backend.stats();
    assert.deepEqual(tmfStats(stats), {
      tmfAbortTask: 1,
      tmfAbortMatched: 0,
      tmfLunReset: 1,
      tmfOther: 1,
    });
    assert.equal(stats.requests, 1);
  } finally {
    d?.close();
    const last = await backend.stop();
    assert.equal(last?.tmfLunReset, 1, 'the final STATS line too');
  }
  assert.deepEqual(
    backend.events.filter((e) => e !== 'connection' && e !== 'disconnect'),
    [],
    backend.stderr(),
  );
});

test('options: rejectAbortTask and ignoreTaskManagement are scsi-only booleans', () => {
  const base = { socketPath: join(dir, 'x.sock'), size: DISK };
  const bad: [Partial<BlockServerOptions>, RegExp][] = [
    [{ faults: { rejectAbortTask: true } }, /faults.rejectAbortTask needs type 'scsi'/],
    [{ faults: { ignoreTaskManagement: false } }, /faults.ignoreTaskManagement needs type 'scsi'/],
    [
      { type: 'scsi', faults: { rejectAbortTask: 1 as unknown as boolean } },
      /faults.rejectAbortTask must be a boolean/,
    ],
    [
      { type: 'scsi', faults: { ignoreTaskManagement: 'yes' as unknown as boolean } },
      /faults.ignoreTaskManagement must be a boolean/,
    ],
  ];
  for (const [extra, message] of bad) {
    assert.throws(
      () => createBlockServer({ ...base, ...extra }),
      { code: 'VHOST_USER_ERR_INVALID_ARGUMENT', message },
      JSON.stringify(extra),
    );
  }
  assert.doesNotThrow(() =>
    createBlockServer({
      ...base,
      type: 'scsi',
      faults: { rejectAbortTask: true, ignoreTaskManagement: false },
    }),
  );
  // A blk server's stats carry the counters too (at zero).
  assert.deepEqual(tmfStats(createBlockServer(base).stats), {
    tmfAbortTask: 0,
    tmfAbortMatched: 0,
    tmfLunReset: 0,
    tmfOther: 0,
  });
});
