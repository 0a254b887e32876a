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
  VHOST_USER_VERSION,
  VhostUserRequest,
  encodeMemoryTable,
  encodeMessage,
} from '../../src/protocol/messages.js';
import type { BlockServer } from '../../src/backend/index.js';
import { withServer } from '../helpers/in-process-server.js';
import { within } from '../helpers/within.js';

const V = VHOST_USER_VERSION;

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
