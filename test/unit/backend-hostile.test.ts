/**
 * The embedded backend against a hostile or unusual frontend, driven over a raw socket: whatever
 * the peer sends, the server neither crashes nor leaks, and a legitimate but unusual request is
 * served.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readlinkSync } from 'node:fs';
import { native } from '../../src/native.js';
import { SocketEndpoint } from '../../src/protocol/endpoint.js';
import {
  U64,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_REPLY_MASK,
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

const V = VHOST_USER_VERSION;
const ACK = V | VHOST_USER_NEED_REPLY_MASK;
type RequestName = keyof typeof VhostUserRequest;

/** A raw frontend on the server's socket. */
class Peer {
  readonly ep: SocketEndpoint;

  constructor(socketPath: string) {
    this.ep = SocketEndpoint.connect(socketPath);
  }

  tell(
    name: RequestName,
    payload: Uint8Array = new Uint8Array(0),
    flags = V,
    fds: number[] = [],
  ): void {
    this.ep.send(VhostUserRequest[name], flags, payload, fds);
  }

  async ask(
    name: RequestName,
    payload?: Uint8Array,
    flags = V,
    fds?: number[],
  ): Promise<Uint8Array> {
    this.tell(name, payload, flags, fds);
    const reply = await this.ep.receive(2000, name);
    assert.equal(reply.request, VhostUserRequest[name]);
    assert.equal(reply.flags, V | VHOST_USER_REPLY_MASK);
    return reply.payload;
  }

  /** Sends `name` asking for an ack; returns it (0 = done). */
  async acked(name: RequestName, payload?: Uint8Array, fds?: number[]): Promise<bigint> {
    return U64.decode(await this.ask(name, payload, ACK, fds)).value;
  }

  /** Takes every feature offered, REPLY_ACK included. */
  async negotiate(): Promise<void> {
    const features = U64.decode(await this.ask('VHOST_USER_GET_FEATURES')).value;
    const protocol = U64.decode(await this.ask('VHOST_USER_GET_PROTOCOL_FEATURES')).value;
    this.tell('VHOST_USER_SET_PROTOCOL_FEATURES', U64.encode({ value: protocol }));
    this.tell('VHOST_USER_SET_FEATURES', U64.encode({ value: features }));
    this.tell('VHOST_USER_SET_OWNER');
  }

  close(): void {
    this.ep.close();
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

/** GET_ID over vring 0 of size 8 whose rings and buffers lie `at` bytes into a region. */
const QSIZE = 8;
const LAYOUT = splitRingLayout(QSIZE, 0);

test('a memory region larger than 4 GiB is mapped and served (rings and buffers beyond 4 GiB)', async () => {
  await withServer({ size: 1 << 20 }, async (socketPath) => {
    const regionSize = 2 ** 32 + (1 << 20);
    const at = 2 ** 32; // the ring and the request live in the last MiB
    const gpa = 0x1_0000_0000;
    const uva = 0x7e00_0000_0000;
    const fd = native.memfdCreate('hostile-big-region', 0);
    native.ftruncate(fd, regionSize); // sparse: only the pages touched are allocated
    native.memfdSeal(fd);
    // Our own view of the last MiB (the frontend's side).
    const { handle, buffer } = native.mmap(fd, 1 << 20, at, 'shared');
    const view = new DataView(buffer);
    const peer = new Peer(socketPath);
    const kick = native.eventfd();
    try {
      await peer.negotiate();
      const table = encodeMemoryTable([
        {
          guestPhysAddr: BigInt(gpa),
          memorySize: BigInt(regionSize),
          userspaceAddr: BigInt(uva),
          mmapOffset: 0n,
        },
      ]);
      assert.equal(await peer.acked('VHOST_USER_SET_MEM_TABLE', table, [fd]), 0n, 'table taken');
      const state = (num: number): Uint8Array => VhostUserVringState.encode({ index: 0, num });
      assert.equal(await peer.acked('VHOST_USER_SET_VRING_NUM', state(QSIZE)), 0n);
      const addr = VhostUserVringAddr.encode({
        index: 0,
        flags: 0,
        descriptor: BigInt(uva + at + LAYOUT.descOffset),
        available: BigInt(uva + at + LAYOUT.availOffset),
        used: BigInt(uva + at + LAYOUT.usedOffset),
        log: 0n,
      });
      assert.equal(await peer.acked('VHOST_USER_SET_VRING_ADDR', addr), 0n);
      assert.equal(await peer.acked('VHOST_USER_SET_VRING_BASE', state(0)), 0n);
      assert.equal(
        await peer.acked('VHOST_USER_SET_VRING_KICK', encodeVringFd(0, true), [kick]),
        0n,
      );
      assert.equal(await peer.acked('VHOST_USER_SET_VRING_ENABLE', state(1)), 0n);
      // GET_ID: header, 20 bytes of id, status.
      const HDR = 0x8000;
      const DATA = 0x9000;
      const STATUS = 0xa000;
      view.setUint32(HDR, VirtioBlkType.VIRTIO_BLK_T_GET_ID, true);
      view.setUint8(STATUS, 0xff);
      const desc = (i: number, off: number, len: number, flags: number, next: number): void => {
        const d = LAYOUT.descOffset + 16 * i;
        view.setBigUint64(d, BigInt(gpa + at + off), true);
        view.setUint32(d + 8, len, true);
        view.setUint16(d + 12, flags, true);
        view.setUint16(d + 14, next, true);
      };
      desc(0, HDR, 16, VIRTQ_DESC_F_NEXT, 1);
      desc(1, DATA, 20, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2);
      desc(2, STATUS, 1, VIRTQ_DESC_F_WRITE, 0);
      view.setUint16(LAYOUT.availOffset + 4, 0, true);
      view.setUint16(LAYOUT.availOffset + 2, 1, true);
      native.eventfdWrite(kick);
      await until(
        'GET_ID completed',
        2000,
        () => view.getUint16(LAYOUT.usedOffset + 2, true) === 1,
      );
      assert.equal(view.getUint8(STATUS), 0, 'VIRTIO_BLK_S_OK');
      assert.equal(Buffer.from(buffer, DATA, 19).toString(), 'vhost-user-embedded');
    } finally {
      peer.close();
      native.close(kick);
      native.munmap(handle);
      native.close(fd);
    }
  });
});
