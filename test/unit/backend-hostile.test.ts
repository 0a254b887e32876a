/**
 * The embedded backend against a hostile or unusual frontend, driven over a raw socket: whatever
 * the peer sends, the server neither crashes nor leaks, and a legitimate but unusual request is
 * served.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readlinkSync } from 'node:fs';
import { native } from '../../src/native.js';
import {
  U64,
  VHOST_USER_VERSION,
  VhostUserRequest,
  encodeMemoryTable,
  encodeMessage,
  encodeVringFd,
  VhostUserVringAddr,
  VhostUserVringState,
} from '../../src/protocol/messages.js';
import {
  splitRingLayout,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from '../../src/virtqueue/layout.js';
import { VirtioBlkType } from '../../src/devices/blk/spec.js';
import type { BlockServer } from '../../src/backend/index.js';
import { withServer } from '../helpers/in-process-server.js';
import { within } from '../helpers/within.js';
import { RawFrontend } from '../helpers/raw-frontend.js';

const V = VHOST_USER_VERSION;

/** A raw frontend on the server's socket. */
class Peer extends RawFrontend {
  /** Takes every feature offered, REPLY_ACK included. */
  async negotiate(): Promise<void> {
    const features = U64.decode(await this.ask('VHOST_USER_GET_FEATURES')).value;
    const protocol = U64.decode(await this.ask('VHOST_USER_GET_PROTOCOL_FEATURES')).value;
    this.tell('VHOST_USER_SET_PROTOCOL_FEATURES', U64.encode({ value: protocol }));
    this.tell('VHOST_USER_SET_FEATURES', U64.encode({ value: features }));
    this.tell('VHOST_USER_SET_OWNER');
  }
}

