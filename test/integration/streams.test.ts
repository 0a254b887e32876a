import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { openBlockDevice, type BlockDevice } from '../../src/index.js';
import { createReadStream, createWriteStream } from '../../src/api/streams.js';
import { startQsd, type Qsd } from '../helpers/qsd.js';
import { prng, randomBytes, randomInt } from '../helpers/random.js';

const SIZE = 8 * 1024 * 1024;

let qsd: Qsd;
let dev: BlockDevice;

before(async () => {
  qsd = await startQsd({ size: SIZE });
  dev = await openBlockDevice(qsd.socketPath, { queueSize: 64 });
});

after(async () => {
  await dev?.close();
  await qsd?.stop();
});

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}

test('read stream over an unaligned range equals dev.read', async () => {
  const rand = prng(7);
  await dev.write(randomBytes(rand, 1 << 20), 12345);
  const start = 12345 + 17;
  const end = start + 700_001; // inclusive, like fs.createReadStream
  const stream = createReadStream(dev, { start, end, highWaterMark: 64 * 1024 });
  const got = await collect(stream);
  assert.equal(got.length, end - start + 1);
  assert.ok(got.equals(await dev.read(start, end - start + 1)));
  assert.equal(stream.bytesRead, got.length);
});

test('read stream defaults to the whole device; an empty range ends at once', async () => {
  const whole = await collect(createReadStream(dev));
  assert.equal(whole.length, SIZE);
  assert.ok(whole.subarray(0, 4096).equals(await dev.read(0, 4096)));
  const empty = await collect(createReadStream(dev, { start: 100, end: 99 }));
  assert.equal(empty.length, 0);
});

test('write stream of random chunk sizes lands where expected', async () => {
  const rand = prng(42);
  const start = 3 * 1024 * 1024 + 333; // unaligned on purpose
  const chunks: Buffer[] = [];
  let total = 0;
  while (total < 1_500_000) {
    const chunk = randomBytes(rand, randomInt(rand, 1, 200_000));
    chunks.push(chunk);
    total += chunk.length;
  }
  // Sentinels on both sides: the edge read-modify-writes must leave them alone.
  await dev.write(Buffer.alloc(1, 0x5a), start - 1);
  await dev.write(Buffer.alloc(1, 0xa5), start + total);
  const sink = createWriteStream(dev, { start, highWaterMark: 128 * 1024 });
  await pipeline(Readable.from(chunks), sink);
  assert.equal(sink.bytesWritten, total);
  assert.ok((await dev.read(start, total)).equals(Buffer.concat(chunks)));
  assert.equal((await dev.read(start - 1, 1))[0], 0x5a);
  assert.equal((await dev.read(start + total, 1))[0], 0xa5);
});

test('destroying a read stream mid-way leaves the device usable', async () => {
  const stream = createReadStream(dev, { highWaterMark: 64 * 1024 });
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    assert.ok(chunk.length > 0);
    break; // destroys the stream with reads still in flight
  }
  assert.ok(stream.destroyed);
  assert.equal((await dev.read(0, 4096)).length, 4096);
});

test('backpressure: a slow consumer with a small highWaterMark gets every byte in order', async () => {
  const rand = prng(5);
  const data = randomBytes(rand, 300_000);
  await dev.write(data, 0);
  const stream = createReadStream(dev, {
    start: 0,
    end: data.length - 1,
    highWaterMark: 1000,
    depth: 3,
  });
  const received: Buffer[] = [];
  let maxBuffered = 0;
  const slow = new Writable({
    highWaterMark: 1000,
    write(chunk: Buffer, _encoding, callback) {
      received.push(chunk);
      maxBuffered = Math.max(maxBuffered, stream.readableLength);
      setImmediate(callback);
    },
  });
  await pipeline(stream, slow);
  assert.ok(Buffer.concat(received).equals(data));
  assert.ok(received.length >= 300, `expected many small chunks, got ${received.length}`);
  // Buffered data stays near highWaterMark plus read-ahead, not the whole range.
  assert.ok(maxBuffered <= 1000 * 5, `read stream buffered ${maxBuffered} bytes`);
});

test('backpressure: write() returns false and drains with a small highWaterMark', async () => {
  const sink = createWriteStream(dev, { start: 5 * 1024 * 1024, highWaterMark: 4096, depth: 2 });
  const rand = prng(9);
  const chunks = Array.from({ length: 200 }, () => randomBytes(rand, 1000));
  let sawFalse = false;
  for (const chunk of chunks) {
    if (!sink.write(chunk)) {
      sawFalse = true;
      await once(sink, 'drain');
    }
  }
  sink.end();
  await once(sink, 'finish');
  assert.ok(sawFalse, 'write() never signalled backpressure');
  assert.ok((await dev.read(5 * 1024 * 1024, 200_000)).equals(Buffer.concat(chunks)));
});

test('a read range past the end is a stream error, not a throw', async () => {
  const stream = createReadStream(dev, { start: SIZE - 10, end: SIZE + 10 });
  const [err] = (await once(stream, 'error')) as [Error & { code?: string }];
  assert.equal(err.code, 'VHOST_USER_ERR_OUT_OF_RANGE');
});

test('writing past the end surfaces as a stream error', async () => {
  const sink = createWriteStream(dev, { start: SIZE - 100, highWaterMark: 4096 });
  await assert.rejects(pipeline(Readable.from([Buffer.alloc(1000, 1)]), sink), {
    code: 'VHOST_USER_ERR_OUT_OF_RANGE',
  });
  assert.ok(sink.destroyed);
});

test('bad options throw synchronously', () => {
  assert.throws(() => createReadStream(dev, { start: -1 }), {
    code: 'VHOST_USER_ERR_INVALID_ARGUMENT',
  });
  assert.throws(() => createReadStream(dev, { start: 10, end: 5 }), {
    code: 'VHOST_USER_ERR_INVALID_ARGUMENT',
  });
  assert.throws(() => createWriteStream(dev, { highWaterMark: 0 }), {
    code: 'VHOST_USER_ERR_INVALID_ARGUMENT',
  });
});
