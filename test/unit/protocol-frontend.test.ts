import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  BackendRejectedError,
  DisconnectedError,
  InvalidArgumentError,
  ProtocolError,
  TimeoutError,
} from '../../src/errors.js';
import { VhostUserFrontend } from '../../src/protocol/frontend.js';
import {
  U64,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_REPLY_MASK,
  VHOST_USER_VERSION,
  VhostUserRequest,
  VhostUserVringAddr,
  VhostUserVringState,
  encodeConfig,
  encodeMemoryTable,
  encodeVringFd,
  type VhostUserRequestName,
} from '../../src/protocol/messages.js';
import {
  FakeTransport,
  noReply,
  replyBytes,
  replyTo,
  replyU64,
  type Step,
} from '../helpers/fake-transport.js';

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');
const EMPTY = new Uint8Array(0);

function setup(timeoutMs = 1000): {
  fake: FakeTransport;
  frontend: VhostUserFrontend;
  trace: string[];
} {
  const fake = new FakeTransport();
  const trace: string[] = [];
  const frontend = new VhostUserFrontend(fake, {
    timeoutMs,
    trace: (direction, summary) => trace.push(`${direction} ${summary}`),
  });
  return { fake, frontend, trace };
}

const REGION = {
  guestPhysAddr: 0n,
  memorySize: 0x100000n,
  userspaceAddr: 0x7f0000000000n,
  mmapOffset: 0n,
};
const ADDR = {
  index: 1,
  flags: 0,
  descriptor: 0x7f0000001000n,
  used: 0x7f0000002000n,
  available: 0x7f0000003000n,
  log: 0n,
};

/** Requests without a reply of their own: acked only under REPLY_ACK. */
const SETS: {
  request: VhostUserRequestName;
  call: (f: VhostUserFrontend) => Promise<void>;
  payload: Uint8Array;
  fds: number[];
}[] = [
  {
    request: 'VHOST_USER_SET_FEATURES',
    call: (f) => f.setFeatures(0x140000000n),
    payload: U64.encode({ value: 0x140000000n }),
    fds: [],
  },
  {
    request: 'VHOST_USER_SET_PROTOCOL_FEATURES',
    call: (f) => f.setProtocolFeatures(0x209n),
    payload: U64.encode({ value: 0x209n }),
    fds: [],
  },
  { request: 'VHOST_USER_SET_OWNER', call: (f) => f.setOwner(), payload: EMPTY, fds: [] },
  { request: 'VHOST_USER_RESET_DEVICE', call: (f) => f.resetDevice(), payload: EMPTY, fds: [] },
  {
    request: 'VHOST_USER_SET_MEM_TABLE',
    call: (f) => f.setMemTable([REGION], [20]),
    payload: encodeMemoryTable([REGION]),
    fds: [20],
  },
  {
    request: 'VHOST_USER_SET_VRING_NUM',
    call: (f) => f.setVringNum(1, 256),
    payload: VhostUserVringState.encode({ index: 1, num: 256 }),
    fds: [],
  },
  {
    request: 'VHOST_USER_SET_VRING_ADDR',
    call: (f) => f.setVringAddr(ADDR),
    payload: VhostUserVringAddr.encode(ADDR),
    fds: [],
  },
  {
    request: 'VHOST_USER_SET_VRING_BASE',
    call: (f) => f.setVringBase(1, 7),
    payload: VhostUserVringState.encode({ index: 1, num: 7 }),
    fds: [],
  },
  {
    request: 'VHOST_USER_SET_VRING_KICK',
    call: (f) => f.setVringKick(1, 30),
    payload: encodeVringFd(1, true),
    fds: [30],
  },
  {
    request: 'VHOST_USER_SET_VRING_CALL',
    call: (f) => f.setVringCall(2, undefined),
    payload: encodeVringFd(2, false),
    fds: [],
  },
  {
    request: 'VHOST_USER_SET_VRING_ERR',
    call: (f) => f.setVringErr(0, 31),
    payload: encodeVringFd(0, true),
    fds: [31],
  },
  {
    request: 'VHOST_USER_SET_VRING_ENABLE',
    call: (f) => f.setVringEnable(1, true),
    payload: VhostUserVringState.encode({ index: 1, num: 1 }),
    fds: [],
  },
  {
    request: 'VHOST_USER_SET_CONFIG',
    call: (f) => f.setConfig(8, new Uint8Array([1, 2])),
    payload: encodeConfig({ offset: 8, flags: 0, data: new Uint8Array([1, 2]) }),
    fds: [],
  },
];

