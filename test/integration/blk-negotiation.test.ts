import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { openBlockDevice, type OpenOptions, type DeviceStats } from '../../src/index.js';
import { PEERS, startPeer } from '../helpers/peers.js';
import { prng, randomBytes, randomInt } from '../helpers/random.js';

/** The feature bits the frontend sent in VHOST_USER_SET_FEATURES, from the protocol trace. */
function negotiatedFeatures(lines: readonly string[]): bigint {
  const setFeatures = lines.find((l) => l.includes('-> VHOST_USER_SET_FEATURES'));
  assert.ok(setFeatures, 'no VHOST_USER_SET_FEATURES in the trace');
  return BigInt(/value=(0x[0-9a-f]+)/.exec(setFeatures)![1]!);
}

/** Random verified I/O through `dev`, checked against the raw file as well. */
async function exercise(
  socketPath: string,
  imagePath: string,
  size: number,
  options: OpenOptions,
  seed: number,
): Promise<{ stats: DeviceStats; lines: string[] }> {
  const lines: string[] = [];
  const dev = await openBlockDevice(socketPath, { ...options, trace: (line) => lines.push(line) });
  const rand = prng(seed);
  const model = Buffer.alloc(size);
  const jobs: Promise<void>[] = [];
  for (let i = 0; i < 64; i++) {
    // Disjoint block-aligned slots so concurrent writes never overlap: the model stays exact.
    const slot = i * (size / 64);
    const length = randomInt(rand, 1, size / 64 - 512);
    const position = slot + randomInt(rand, 0, 511);
    const data = randomBytes(rand, length);
    data.copy(model, position);
    jobs.push(
      dev.write(data, position).then(async () => {
        const back = await dev.read(position, length);
        assert.ok(back.equals(data), `slot ${i}`);
      }),
    );
  }
  await Promise.all(jobs);
  await dev.flush();
  assert.ok(readFileSync(imagePath).equals(model), 'raw file differs from the model');
  const stats = dev.stats;
  await dev.close();
  return { stats, lines };
}

for (const kind of PEERS) {
  describe(`against ${kind}`, () => {
    test('without EVENT_IDX the flag-based rules apply, and I/O verifies', async () => {
      const size = 4 * 1024 * 1024;
      const qsd = await startPeer(kind, { size });
      try {
        const { lines } = await exercise(
          qsd.socketPath,
          qsd.imagePath,
          size,
          { disableFeatures: { eventIdx: true } },
          1,
        );
        const value = negotiatedFeatures(lines);
        assert.equal(value & (1n << 29n), 0n, 'EVENT_IDX must not be negotiated');
        assert.notEqual(value & (1n << 28n), 0n, 'INDIRECT_DESC still negotiated');
      } finally {
        await qsd.stop();
      }
    });

    test('without INDIRECT_DESC chains use ring descriptors, and I/O verifies', async () => {
      const size = 4 * 1024 * 1024;
      const qsd = await startPeer(kind, { size });
      try {
        const { lines } = await exercise(
          qsd.socketPath,
          qsd.imagePath,
          size,
          { disableFeatures: { indirect: true }, queueSize: 16 },
          2,
        );
        const value = negotiatedFeatures(lines);
        assert.equal(value & (1n << 28n), 0n);
      } finally {
        await qsd.stop();
      }
    });

    test('without REPLY_ACK nothing asks for acks and a GET_FEATURES round trip follows the setup', async () => {
      const size = 4 * 1024 * 1024;
      const qsd = await startPeer(kind, { size });
      try {
        const { lines } = await exercise(
          qsd.socketPath,
          qsd.imagePath,
          size,
          { disableFeatures: { replyAck: true } },
          3,
        );
        const sent = lines.filter((l) => l.includes(' -> '));
        assert.ok(
          sent.every((l) => !l.includes('NEED_REPLY')),
          'no request may carry NEED_REPLY',
        );
        const lastKick = sent.findIndex((l) => l.includes('SET_VRING_ENABLE'));
        assert.ok(lastKick > 0);
        assert.ok(
          sent[lastKick + 1]!.includes('VHOST_USER_GET_FEATURES'),
          `after setup: ${sent[lastKick + 1]}`,
        );
      } finally {
        await qsd.stop();
      }
    });

    test('several request queues (MQ) share the load and verify', async () => {
      const size = 4 * 1024 * 1024;
      const qsd = await startPeer(kind, { size, queues: 4 });
      try {
        const { lines } = await exercise(qsd.socketPath, qsd.imagePath, size, { queues: 4 }, 4);
        for (let q = 0; q < 4; q++) {
          assert.ok(
            lines.some(
              (l) => l.includes(`-> VHOST_USER_SET_VRING_KICK`) && l.includes(`index=${q}`),
            ),
            `queue ${q}`,
          );
        }
        await assert.rejects(openBlockDevice(qsd.socketPath, { queues: 5 }), {
          code: 'VHOST_USER_ERR_INVALID_ARGUMENT',
        });
      } finally {
        await qsd.stop();
      }
    });

    test('memory from a hugetlbfs file works like memfd memory', async () => {
      const mount = '/dev/hugepages';
      const mounts = readFileSync('/proc/mounts', 'utf8');
      const nrPath = '/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages';
      const previous = readFileSync(nrPath, 'utf8').trim();
      let mountedHere = false;
      let qsd: Awaited<ReturnType<typeof startPeer>> | undefined;
      try {
        if (
          !mounts
            .split('\n')
            .some((l) => l.split(' ')[1] === mount && l.split(' ')[2] === 'hugetlbfs')
        ) {
          if (!existsSync(mount)) mkdirSync(mount);
          execFileSync('mount', ['-t', 'hugetlbfs', 'none', mount]);
          mountedHere = true;
        }
        writeFileSync(nrPath, String(Number(previous) + 16));
        const size = 2 * 1024 * 1024;
        qsd = await startPeer(kind, { size });
        await exercise(
          qsd.socketPath,
          qsd.imagePath,
          size,
          { hugepages: '2M', hugetlbfsPath: mount, memorySize: 4 * 1024 * 1024 },
          5,
        );
      } finally {
        await qsd?.stop();
        writeFileSync(nrPath, previous);
        if (mountedHere) execFileSync('umount', [mount]);
      }
    });
  });
}
