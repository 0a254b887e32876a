import { test } from 'node:test';
import assert from 'node:assert/strict';

import { InvalidArgumentError, ProtocolError } from '../../src/errors.js';
import {
  MessageParser,
  U64,
  VHOST_USER_HEADER_SIZE,
  VHOST_USER_MAX_PAYLOAD,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_REPLY_MASK,
  VHOST_USER_VERSION,
  VhostUserConfigHeader,
  VhostUserHeader,
  VhostUserMemoryHeader,
  VhostUserMemoryRegion,
  VhostUserMessageTable,
  VhostUserProtocolFeature,
  VhostUserRequest,
  VhostUserVringAddr,
  VhostUserVringState,
  decodeConfig,
  decodeMemoryTable,
  decodeVringFd,
  describeMessage,
  encodeConfig,
  encodeMemoryTable,
  encodeMessage,
  encodeVringFd,
  parseRequest,
  protocolFeatureNames,
  requestName,
  validateRequest,
} from '../../src/protocol/messages.js';
import { defineStruct, u16, u32, u64, u8 } from '../../src/protocol/struct.js';
import type { VhostUserMessage } from '../../src/protocol/transport.js';

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');
const unhex = (text: string): Uint8Array =>
  new Uint8Array(Buffer.from(text.replace(/\s/g, ''), 'hex'));

/** mulberry32: small, seedable, good enough to pick chunk boundaries. */
function prng(seed: number): (n: number) => number {
  let a = seed >>> 0;
  return (n) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) / 4294967296) * n;
  };
}

// --- struct codec ---------------------------------------------------------------------------

test('defineStruct encodes little-endian at the given offsets and decodes back', () => {
  const S = defineStruct('S', 16, { a: u8(0), b: u16(2), c: u32(4), d: u64(8) });
  const bytes = S.encode({ a: 0x12, b: 0x3456, c: 0x789abcde, d: 0x0102030405060708n });
  assert.equal(hex(bytes), '12005634debc9a780807060504030201');
  assert.deepEqual(S.decode(bytes), { a: 0x12, b: 0x3456, c: 0x789abcde, d: 0x0102030405060708n });
  assert.equal(S.size, 16);
  assert.equal(S.name, 'S');
  assert.deepEqual(S.fields.d, { kind: 'u64', offset: 8, size: 8 });
});

test('defineStruct rejects bad layouts, out-of-range values and wrong lengths', () => {
  assert.throws(() => defineStruct('X', 4, { a: u32(2) }), InvalidArgumentError);
  assert.throws(() => defineStruct('X', 4, { a: u64(0) }), InvalidArgumentError);
  assert.throws(() => defineStruct('X', 8, { a: u32(0), b: u16(2) }), InvalidArgumentError);
  const S = defineStruct('S', 8, { a: u32(0), b: u32(4) });
  assert.throws(() => S.encode({ a: -1, b: 0 }), InvalidArgumentError);
  assert.throws(() => S.encode({ a: 2 ** 32, b: 0 }), InvalidArgumentError);
  assert.throws(() => S.encode({ a: 1.5, b: 0 }), InvalidArgumentError);
  const L = defineStruct('L', 8, { v: u64(0) });
  assert.throws(() => L.encode({ v: 1n << 64n }), InvalidArgumentError);
  assert.throws(() => L.encode({ v: -1n }), InvalidArgumentError);
  assert.throws(() => L.decode(new Uint8Array(7)), ProtocolError);
  assert.throws(() => L.decode(new Uint8Array(9)), ProtocolError);
});

test('decode works on a subarray with a non-zero byteOffset', () => {
  const backing = unhex('ff 0100000002000000 ff');
  assert.deepEqual(VhostUserVringState.decode(backing.subarray(1, 9)), { index: 1, num: 2 });
});

// --- pinned layouts -------------------------------------------------------------------------

test('header layout: request, flags, size as u32 at 0, 4, 8', () => {
  assert.equal(VhostUserHeader.size, VHOST_USER_HEADER_SIZE);
  const bytes = encodeMessage(24, VHOST_USER_VERSION | VHOST_USER_NEED_REPLY_MASK, unhex('aabb'));
  assert.equal(hex(bytes), '18000000' + '09000000' + '02000000' + 'aabb');
  assert.deepEqual(VhostUserHeader.decode(bytes.subarray(0, 12)), {
    request: 24,
    flags: 9,
    size: 2,
  });
  assert.throws(
    () => encodeMessage(1, 1, new Uint8Array(VHOST_USER_MAX_PAYLOAD + 1)),
    InvalidArgumentError,
  );
  assert.equal(encodeMessage(1, 1, new Uint8Array(VHOST_USER_MAX_PAYLOAD)).length, 0x100c);
});