for (const row of SETS) {
  test(`${row.request} without REPLY_ACK: sent once, no NEED_REPLY, no wait`, async () => {
    const { fake, frontend } = setup();
    await row.call(frontend);
    assert.equal(fake.sent.length, 1);
    const [sent] = fake.sent;
    assert.equal(sent?.request, VhostUserRequest[row.request]);
    assert.equal(sent?.flags, VHOST_USER_VERSION);
    assert.equal(hex(sent?.payload ?? EMPTY), hex(row.payload));
    assert.deepEqual(sent?.fds, row.fds);
    assert.equal(fake.receives.length, 0);
  });

  test(`${row.request} with REPLY_ACK: NEED_REPLY set and the ack awaited`, async () => {
    const { fake, frontend } = setup();
    frontend.setReplyAck(true);
    fake.script(replyU64(0n));
    await row.call(frontend);
    const [sent] = fake.sent;
    assert.equal(sent?.flags, VHOST_USER_VERSION | VHOST_USER_NEED_REPLY_MASK);
    assert.equal(hex(sent?.payload ?? EMPTY), hex(row.payload));
    assert.deepEqual(sent?.fds, row.fds);
    assert.deepEqual(fake.receives, [{ timeoutMs: 1000, operation: row.request }]);
  });

  test(`${row.request}: non-zero ack is BackendRejectedError naming the request`, async () => {
    const { fake, frontend } = setup();
    frontend.setReplyAck(true);
    fake.script(replyU64(5n));
    await assert.rejects(
      row.call(frontend),
      (err: unknown) =>
        err instanceof BackendRejectedError && err.request === row.request && err.value === 5n,
    );
    // A NACK keeps the stream in sync: the next request still works.
    fake.script(replyU64(1n));
    assert.equal(await frontend.getFeatures(), 1n);
  });
}

test('GET requests never carry NEED_REPLY and return the decoded reply', async () => {
  for (const replyAck of [false, true]) {
    const { fake, frontend } = setup();
    frontend.setReplyAck(replyAck);
    fake.script(
      replyU64(0x1_4000_0000n),
      replyU64(0x2a09n),
      replyU64(4n),
      replyU64(8n),
      replyBytes(VhostUserVringState.encode({ index: 3, num: 99 })),
    );
    assert.equal(await frontend.getFeatures(), 0x1_4000_0000n);
    assert.equal(await frontend.getProtocolFeatures(), 0x2a09n);
    assert.equal(await frontend.getQueueNum(), 4);
    assert.equal(await frontend.getMaxMemSlots(), 8);
    assert.equal(await frontend.getVringBase(3), 99);
    assert.deepEqual(
      fake.sent.map((m) => [m.request, m.flags, hex(m.payload)]),
      [
        [1, 1, ''],
        [15, 1, ''],
        [17, 1, ''],
        [36, 1, ''],
        [11, 1, hex(VhostUserVringState.encode({ index: 3, num: 0 }))],
      ],
    );
  }
});

