import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  openBlockDevice,
  BackendRejectedError,
  DisconnectedError,
  ProtocolError,
  TimeoutError,
  UnsupportedError,
} from '../../src/index.js';
import { VhostUserRequest } from '../../src/protocol/messages.js';
import {
  blkConfig,
  reply,
  startScriptedBackend,
  type ScriptedReply,
} from '../helpers/scripted-backend.js';
import { openFds } from '../helpers/process-resources.js';

const R = VhostUserRequest;

async function openAgainst(
  override: (request: number, payload: Buffer) => ScriptedReply,
): Promise<{ error: unknown; received: string[]; leaked: number }> {
  const before = openFds();
  const backend = await startScriptedBackend(override);
  let error: unknown;
  try {
    const dev = await openBlockDevice(backend.socketPath, { timeout: 300 });
    await dev.close();
  } catch (err) {
    error = err;
  }
  await backend.stop();
  // Counted after the scripted backend (same process) closed its own sockets.
  const leaked = openFds() - before;
  return { error, received: backend.received, leaked };
}

test('the scripted backend is a working peer when it behaves', async () => {
  const { error, received } = await openAgainst(() => ({ kind: 'default' }));
  assert.equal(error, undefined);
  assert.ok(received.includes('VHOST_USER_SET_MEM_TABLE'));
  assert.equal(received.at(-1), 'VHOST_USER_GET_VRING_BASE');
});

const faults: {
  name: string;
  override: (request: number, payload: Buffer) => ScriptedReply;
  check: (error: unknown) => void;
}[] = [
  {
    name: 'a non-zero ack to SET_MEM_TABLE',
    override: (request) =>
      request === R.VHOST_USER_SET_MEM_TABLE
        ? { kind: 'raw', bytes: reply(request, Buffer.from([1, 0, 0, 0, 0, 0, 0, 0])) }
        : { kind: 'default' },
    check: (error) => {
      assert.ok(error instanceof BackendRejectedError);
      assert.equal(error.request, 'VHOST_USER_SET_MEM_TABLE');
    },
  },
  {
    name: 'a reply with the wrong request code',
    override: (request) =>
      request === R.VHOST_USER_GET_PROTOCOL_FEATURES
        ? { kind: 'raw', bytes: reply(R.VHOST_USER_GET_FEATURES, Buffer.alloc(8)) }
        : { kind: 'default' },
    check: (error) => {
      assert.ok(error instanceof ProtocolError);
      assert.equal(error.request, 'VHOST_USER_GET_PROTOCOL_FEATURES');
    },
  },
  {
    name: 'a reply without the REPLY flag',
    override: (request) =>
      request === R.VHOST_USER_GET_FEATURES
        ? { kind: 'raw', bytes: reply(request, Buffer.alloc(8), 1) }
        : { kind: 'default' },
    check: (error) => assert.ok(error instanceof ProtocolError),
  },
  {
    name: 'a GET_CONFIG reply of the wrong size',
    override: (request) =>
      request === R.VHOST_USER_GET_CONFIG
        ? { kind: 'raw', bytes: reply(request, Buffer.alloc(20)) }
        : { kind: 'default' },
    check: (error) => {
      assert.ok(error instanceof ProtocolError);
      assert.equal(error.request, 'VHOST_USER_GET_CONFIG');
    },
  },
  {
    name: 'a block size that is not a power of two',
    override: (request, payload) => {
      if (request !== R.VHOST_USER_GET_CONFIG) return { kind: 'default' };
      const out = Buffer.alloc(payload.length);
      payload.copy(out, 0, 0, 12);
      Buffer.from(blkConfig({ blkSize: 1000 })).copy(out, 12);
      return { kind: 'raw', bytes: reply(request, out) };
    },
    check: (error) => assert.ok(error instanceof ProtocolError && /blk_size/.test(error.message)),
  },
  {
    name: 'no CONFIG protocol feature',
    override: (request) =>
      request === R.VHOST_USER_GET_PROTOCOL_FEATURES
        ? { kind: 'raw', bytes: reply(request, Buffer.from([8, 0, 0, 0, 0, 0, 0, 0])) }
        : { kind: 'default' },
    check: (error) => assert.ok(error instanceof UnsupportedError),
  },
  {
    name: 'silence after SET_VRING_ADDR',
    override: (request) =>
      request === R.VHOST_USER_SET_VRING_ADDR ? { kind: 'hang' } : { kind: 'default' },
    check: (error) => {
      assert.ok(error instanceof TimeoutError);
      assert.match(error.message, /VHOST_USER_SET_VRING_ADDR/);
    },
  },
  {
    name: 'the backend closing the socket at SET_VRING_KICK',
    override: (request) =>
      request === R.VHOST_USER_SET_VRING_KICK ? { kind: 'close' } : { kind: 'default' },
    check: (error) => {
      assert.ok(error instanceof DisconnectedError);
      assert.doesNotMatch(error.message, /hugepage/);
    },
  },
  {
    // As SPDK's vhost target does (it crashes) when a region of memfd memory is not on a 2 MiB
    // boundary in its address space: the error says what to try.
    name: 'the backend closing the socket at SET_MEM_TABLE',
    override: (request) =>
      request === R.VHOST_USER_SET_MEM_TABLE ? { kind: 'close' } : { kind: 'default' },
    check: (error) => {
      assert.ok(error instanceof DisconnectedError);
      assert.equal(error.code, 'VHOST_USER_ERR_DISCONNECTED');
      assert.match(error.message, /SET_MEM_TABLE.*hugepages: '2M'/);
      assert.ok(error.cause instanceof DisconnectedError);
    },
  },
  {
    name: 'a truncated reply followed by silence',
    override: (request) =>
      request === R.VHOST_USER_GET_QUEUE_NUM || request === R.VHOST_USER_SET_OWNER
        ? { kind: 'raw', bytes: reply(request, Buffer.alloc(8)).subarray(0, 15) }
        : { kind: 'default' },
    check: (error) => assert.ok(error instanceof TimeoutError),
  },
];

for (const fault of faults) {
  test(`open fails cleanly on ${fault.name}`, async () => {
    const { error, leaked } = await openAgainst(fault.override);
    fault.check(error);
    assert.equal(leaked, 0, 'fds leaked by the failed open');
  });
}