test('U64 and VhostUserVringState layouts', () => {
  assert.equal(hex(U64.encode({ value: 0x1122334455667788n })), '8877665544332211');
  const state = { index: 0x01020304, num: 0x0a0b0c0d };
  assert.equal(hex(VhostUserVringState.encode(state)), '04030201' + '0d0c0b0a');
  assert.deepEqual(VhostUserVringState.decode(VhostUserVringState.encode(state)), state);
});

test('VhostUserVringAddr layout (40 bytes)', () => {
  const addr = {
    index: 3,
    flags: 1,
    descriptor: 0x1000n,
    used: 0x2000n,
    available: 0x3000n,
    log: 0xfedcba9876543210n,
  };
  const bytes = VhostUserVringAddr.encode(addr);
  assert.equal(bytes.length, 40);
  assert.equal(
    hex(bytes),
    '03000000' +
      '01000000' +
      '0010000000000000' +
      '0020000000000000' +
      '0030000000000000' +
      '1032547698badcfe',
  );
  assert.deepEqual(VhostUserVringAddr.decode(bytes), addr);
  assert.deepEqual(
    Object.fromEntries(Object.entries(VhostUserVringAddr.fields).map(([k, f]) => [k, f.offset])),
    { index: 0, flags: 4, descriptor: 8, used: 16, available: 24, log: 32 },
  );
});

test('VhostUserMemoryRegion layout (32 bytes) and memory table header', () => {
  const region = {
    guestPhysAddr: 0x1000n,
    memorySize: 0x20000n,
    userspaceAddr: 0x7f0000000000n,
    mmapOffset: 0x40n,
  };
  assert.equal(
    hex(VhostUserMemoryRegion.encode(region)),
    '0010000000000000' + '0000020000000000' + '00000000007f0000' + '4000000000000000',
  );
  assert.equal(VhostUserMemoryHeader.size, 8);
  assert.equal(VhostUserConfigHeader.size, 12);
});

const region = (
  i: number,
): { guestPhysAddr: bigint; memorySize: bigint; userspaceAddr: bigint; mmapOffset: bigint } => ({
  guestPhysAddr: BigInt(i) << 32n,
  memorySize: 0x10000n,
  userspaceAddr: 0x7f0000000000n + (BigInt(i) << 20n),
  mmapOffset: 0n,
});

test('memory table with 0, 1 and 8 regions round-trips', () => {
  assert.equal(hex(encodeMemoryTable([])), '0000000000000000');
  assert.deepEqual(decodeMemoryTable(encodeMemoryTable([])), []);
  const one = encodeMemoryTable([region(1)]);
  assert.equal(one.length, 40);
  assert.equal(hex(one.subarray(0, 8)), '0100000000000000');
  assert.equal(hex(one.subarray(8)), hex(VhostUserMemoryRegion.encode(region(1))));
  const eight = Array.from({ length: 8 }, (_, i) => region(i));
  const bytes = encodeMemoryTable(eight);
  assert.equal(bytes.length, 8 + 8 * 32);
  assert.deepEqual(decodeMemoryTable(bytes), eight);
});

test('memory table rejects 9 regions, non-zero padding, wrong sizes and overflow', () => {
  const nine = Array.from({ length: 9 }, (_, i) => region(i));
  assert.throws(() => encodeMemoryTable(nine), InvalidArgumentError);
  const tooMany = new Uint8Array(8 + 9 * 32);
  tooMany.set(encodeMemoryTable(nine.slice(0, 8)));
  tooMany[0] = 9;
  assert.throws(() => decodeMemoryTable(tooMany), /9 regions/);

  const padded = encodeMemoryTable([region(0)]);
  padded[4] = 1;
  assert.throws(
    () => decodeMemoryTable(padded),
    (e: unknown) => e instanceof ProtocolError && /padding/.test(e.message),
  );

  const good = encodeMemoryTable([region(0), region(1)]);
  assert.throws(() => decodeMemoryTable(good.subarray(0, good.length - 1)), ProtocolError);
  assert.throws(() => decodeMemoryTable(new Uint8Array([...good, 0])), ProtocolError);
  assert.throws(() => decodeMemoryTable(new Uint8Array(4)), ProtocolError);

  const overflow = { ...region(0), guestPhysAddr: 0xffffffffffff0000n, memorySize: 0x10001n };
  assert.throws(() => encodeMemoryTable([overflow]), InvalidArgumentError);
  const bad = encodeMemoryTable([region(0)]);
  VhostUserMemoryRegion.encodeInto(new DataView(bad.buffer), 8, overflow);
  assert.throws(() => decodeMemoryTable(bad), /overflows/);
  assert.throws(() => encodeMemoryTable([{ ...region(0), memorySize: 0n }]), InvalidArgumentError);
  // Exactly reaching 2^64 is fine.
  const edge = { ...region(0), guestPhysAddr: 0xffffffffffff0000n, memorySize: 0x10000n };
  assert.deepEqual(decodeMemoryTable(encodeMemoryTable([edge])), [edge]);
});