test('getConfig sends a zeroed buffer of the asked size and returns only the data', async () => {
  const { fake, frontend } = setup();
  const data = Uint8Array.from({ length: 60 }, (_, i) => i);
  fake.script(replyBytes(encodeConfig({ offset: 0, flags: 0, data })));
  assert.deepEqual(await frontend.getConfig(0, 60), data);
  const [sent] = fake.sent;
  assert.equal(sent?.request, 24);
  assert.equal(sent?.flags, 1);
  assert.equal(
    hex(sent?.payload ?? EMPTY),
    hex(encodeConfig({ offset: 0, flags: 0, data: new Uint8Array(60) })),
  );
});

test('getConfig: reply for a different offset or size is a ProtocolError', async () => {
  const { fake, frontend } = setup();
  fake.script(replyBytes(encodeConfig({ offset: 4, flags: 0, data: new Uint8Array(8) })));
  await assert.rejects(frontend.getConfig(0, 8), /VHOST_USER_GET_CONFIG: reply is for offset 4/);
});

test('getConfig: empty reply payload is the backend refusing', async () => {
  const { fake, frontend } = setup();
  fake.script(replyBytes(EMPTY));
  await assert.rejects(
    frontend.getConfig(0, 8),
    (err: unknown) =>
      err instanceof BackendRejectedError && err.request === 'VHOST_USER_GET_CONFIG',
  );
});

test('getVringBase: reply for another vring is a ProtocolError', async () => {
  const { fake, frontend } = setup();
  fake.script(replyBytes(VhostUserVringState.encode({ index: 2, num: 0 })));
  await assert.rejects(frontend.getVringBase(1), /reply is for vring 2, expected 1/);
});

const negative: [string, Step, RegExp][] = [
  [
    'wrong request code',
    (sent, fake) =>
      fake.deliver(
        replyTo(sent, encodeConfig({ offset: 0, flags: 0, data: new Uint8Array(4) }), {
          request: 1,
        }),
      ),
    /^VHOST_USER_GET_CONFIG: reply has request code 1, expected 24$/,
  ],
  [
    'missing REPLY flag',
    (sent, fake) =>
      fake.deliver(
        replyTo(sent, encodeConfig({ offset: 0, flags: 0, data: new Uint8Array(4) }), { flags: 1 }),
      ),
    /lacks the REPLY flag/,
  ],
  [
    'wrong version',
    (sent, fake) =>
      fake.deliver(
        replyTo(sent, encodeConfig({ offset: 0, flags: 0, data: new Uint8Array(4) }), {
          flags: VHOST_USER_REPLY_MASK | 2,
        }),
      ),
    /version 2/,
  ],
  [
    'wrong payload size',
    replyBytes(encodeConfig({ offset: 0, flags: 0, data: new Uint8Array(5) })),
    /reply payload is 17 bytes, expected 16/,
  ],
];

for (const [label, step, pattern] of negative) {
  test(`reply check: ${label}`, async () => {
    const { fake, frontend } = setup();
    fake.script(step);
    await assert.rejects(
      frontend.getConfig(0, 4),
      (err: unknown) => err instanceof ProtocolError && pattern.test(err.message),
    );
  });
}

test('reply check: fds attached to a reply are closed, then ProtocolError', async () => {
  const { fake, frontend } = setup();
  fake.script(replyU64(0n, { fds: [40, 41] }));
  await assert.rejects(frontend.getFeatures(), /VHOST_USER_GET_FEATURES: reply carries 2 fds/);
  assert.deepEqual(fake.closedFds, [40, 41]);
});

test('reply check: an ack of the wrong size is a ProtocolError', async () => {
  const { fake, frontend } = setup();
  frontend.setReplyAck(true);
  fake.script(replyBytes(new Uint8Array(4)));
  await assert.rejects(
    frontend.setOwner(),
    /VHOST_USER_SET_OWNER: reply payload is 4 bytes, expected 8/,
  );
});