/** The fds of this process whose target contains `name` (memfds show as /memfd:name). */
function openFdsNamed(name: string): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${entry}`).includes(name)) out.push(Number(entry));
    } catch {
      // Closed while listing (the readdir fd itself).
    }
  }
  return out;
}

async function until(what: string, ms: number, done: () => boolean): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

function disconnected(server: BlockServer): Promise<void> {
  return new Promise((resolve) => server.once('disconnect', () => resolve()));
}

test('fds of a message cut short by a disconnect are closed, not kept by the server', async () => {
  await withServer({ size: 1 << 20 }, async (socketPath, server) => {
    const name = `hostile-partial-${process.pid}`;
    const memfd = native.memfdCreate(name, 0);
    native.ftruncate(memfd, 1 << 20);
    const sock = native.unixConnect(socketPath);
    const gone = disconnected(server);
    try {
      // SET_MEM_TABLE with its fd, but only the first 8 of its 40 payload bytes.
      const whole = encodeMessage(
        VhostUserRequest.VHOST_USER_SET_MEM_TABLE,
        V,
        encodeMemoryTable([
          { guestPhysAddr: 0n, memorySize: 1n << 20n, userspaceAddr: 0n, mmapOffset: 0n },
        ]),
      );
      native.sendmsg(sock, whole.subarray(0, 12 + 8), [memfd]);
      native.close(memfd);
      await until('the server received the fd', 2000, () => openFdsNamed(name).length === 1);
    } finally {
      native.close(sock);
    }
    await within(gone, 2000, 'disconnect');
    assert.deepEqual(openFdsNamed(name), [], 'the memfd of the unfinished message is closed');
  });
});

const GPA = 0x1_0000_0000;
const UVA = 0x7e00_0000_0000;

/**
 * The frontend's memory: one sealed, sparse memfd region of `size` bytes, and our own view of
 * the `window` bytes from `at` (where the test puts its ring and buffers).
 */
class Guest {
  readonly fd: number;
  readonly size: number;
  readonly at: number;
  readonly view: DataView;
  readonly buffer: SharedArrayBuffer;
  readonly #handle;

  constructor(size: number, at = 0, window = Math.min(size - at, 1 << 20)) {
    this.size = size;
    this.at = at;
    this.fd = native.memfdCreate('hostile-guest', 0);
    native.ftruncate(this.fd, size); // sparse: only the pages touched are allocated
    native.memfdSeal(this.fd);
    const { handle, buffer } = native.mmap(this.fd, window, at, 'shared');
    this.#handle = handle;
    this.buffer = buffer as SharedArrayBuffer;
    this.view = new DataView(buffer);
  }

  get table(): Uint8Array {
    return encodeMemoryTable([
      {
        guestPhysAddr: BigInt(GPA),
        memorySize: BigInt(this.size),
        userspaceAddr: BigInt(UVA),
        mmapOffset: 0n,
      },
    ]);
  }

  /** The guest-physical address of window offset `off`. */
  gpa(off: number): number {
    return GPA + this.at + off;
  }

  close(): void {
    native.munmap(this.#handle);
    native.close(this.fd);
  }
}

/** A started, enabled split ring at window offset 0 of `guest`. */
class Ring {
  readonly layout;
  readonly kick = native.eventfd();
  readonly #guest: Guest;
  #availIdx = 0;

  private constructor(
    guest: Guest,
    readonly size: number,
  ) {
    this.#guest = guest;
    this.layout = splitRingLayout(size, 0);
  }

  /** Sends the table, then SET_VRING_NUM / ADDR / BASE / KICK / ENABLE for ring `index`. */
  static async start(peer: Peer, guest: Guest, index: number, size: number): Promise<Ring> {
    const ring = new Ring(guest, size);
    const { layout } = ring;
    const uva = UVA + guest.at;
    const state = (num: number): Uint8Array => VhostUserVringState.encode({ index, num });
    assert.equal(await peer.acked('VHOST_USER_SET_MEM_TABLE', guest.table, [guest.fd]), 0n);
    assert.equal(await peer.acked('VHOST_USER_SET_VRING_NUM', state(size)), 0n);
    const addr = VhostUserVringAddr.encode({
      index,
      flags: 0,
      descriptor: BigInt(uva + layout.descOffset),
      available: BigInt(uva + layout.availOffset),
      used: BigInt(uva + layout.usedOffset),
      log: 0n,
    });
    assert.equal(await peer.acked('VHOST_USER_SET_VRING_ADDR', addr), 0n);
    assert.equal(await peer.acked('VHOST_USER_SET_VRING_BASE', state(0)), 0n);
    const kickFd = encodeVringFd(index, true);
    assert.equal(await peer.acked('VHOST_USER_SET_VRING_KICK', kickFd, [ring.kick]), 0n);
    assert.equal(await peer.acked('VHOST_USER_SET_VRING_ENABLE', state(1)), 0n);
    return ring;
  }

  /** Writes descriptor `i`: a buffer at window offset `off`. */
  desc(i: number, off: number, len: number, flags: number, next = 0): void {
    const view = this.#guest.view;
    const d = this.layout.descOffset + 16 * i;
    view.setBigUint64(d, BigInt(this.#guest.gpa(off)), true);
    view.setUint32(d + 8, len, true);
    view.setUint16(d + 12, flags, true);
    view.setUint16(d + 14, next, true);
  }

  /** Puts `head` on the avail ring and kicks. */
  publish(head: number): void {
    const view = this.#guest.view;
    const avail = this.layout.availOffset;
    view.setUint16(avail + 4 + 2 * (this.#availIdx % this.size), head, true);
    this.#availIdx = (this.#availIdx + 1) & 0xffff;
    view.setUint16(avail + 2, this.#availIdx, true);
    native.eventfdWrite(this.kick);
  }

  get usedIdx(): number {
    return this.#guest.view.getUint16(this.layout.usedOffset + 2, true);
  }

  usedElem(i: number): { id: number; len: number } {
    const at = this.layout.usedOffset + 4 + 8 * (i % this.size);
    return {
      id: this.#guest.view.getUint32(at, true),
      len: this.#guest.view.getUint32(at + 4, true),
    };
  }

  close(): void {
    native.close(this.kick);
  }
}

test('a memory region larger than 4 GiB is mapped and served (rings and buffers beyond 4 GiB)', async () => {
  await withServer({ size: 1 << 20 }, async (socketPath) => {
    // The ring and the request live in the last MiB, beyond 4 GiB.
    const guest = new Guest(2 ** 32 + (1 << 20), 2 ** 32);
    const peer = new Peer(socketPath);
    let ring: Ring | undefined;
    try {
      await peer.negotiate();
      ring = await Ring.start(peer, guest, 0, 8);
      // GET_ID: header, 20 bytes of id, status.
      const [HDR, DATA, STATUS] = [0x8000, 0x9000, 0xa000];
      guest.view.setUint32(HDR, VirtioBlkType.VIRTIO_BLK_T_GET_ID, true);
      guest.view.setUint8(STATUS, 0xff);
      ring.desc(0, HDR, 16, VIRTQ_DESC_F_NEXT, 1);
      ring.desc(1, DATA, 20, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2);
      ring.desc(2, STATUS, 1, VIRTQ_DESC_F_WRITE);
      ring.publish(0);
      const r = ring;
      await until('GET_ID completed', 2000, () => r.usedIdx === 1);
      assert.equal(guest.view.getUint8(STATUS), 0, 'VIRTIO_BLK_S_OK');
      assert.equal(Buffer.from(guest.buffer, DATA, 19).toString(), 'vhost-user-embedded');
    } finally {
      peer.close();
      ring?.close();
      guest.close();
    }
  });
});

/** virtio_scsi_cmd_req for target 0 LUN 0 with `cdb`, at window offset `off`. */
function scsiRequest(guest: Guest, off: number, cdb: number[]): void {
  const req = new Uint8Array(guest.buffer, off, 51);
  req.fill(0);
  req.set([1, 0, 0x40, 0], 0);
  req.set(cdb, 19);
}

test('virtio-scsi: a data-in area over 4 GiB gets a response (resid saturates), not a dropped connection', async () => {
  await withServer({ size: 1 << 20, type: 'scsi', segMax: 2048 }, async (socketPath, server) => {
    const guest = new Guest(16 << 20, 0, 16 << 20);
    const peer = new Peer(socketPath);
    const errors: Error[] = [];
    server.on('error', (err: Error) => errors.push(err));
    server.on('disconnect', (err?: Error) => errors.push(err ?? new Error('disconnected')));
    let ring: Ring | undefined;
    try {
      await peer.negotiate();
      const size = 1024;
      ring = await Ring.start(peer, guest, 2, size);
      const [REQ, DATA, CHUNK] = [0x10000, 8 << 20, 8 << 20];
      const RESP_HEADER = 12;
      const respAt = DATA;
      // Request 1: INQUIRY with 1023 writable descriptors of 8 MiB each (about 8 GiB, all over
      // the same memory): valid, if odd.
      scsiRequest(guest, REQ, [0x12, 0, 0, 0, 96, 0]);
      ring.desc(0, REQ, 51, VIRTQ_DESC_F_NEXT, 1);
      for (let i = 1; i < size; i++) {
        const more = i < size - 1 ? VIRTQ_DESC_F_NEXT : 0;
        ring.desc(i, DATA, CHUNK, VIRTQ_DESC_F_WRITE | more, i + 1);
      }
      guest.view.setUint8(respAt + 11, 0xff);
      ring.publish(0);
      const r = ring;
      await until('INQUIRY answered', 5000, () => r.usedIdx === 1 || errors.length > 0);
      assert.deepEqual(errors, []);
      assert.equal(guest.view.getUint8(respAt + 11), 0, 'VIRTIO_SCSI_S_OK');
      assert.equal(guest.view.getUint8(respAt + 10), 0, 'GOOD');
      assert.equal(guest.view.getUint32(respAt + 4, true), 0xffff_ffff, 'resid saturates');
      // Request 2: the same with a readable descriptor among the writable ones: FAILURE.
      ring.desc(2, REQ, 51, VIRTQ_DESC_F_NEXT, 3);
      guest.view.setUint8(respAt + 11, 0xff);
      ring.publish(0);
      await until('bad chain answered', 5000, () => r.usedIdx === 2 || errors.length > 0);
      assert.deepEqual(errors, []);
      assert.equal(guest.view.getUint8(respAt + 11), 9, 'VIRTIO_SCSI_S_FAILURE');
      assert.equal(guest.view.getUint32(respAt + 4, true), 0xffff_ffff);
      assert.equal(ring.usedElem(1).len, RESP_HEADER + 96, 'header and sense area only');
      assert.equal((await peer.ask('VHOST_USER_GET_QUEUE_NUM')).length, 8, 'still connected');
    } finally {
      peer.close();
      ring?.close();
      guest.close();
    }
  });
});

test('a buffer that runs from one memory region into the next (adjacent guest addresses) is served', async () => {
  await withServer({ size: 1 << 20 }, async (socketPath) => {
    // Two memfds whose regions touch in guest-physical space: GPA .. +1 MiB, then +1 MiB .. +2 MiB.
    const low = new Guest(1 << 20);
    const high = new Guest(1 << 20);
    const peer = new Peer(socketPath);
    let ring: Ring | undefined;
    try {
      await peer.negotiate();
      ring = await Ring.start(peer, low, 0, 8);
      const table = encodeMemoryTable(
        [0, 1].map((i) => ({
          guestPhysAddr: BigInt(GPA + i * (1 << 20)),
          memorySize: 1n << 20n,
          userspaceAddr: BigInt(UVA + i * (1 << 20)),
          mmapOffset: 0n,
        })),
      );
      assert.equal(await peer.acked('VHOST_USER_SET_MEM_TABLE', table, [low.fd, high.fd]), 0n);
      const [HDR, STATUS, DATA] = [0x8000, 0x9000, 0xa000];
      const span = (1 << 20) - 1024; // 1 KiB in `low`, 1 KiB in `high`
      const pattern = Buffer.alloc(2048);
      for (let i = 0; i < pattern.length; i++) pattern[i] = (i * 7 + 3) & 0xff;
      new Uint8Array(low.buffer, span, 1024).set(pattern.subarray(0, 1024));
      new Uint8Array(high.buffer, 0, 1024).set(pattern.subarray(1024));
      const request = (type: number, data: number, flags: number): void => {
        low.view.setUint32(HDR, type, true);
        low.view.setBigUint64(HDR + 8, 8n, true); // sector 8
        low.view.setUint8(STATUS, 0xff);
        ring!.desc(0, HDR, 16, VIRTQ_DESC_F_NEXT, 1);
        ring!.desc(1, data, 2048, flags | VIRTQ_DESC_F_NEXT, 2);
        ring!.desc(2, STATUS, 1, VIRTQ_DESC_F_WRITE);
        ring!.publish(0);
      };
      // Write from the straddling buffer, read back into one inside `low`.
      request(VirtioBlkType.VIRTIO_BLK_T_OUT, span, 0);
      await until('write', 2000, () => ring!.usedIdx === 1);
      assert.equal(low.view.getUint8(STATUS), 0, 'write: VIRTIO_BLK_S_OK');
      request(VirtioBlkType.VIRTIO_BLK_T_IN, DATA, VIRTQ_DESC_F_WRITE);
      await until('read', 2000, () => ring!.usedIdx === 2);
      assert.equal(low.view.getUint8(STATUS), 0, 'read: VIRTIO_BLK_S_OK');
      assert.deepEqual(Buffer.from(low.buffer, DATA, 2048), pattern);
      // And the other way round: a read into the straddling buffer.
      new Uint8Array(low.buffer, span, 1024).fill(0);
      new Uint8Array(high.buffer, 0, 1024).fill(0);
      request(VirtioBlkType.VIRTIO_BLK_T_IN, span, VIRTQ_DESC_F_WRITE);
      await until('read across', 2000, () => ring!.usedIdx === 3);
      assert.equal(low.view.getUint8(STATUS), 0, 'read across: VIRTIO_BLK_S_OK');
      assert.equal(ring.usedElem(2).len, 2049);
      assert.deepEqual(
        Buffer.concat([Buffer.from(low.buffer, span, 1024), Buffer.from(high.buffer, 0, 1024)]),
        pattern,
      );
    } finally {
      peer.close();
      ring?.close();
      low.close();
      high.close();
    }
  });
});