test('config payload: header then data; size must match', () => {
  const bytes = encodeConfig({ offset: 4, flags: 1, data: unhex('a1a2a3') });
  assert.equal(hex(bytes), '04000000' + '03000000' + '01000000' + 'a1a2a3');
  assert.deepEqual(decodeConfig(bytes, 'X'), { offset: 4, flags: 1, data: unhex('a1a2a3') });
  assert.throws(() => decodeConfig(bytes.subarray(0, 14), 'X'), ProtocolError);
  assert.throws(() => decodeConfig(bytes.subarray(0, 8), 'X'), ProtocolError);
  assert.throws(
    () => encodeConfig({ offset: 0, flags: 0, data: new Uint8Array(0x1000) }),
    InvalidArgumentError,
  );
});

test('vring fd u64: index in bits 0-7, NOFD in bit 8', () => {
  assert.equal(hex(encodeVringFd(5, true)), '0500000000000000');
  assert.equal(hex(encodeVringFd(255, false)), 'ff01000000000000');
  assert.deepEqual(decodeVringFd(encodeVringFd(7, false), 'X'), { index: 7, noFd: true });
  assert.deepEqual(decodeVringFd(encodeVringFd(7, true), 'X'), { index: 7, noFd: false });
  assert.throws(() => encodeVringFd(256, true), InvalidArgumentError);
  assert.throws(() => decodeVringFd(U64.encode({ value: 0x200n }), 'X'), ProtocolError);
});

// --- codes and names ------------------------------------------------------------------------

test('request codes match the spec and parse strictly', () => {
  assert.equal(VhostUserRequest.VHOST_USER_GET_FEATURES, 1);
  assert.equal(VhostUserRequest.VHOST_USER_GET_PROTOCOL_FEATURES, 15);
  assert.equal(VhostUserRequest.VHOST_USER_GET_CONFIG, 24);
  assert.equal(VhostUserRequest.VHOST_USER_RESET_DEVICE, 34);
  assert.equal(VhostUserRequest.VHOST_USER_GET_MAX_MEM_SLOTS, 36);
  assert.equal(VhostUserRequest.VHOST_USER_GET_STATUS, 40);
  const codes = Object.values(VhostUserRequest);
  assert.deepEqual(
    codes,
    Array.from({ length: codes.length }, (_, i) => i + 1),
    'contiguous from 1',
  );
  assert.equal(parseRequest(24), 'VHOST_USER_GET_CONFIG');
  assert.equal(requestName(24), 'VHOST_USER_GET_CONFIG');
  assert.equal(requestName(999), 'UNKNOWN(999)');
  assert.throws(() => parseRequest(0), ProtocolError);
  assert.throws(() => parseRequest(999), /unknown request code 999/);
});

test('protocol feature names', () => {
  assert.equal(VhostUserProtocolFeature.REPLY_ACK, 3);
  assert.equal(VhostUserProtocolFeature.DEVICE_STATE, 19);
  assert.deepEqual(protocolFeatureNames(0n), []);
  assert.deepEqual(protocolFeatureNames((1n << 0n) | (1n << 3n) | (1n << 9n)), [
    'MQ',
    'REPLY_ACK',
    'CONFIG',
  ]);
  assert.deepEqual(protocolFeatureNames(1n << 40n), ['UNKNOWN(40)']);
});

// --- validateRequest ------------------------------------------------------------------------