test('timeout: TimeoutError naming the request, and the connection is then unusable', async () => {
  const { fake, frontend } = setup(20);
  fake.script(noReply);
  await assert.rejects(
    frontend.getFeatures(),
    (err: unknown) =>
      err instanceof TimeoutError &&
      err.operation === 'VHOST_USER_GET_FEATURES' &&
      err.timeoutMs === 20,
  );
  // A late reply could be taken for the next request's: later calls fail fast, without sending.
  await assert.rejects(
    frontend.getProtocolFeatures(),
    (err: unknown) => err instanceof DisconnectedError && err.cause instanceof TimeoutError,
  );
  assert.equal(fake.sent.length, 1);
});

test('disconnect while waiting for a reply propagates DisconnectedError', async () => {
  const { fake, frontend } = setup();
  fake.script((_, f) => setImmediate(() => f.disconnect()));
  await assert.rejects(frontend.getFeatures(), DisconnectedError);
});

test('disconnect before sending propagates DisconnectedError from send', async () => {
  const { fake, frontend } = setup();
  fake.disconnect();
  await assert.rejects(frontend.setOwner(), DisconnectedError);
});

test('concurrent calls are sent one after the other', async () => {
  const { fake, frontend } = setup();
  let release: (() => void) | undefined;
  fake.script((sent, f) => {
    release = () => f.deliver(replyTo(sent, U64.encode({ value: 7n })));
  }, replyU64(0x209n));
  const first = frontend.getFeatures();
  const second = frontend.getProtocolFeatures();
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(fake.sent.length, 1, 'second request waits for the first reply');
  release?.();
  assert.equal(await first, 7n);
  assert.equal(await second, 0x209n);
  assert.deepEqual(
    fake.sent.map((m) => m.request),
    [1, 15],
  );
});

test('a failed call does not block the chain (BackendRejectedError)', async () => {
  const { fake, frontend } = setup();
  frontend.setReplyAck(true);
  fake.script(replyU64(1n), replyU64(0n));
  const a = frontend.setOwner();
  const b = frontend.setFeatures(1n);
  await assert.rejects(a, BackendRejectedError);
  await b;
});

test('barrier: GET_FEATURES round trip without REPLY_ACK, nothing sent with it', async () => {
  const { fake, frontend } = setup();
  fake.script(noReply, replyU64(0n));
  await frontend.setMemTable([REGION], [20]);
  await frontend.barrier();
  assert.deepEqual(
    fake.sent.map((m) => m.request),
    [5, 1],
  );
  const other = setup();
  other.frontend.setReplyAck(true);
  other.fake.script(replyU64(0n));
  await other.frontend.setMemTable([REGION], [20]);
  await other.frontend.barrier();
  assert.equal(other.fake.sent.length, 1);
});

test('argument errors are InvalidArgumentError and send nothing', async () => {
  const { fake, frontend } = setup();
  await assert.rejects(frontend.setMemTable([REGION], []), InvalidArgumentError);
  await assert.rejects(
    frontend.setMemTable(Array(9).fill(REGION), Array(9).fill(3)),
    InvalidArgumentError,
  );
  await assert.rejects(frontend.setVringKick(256, 3), InvalidArgumentError);
  await assert.rejects(frontend.setVringNum(-1, 3), InvalidArgumentError);
  await assert.rejects(frontend.setFeatures(-1n), InvalidArgumentError);
  await assert.rejects(frontend.getConfig(0, 0x1000), InvalidArgumentError);
  assert.equal(fake.sent.length, 0);
  assert.throws(() => new VhostUserFrontend(fake, { timeoutMs: 0 }), InvalidArgumentError);
});

test('trace hook sees every message both ways, decoded', async () => {
  const { fake, frontend, trace } = setup();
  frontend.setReplyAck(true);
  fake.script(replyU64(0n));
  await frontend.setVringNum(0, 128);
  assert.deepEqual(trace, [
    'send VHOST_USER_SET_VRING_NUM flags=0x9(NEED_REPLY) size=8 fds=0 {index=0 num=128}',
    'recv VHOST_USER_SET_VRING_NUM flags=0x5(REPLY) size=8 fds=0 {value=0x0}',
  ]);
});
