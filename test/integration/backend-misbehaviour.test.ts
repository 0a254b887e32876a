/**
 * A buggy or hostile backend: values it controls that the frontend must turn into a typed error,
 * never into silent wrong data, a hang or a throw from deep inside. Peers: the scripted backend
 * (handshake replies by hand) and the embedded backend in a child process, whose completions
 * test/helpers/backend-child.ts can make lie (`tamper`).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  openBlockDevice,
  ProtocolError,
  ShortTransferError,
  type CompletionMode,
} from '../../src/index.js';
import { COMPLETION_MODES } from '../../src/completion/index.js';
import { VhostUserRequest } from '../../src/protocol/messages.js';
import { startEmbedded } from '../helpers/embedded-backend.js';
import {
  blkConfig,
  reply,
  startScriptedBackend,
  type ScriptedReply,
} from '../helpers/scripted-backend.js';
import { within } from '../helpers/within.js';

const R = VhostUserRequest;

function u64(value: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(value);
  return b;
}

/** Opens against the scripted backend with `override`; returns the error open failed with. */
async function openError(
  override: (request: number, payload: Buffer) => ScriptedReply,
): Promise<unknown> {
  const backend = await startScriptedBackend(override);
  try {
    const dev = await within(
      openBlockDevice(backend.socketPath, { timeout: 500 }),
      5000,
      'openBlockDevice',
    );
    await dev.close();
    return undefined;
  } catch (err) {
    return err;
  } finally {
    await backend.stop();
  }
}

// ---- negotiation ----

test('GET_QUEUE_NUM 0 is a ProtocolError (the backend is broken), not an InvalidArgumentError', async () => {
  const error = await openError((request) => {
    if (request === R.VHOST_USER_GET_PROTOCOL_FEATURES) {
      // REPLY_ACK | CONFIG | MQ
      return { kind: 'raw', bytes: reply(request, u64((1n << 3n) | (1n << 9n) | 1n)) };
    }
    if (request === R.VHOST_USER_GET_QUEUE_NUM) {
      return { kind: 'raw', bytes: reply(request, u64(0n)) };
    }
    return { kind: 'default' };
  });
  assert.ok(error instanceof ProtocolError, String(error));
  assert.equal(error.request, 'VHOST_USER_GET_QUEUE_NUM');
});

test('a capacity that is not a whole number of blocks: the device size is rounded down to whole blocks', async () => {
  const backend = await startScriptedBackend((request, payload) => {
    if (request !== R.VHOST_USER_GET_CONFIG) return { kind: 'default' };
    const out = Buffer.alloc(payload.length);
    payload.copy(out, 0, 0, 12);
    // 9 sectors of 512 bytes = one 4096-byte block and 512 bytes no block I/O can reach.
    Buffer.from(blkConfig({ capacitySectors: 9n, blkSize: 4096 })).copy(out, 12);
    return { kind: 'raw', bytes: reply(request, out) };
  });
  try {
    const dev = await within(openBlockDevice(backend.socketPath, { timeout: 500 }), 5000, 'open');
    try {
      assert.equal(dev.blockSize, 4096);
      assert.equal(dev.size, 4096);
      await assert.rejects(dev.read(4096, 512), { code: 'VHOST_USER_ERR_OUT_OF_RANGE' });
    } finally {
      await dev.close();
    }
  } finally {
    await backend.stop();
  }
});

test('a message sent unasked with the last handshake reply fails open with ProtocolError', async () => {
  // With REPLY_ACK the handshake ends on SET_VRING_ENABLE's ack: a message behind it in the same
  // write used to wait unread, and the device opened as if nothing had happened.
  const error = await openError((request) =>
    request === R.VHOST_USER_SET_VRING_ENABLE
      ? {
          kind: 'raw',
          bytes: Buffer.concat([
            reply(request, u64(0n)),
            reply(R.VHOST_USER_GET_FEATURES, u64(0n)),
          ]),
        }
      : { kind: 'default' },
  );
  assert.ok(error instanceof ProtocolError, String(error));
  assert.match(error.message, /unsolicited/);
});

// ---- completions ----

const BLOCK = 4096;

for (const completion of COMPLETION_MODES as readonly CompletionMode[]) {
  test(`${completion}: a read completed OK whose used len covers only the status byte is a ShortTransferError, not stale data`, async () => {
    const backend = await startEmbedded({
      size: 1024 * 1024,
      tamper: { readsWriteNothing: true },
    });
    try {
      const dev = await openBlockDevice(backend.socketPath, { completion, requestTimeout: 3000 });
      try {
        await dev.write(Buffer.alloc(BLOCK, 0x5a), 0);
        const error = await within(
          dev.read(0, BLOCK).then(
            (data) => new Error(`read resolved with ${data.subarray(0, 4).toString('hex')}...`),
            (err: unknown) => err,
          ),
          5000,
          'read',
        );
        assert.ok(error instanceof ShortTransferError, String(error));
        assert.equal(error.expected, BLOCK);
        // len 1 is taken as one data byte at most (a device may leave the status byte out).
        assert.equal(error.residual, BLOCK - 1);
      } finally {
        await dev.close();
      }
    } finally {
      await backend.stop();
    }
  });
}

test('a read whose used len leaves the status byte out (data only) reads back right, async and sync', async () => {
  const backend = await startEmbedded({ size: 1024 * 1024, tamper: { lenWithoutStatus: true } });
  try {
    const dev = await openBlockDevice(backend.socketPath, { requestTimeout: 3000 });
    try {
      const data = Buffer.alloc(2 * BLOCK);
      for (let i = 0; i < data.length; i++) data[i] = (i * 7 + 3) & 0xff;
      await dev.write(data, 0);
      assert.deepEqual(await dev.read(0, 2 * BLOCK), data);
      const into = Buffer.alloc(BLOCK);
      assert.equal(dev.readSync(into, BLOCK, { timeout: 3000 }), BLOCK);
      assert.deepEqual(into, data.subarray(BLOCK));
      // Unaligned: a read-modify-write's edge reads go the same way.
      await dev.write(Buffer.from('hello'), 4093);
      assert.equal((await dev.read(4093, 5)).toString(), 'hello');
    } finally {
      await dev.close();
    }
  } finally {
    await backend.stop();
  }
});

test('readSync: a read completed OK with used len 1 throws ShortTransferError; the caller buffer is untouched', async () => {
  const backend = await startEmbedded({ size: 1024 * 1024, tamper: { readsWriteNothing: true } });
  try {
    const dev = await openBlockDevice(backend.socketPath);
    try {
      const into = Buffer.alloc(BLOCK, 0x11);
      assert.throws(() => dev.readSync(into, 0, { timeout: 3000 }), ShortTransferError);
      assert.ok(
        into.every((b) => b === 0x11),
        'stale data reached the caller',
      );
    } finally {
      await dev.close();
    }
  } finally {
    await backend.stop();
  }
});