function check(
  request: number,
  payload: Uint8Array,
  fds: number[] = [],
  flags = VHOST_USER_VERSION,
) {
  return validateRequest({ request, flags, size: payload.length }, payload, fds);
}
const R = VhostUserRequest;

test('validateRequest accepts well-formed requests', () => {
  assert.equal(check(R.VHOST_USER_GET_FEATURES, new Uint8Array(0)), undefined);
  assert.equal(check(R.VHOST_USER_SET_FEATURES, U64.encode({ value: 1n })), undefined);
  assert.equal(
    check(
      R.VHOST_USER_SET_OWNER,
      new Uint8Array(0),
      [],
      VHOST_USER_VERSION | VHOST_USER_NEED_REPLY_MASK,
    ),
    undefined,
  );
  assert.equal(
    check(R.VHOST_USER_SET_MEM_TABLE, encodeMemoryTable([region(0), region(1)]), [10, 11]),
    undefined,
  );
  assert.equal(check(R.VHOST_USER_SET_VRING_KICK, encodeVringFd(0, true), [10]), undefined);
  assert.equal(check(R.VHOST_USER_SET_VRING_CALL, encodeVringFd(0, false)), undefined);
  assert.equal(
    check(R.VHOST_USER_GET_CONFIG, encodeConfig({ offset: 0, flags: 0, data: new Uint8Array(60) })),
    undefined,
  );
  const addr = {
    index: 0,
    flags: 0,
    descriptor: 0x1000n,
    used: 0x2004n,
    available: 0x3002n,
    log: 0n,
  };
  assert.equal(check(R.VHOST_USER_SET_VRING_ADDR, VhostUserVringAddr.encode(addr)), undefined);
});

test('validateRequest rejects bad sizes, fds and codes', () => {
  const cases: [string, ProtocolError | undefined, RegExp][] = [
    [
      'short vring state',
      check(R.VHOST_USER_SET_VRING_NUM, new Uint8Array(4)),
      /4 bytes, expected 8/,
    ],
    ['payload on GET', check(R.VHOST_USER_GET_FEATURES, new Uint8Array(8)), /expected 0/],
    [
      'fd where none allowed',
      check(R.VHOST_USER_GET_FEATURES, new Uint8Array(0), [5]),
      /1 fds, expected 0/,
    ],
    [
      'missing kick fd',
      check(R.VHOST_USER_SET_VRING_KICK, encodeVringFd(0, true)),
      /0 fds, expected 1/,
    ],
    [
      'fd despite NOFD',
      check(R.VHOST_USER_SET_VRING_ERR, encodeVringFd(0, false), [5]),
      /expected 0/,
    ],
    [
      'one fd short',
      check(R.VHOST_USER_SET_MEM_TABLE, encodeMemoryTable([region(0), region(1)]), [5]),
      /expected 2/,
    ],
    ['unknown code', check(99, new Uint8Array(0)), /UNKNOWN\(99\): unknown request code/],
    ['unsupported code', check(R.VHOST_USER_SET_LOG_BASE, new Uint8Array(8)), /not supported/],
    ['REPLY on request', check(R.VHOST_USER_GET_FEATURES, new Uint8Array(0), [], 5), /REPLY flag/],
    ['bad version', check(R.VHOST_USER_GET_FEATURES, new Uint8Array(0), [], 2), /version/],
    [
      'config size mismatch',
      check(R.VHOST_USER_SET_CONFIG, unhex('000000000400000000000000aabb')),
      /size field/,
    ],
    [
      'misaligned desc',
      check(
        R.VHOST_USER_SET_VRING_ADDR,
        VhostUserVringAddr.encode({
          index: 0,
          flags: 0,
          descriptor: 8n,
          used: 0n,
          available: 0n,
          log: 0n,
        }),
      ),
      /16-aligned/,
    ],
  ];
  for (const [label, err, pattern] of cases) {
    assert.ok(err instanceof ProtocolError, label);
    assert.match(err.message, pattern, label);
  }
  const mismatch = validateRequest({ request: 1, flags: 1, size: 8 }, new Uint8Array(0), []);
  assert.match(mismatch?.message ?? '', /header says 8/);
});

test('message table covers the blk/scsi frontend requests', () => {
  assert.deepEqual(Object.keys(VhostUserMessageTable).length, 20);
  assert.equal(VhostUserMessageTable.VHOST_USER_SET_MEM_TABLE.fds, 'perRegion');
  assert.equal(VhostUserMessageTable.VHOST_USER_GET_VRING_BASE.reply, 'vringState');
});

test('describeMessage decodes payloads and never throws', () => {
  const addr = VhostUserVringAddr.encode({
    index: 0,
    flags: 0,
    descriptor: 0x1000n,
    used: 0x2000n,
    available: 0x3000n,
    log: 0n,
  });
  assert.equal(
    describeMessage({ request: 9, flags: 9, payload: addr, fds: [] }),
    'VHOST_USER_SET_VRING_ADDR flags=0x9(NEED_REPLY) size=40 fds=0 {index=0 flags=0 descriptor=0x1000 used=0x2000 available=0x3000 log=0x0}',
  );
  assert.match(
    describeMessage({ request: 9, flags: 5, payload: U64.encode({ value: 0n }), fds: [] }),
    /REPLY.*\{value=0x0\}/,
  );
  assert.match(
    describeMessage({ request: 12, flags: 1, payload: encodeVringFd(2, false), fds: [] }),
    /\{index=2 NOFD\}/,
  );
  assert.match(
    describeMessage({ request: 9, flags: 1, payload: unhex('0102'), fds: [] }),
    /payload=0102$/,
  );
  assert.match(
    describeMessage({ request: 77, flags: 1, payload: new Uint8Array(0), fds: [] }),
    /^UNKNOWN\(77\)/,
  );
});

// --- stream parser --------------------------------------------------------------------------

interface Sent {
  message: VhostUserMessage;
  bytes: Uint8Array;
}

function randomMessages(rand: (n: number) => number, count: number, nextFd: { n: number }): Sent[] {
  const codes = Object.values(VhostUserRequest);
  const out: Sent[] = [];
  for (let i = 0; i < count; i++) {
    const request = codes[Math.floor(rand(codes.length))] ?? 1;
    const flags =
      VHOST_USER_VERSION |
      (rand(2) < 1 ? VHOST_USER_REPLY_MASK : 0) |
      (rand(2) < 1 ? VHOST_USER_NEED_REPLY_MASK : 0);
    const sizes = [0, 8, 40, 1, 13, Math.floor(rand(VHOST_USER_MAX_PAYLOAD + 1))];
    const payload = new Uint8Array(sizes[Math.floor(rand(sizes.length))] ?? 0).map(() => rand(256));
    const fds =
      rand(3) < 1 ? Array.from({ length: 1 + Math.floor(rand(3)) }, () => nextFd.n++) : [];
    out.push({
      message: { request, flags, payload, fds },
      bytes: encodeMessage(request, flags, payload),
    });
  }
  return out;
}

/**
 * Splits the stream like a Unix socket does: random cuts, plus a cut after every message that
 * carried fds (recvmsg stops after the segment with SCM_RIGHTS). The fds travel with the chunk
 * holding the first byte of their message.
 */
function kernelChunks(
  rand: (n: number) => number,
  sent: Sent[],
): { chunk: Uint8Array; fds: number[] }[] {
  const total = sent.reduce((n, s) => n + s.bytes.length, 0);
  const stream = new Uint8Array(total);
  const cuts = new Set<number>([total]);
  const fdsAt = new Map<number, number[]>();
  let pos = 0;
  for (const s of sent) {
    stream.set(s.bytes, pos);
    if (s.message.fds.length) {
      fdsAt.set(pos, s.message.fds);
      cuts.add(pos + s.bytes.length);
    }
    pos += s.bytes.length;
  }
  const cutCount = Math.floor(rand(20));
  for (let i = 0; i < cutCount; i++) cuts.add(1 + Math.floor(rand(Math.max(1, total - 1))));
  if (rand(4) < 1) for (let i = 1; i < total; i += 1 + Math.floor(rand(5))) cuts.add(i);
  const ordered = [...cuts].filter((c) => c > 0 && c <= total).sort((a, b) => a - b);
  const chunks: { chunk: Uint8Array; fds: number[] }[] = [];
  let start = 0;
  for (const end of ordered) {
    const fds: number[] = [];
    for (const [at, list] of fdsAt) if (at >= start && at < end) fds.push(...list);
    chunks.push({ chunk: stream.slice(start, end), fds });
    start = end;
  }
  return chunks;
}

test('MessageParser reassembles random chunkings and attaches fds to their message', () => {
  const rand = prng(0x5eed);
  for (let iteration = 0; iteration < 500; iteration++) {
    const nextFd = { n: 100 };
    const sent = randomMessages(rand, 1 + Math.floor(rand(8)), nextFd);
    const closed: number[] = [];
    const parser = new MessageParser({ closeFd: (fd) => closed.push(fd) });
    const got: VhostUserMessage[] = [];
    for (const { chunk, fds } of kernelChunks(rand, sent)) {
      got.push(...parser.push(chunk, fds));
      chunk.fill(0xee); // the parser must have copied what it keeps
    }
    assert.equal(parser.pendingBytes, 0);
    assert.deepEqual(closed, []);
    assert.deepEqual(
      got,
      sent.map((s) => s.message),
      `iteration ${iteration}`,
    );
    for (const m of got) assert.equal(m.payload.byteLength, m.payload.buffer.byteLength);
  }
});

test('MessageParser: fds in a read with several messages go to the last one that starts there', () => {
  const parser = new MessageParser({ closeFd: () => assert.fail('nothing to close') });
  const a = encodeMessage(1, 1, new Uint8Array(0));
  const b = encodeMessage(12, 1, encodeVringFd(0, true));
  const [first, second] = parser.push(new Uint8Array([...a, ...b]), [7]);
  assert.deepEqual(first?.fds, []);
  assert.deepEqual(second?.fds, [7]);
});

test('MessageParser: fds with a chunk where no message starts are a protocol error', () => {
  const closed: number[] = [];
  const parser = new MessageParser({ closeFd: (fd) => closed.push(fd) });
  const m = encodeMessage(5, 1, encodeMemoryTable([region(0)]));
  assert.deepEqual(parser.push(m.subarray(0, 20), [3]), []);
  assert.throws(() => parser.push(m.subarray(20), [4]), /no message start/);
  assert.deepEqual(closed.sort(), [3, 4]);
  assert.throws(() => parser.push(encodeMessage(1, 1, new Uint8Array(0)), [9]), /earlier error/);
  assert.deepEqual(closed.sort(), [3, 4, 9]);
  parser.reset();
  assert.equal(parser.push(encodeMessage(1, 1, new Uint8Array(0))).length, 1);
});

test('MessageParser rejects bad headers and closes the fds it held', () => {
  const bad: [string, Uint8Array][] = [
    ['version 0', VhostUserHeader.encode({ request: 1, flags: 0, size: 0 })],
    ['version 2', VhostUserHeader.encode({ request: 1, flags: 2, size: 0 })],
    ['unknown flag', VhostUserHeader.encode({ request: 1, flags: 0x11, size: 0 })],
    ['high flag', VhostUserHeader.encode({ request: 1, flags: 0x80000001, size: 0 })],
    ['size > 0x1000', VhostUserHeader.encode({ request: 1, flags: 1, size: 0x1001 })],
  ];
  for (const [label, header] of bad) {
    const closed: number[] = [];
    const parser = new MessageParser({ closeFd: (fd) => closed.push(fd) });
    assert.deepEqual(parser.push(header.subarray(0, 5), [42]), [], label);
    assert.throws(() => parser.push(header.subarray(5)), ProtocolError, label);
    assert.deepEqual(closed, [42], label);
  }
});

test('MessageParser closes fds of messages completed in a push that then fails', () => {
  const closed: number[] = [];
  const parser = new MessageParser({ closeFd: (fd) => closed.push(fd) });
  const good = encodeMessage(13, 1, encodeVringFd(0, false));
  const badHeader = VhostUserHeader.encode({ request: 1, flags: 0, size: 0 });
  assert.deepEqual(parser.push(good.subarray(0, 5), [42]), []);
  assert.throws(
    () => parser.push(new Uint8Array([...good.subarray(5), ...badHeader]), [43]),
    /version/,
  );
  assert.deepEqual(closed.sort(), [42, 43]);
});

test('MessageParser accepts a maximum-size payload split byte by byte', () => {
  const parser = new MessageParser({ closeFd: () => undefined });
  const bytes = encodeMessage(25, 1, new Uint8Array(VHOST_USER_MAX_PAYLOAD).fill(0xab));
  const got: VhostUserMessage[] = [];
  for (let i = 0; i < bytes.length; i++) {
    got.push(...parser.push(bytes.subarray(i, i + 1), i === 0 ? [5] : []));
  }
  assert.equal(got.length, 1);
  assert.equal(got[0]?.payload.length, VHOST_USER_MAX_PAYLOAD);
  assert.deepEqual(got[0]?.fds, [5]);
});
