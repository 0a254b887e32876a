/**
 * LUN scan and identification against a scripted SCSI target: which commands the driver falls
 * back to, and which limits it derives, for targets unlike the embedded one (no 16-byte
 * commands, no VPD pages, LUNs that are not disks, tight block limits).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { identifyScsi, type ScsiCommandRunner } from '../../src/devices/scsi/identify.js';
import { ScsiOp, SAI_READ_CAPACITY_16, MAX_BLOCKS_10 } from '../../src/devices/scsi/cdb.js';
import {
  encodeBlockLimits,
  encodeModeSense,
  encodeProvisioning,
  encodeReadCapacity10,
  encodeReadCapacity16,
  encodeReportLuns,
  encodeStandardInquiry,
  encodeVpdPage,
  VpdPage,
} from '../../src/devices/scsi/data.js';
import { encodeFixedSense, SenseKey, decodeSense } from '../../src/devices/scsi/sense.js';
import { ScsiSenseError, UnsupportedError, VirtioScsiResponseError } from '../../src/errors.js';
import { VirtioScsiResponse } from '../../src/devices/scsi/spec.js';

interface FakeLun {
  deviceType: number;
  blocks: number;
  blockSize: number;
  rc16: boolean;
  vpd: Map<number, Uint8Array> | undefined;
  modeSense10: boolean;
  writeProtect: boolean;
  /** The LUN has a caching mode page (else asking for page 0x08 alone is refused). */
  cachingPage: boolean;
}

const BASE_OPTIONS = {
  target: undefined,
  lun: undefined,
  scanAll: false,
  maxTarget: 7,
  maxLun: 255,
  maxTransferBytes: 0xffff * 512,
  maxSegments: 126,
};

function illegal(asc: number): ScsiSenseError {
  return new ScsiSenseError(
    'scsiCommand',
    decodeSense(encodeFixedSense(SenseKey.ILLEGAL_REQUEST, asc, 0))!,
  );
}

/** A target map: target -> lun -> LUN; missing targets answer BAD_TARGET. */
function fakeTarget(
  targets: Map<number, Map<number, FakeLun>>,
  log: string[] = [],
): ScsiCommandRunner {
  return (cdb, o) => {
    const target = o.target!;
    const lun = o.lun!;
    const name = Object.entries(ScsiOp).find(([, v]) => v === cdb[0])?.[0] ?? String(cdb[0]);
    log.push(`${target}:${lun} ${name}${cdb[0] === ScsiOp.INQUIRY && cdb[1] ? ` ${cdb[2]}` : ''}`);
    const luns = targets.get(target);
    if (luns === undefined) {
      return Promise.reject(
        new VirtioScsiResponseError(
          'scsiCommand',
          VirtioScsiResponse.VIRTIO_SCSI_S_BAD_TARGET,
          'BAD_TARGET',
        ),
      );
    }
    const reply = (bytes: Uint8Array): Promise<{ data: Buffer; status: number }> =>
      Promise.resolve({ data: Buffer.from(bytes.subarray(0, o.dataIn ?? 0)), status: 0 });
    if (cdb[0] === ScsiOp.REPORT_LUNS) return reply(encodeReportLuns([...luns.keys()]));
    const unit = luns.get(lun);
    if (unit === undefined) {
      if (cdb[0] === ScsiOp.INQUIRY && !cdb[1]) return reply(Uint8Array.of(0x7f, 0, 0, 0, 0));
      return Promise.reject(illegal(0x25));
    }
    switch (cdb[0]) {
      case ScsiOp.INQUIRY: {
        if (!cdb[1]) {
          return reply(
            encodeStandardInquiry({
              deviceType: unit.deviceType,
              vendor: 'FAKE',
              product: `LUN${lun}`,
              revision: '1',
            }),
          );
        }
        const page = unit.vpd?.get(cdb[2]!);
        return page === undefined ? Promise.reject(illegal(0x24)) : reply(page);
      }
      case ScsiOp.TEST_UNIT_READY:
        return reply(new Uint8Array(0));
      case ScsiOp.SERVICE_ACTION_IN_16:
        assert.equal(cdb[1], SAI_READ_CAPACITY_16);
        return unit.rc16
          ? reply(
              encodeReadCapacity16({
                blocks: unit.blocks,
                blockLength: unit.blockSize,
                provisioning: true,
                readsZeroes: true,
              }),
            )
          : Promise.reject(illegal(0x20));
      case ScsiOp.READ_CAPACITY_10:
        return reply(encodeReadCapacity10(unit.blocks, unit.blockSize));
      case ScsiOp.MODE_SENSE_10:
      case ScsiOp.MODE_SENSE_6: {
        const ten = cdb[0] === ScsiOp.MODE_SENSE_10;
        if (ten && !unit.modeSense10) return Promise.reject(illegal(0x20));
        const page = cdb[2]! & 0x3f;
        if (page === 0x08 && !unit.cachingPage) return Promise.reject(illegal(0x24));
        log.push(`  mode page ${page}`);
        const cache = unit.cachingPage ? ten : undefined;
        return reply(encodeModeSense(ten, unit.writeProtect, cache));
      }
      default:
        return Promise.reject(illegal(0x20));
    }
  };
}

function disk(overrides: Partial<FakeLun> = {}): FakeLun {
  return {
    deviceType: 0,
    blocks: 2048,
    blockSize: 512,
    rc16: true,
    vpd: undefined,
    modeSense10: true,
    writeProtect: false,
    cachingPage: true,
    ...overrides,
  };
}

test('the scan skips missing targets and non-disk LUNs and opens the first disk', async () => {
  const log: string[] = [];
  const run = fakeTarget(
    new Map([
      [
        2,
        new Map([
          [0, disk({ deviceType: 5 })],
          [3, disk({ blocks: 4096 })],
        ]),
      ],
      [4, new Map([[0, disk()]])],
    ]),
    log,
  );
  const id = await identifyScsi(run, BASE_OPTIONS);
  assert.equal(id.target, 2);
  assert.equal(id.lun, 3);
  assert.equal(id.limits.capacity, 4096 * 512);
  assert.deepEqual(
    id.info.luns.map((l) => [l.target, l.lun, l.deviceType, l.product]),
    [
      [2, 0, 5, 'LUN0'],
      [2, 3, 0, 'LUN3'],
    ],
  );
  // Stopped at the first disk: target 4 was never asked.
  assert.ok(!log.some((l) => l.startsWith('4:')));
  const all = await identifyScsi(run, { ...BASE_OPTIONS, scanAll: true });
  assert.deepEqual(
    all.info.luns.map((l) => [l.target, l.lun]),
    [
      [2, 0],
      [2, 3],
      [4, 0],
    ],
  );
});

test('no READ CAPACITY(16): 10-byte commands, and no command longer than 65,535 blocks', async () => {
  const run = fakeTarget(new Map([[0, new Map([[0, disk({ rc16: false, blocks: 1 << 20 })]])]]));
  const id = await identifyScsi(run, { ...BASE_OPTIONS, maxTransferBytes: Infinity });
  assert.equal(id.settings.use16, false);
  assert.equal(id.info.commands16, false);
  assert.equal(id.limits.capacity, (1 << 20) * 512);
  assert.equal(id.limits.maxTransferBytes, MAX_BLOCKS_10 * 512);
  // WRITE SAME(16) needs the 16-byte command set.
  assert.equal(id.limits.canWriteZeroes, false);
});

test('a LUN too large for READ CAPACITY(10) without (16) cannot be opened', async () => {
  const run = fakeTarget(new Map([[0, new Map([[0, disk({ rc16: false, blocks: 2 ** 33 })]])]]));
  await assert.rejects(identifyScsi(run, BASE_OPTIONS), UnsupportedError);
});

test('VPD pages set the id and the limits; without them the LUN gets safe defaults', async () => {
  const vpd = new Map<number, Uint8Array>([
    [VpdPage.SUPPORTED_PAGES, encodeVpdPage(0, Uint8Array.of(0x00, 0x80, 0xb0, 0xb2))],
    [VpdPage.UNIT_SERIAL_NUMBER, encodeVpdPage(0x80, Buffer.from('SER-1   '))],
    [
      VpdPage.BLOCK_LIMITS,
      encodeBlockLimits({
        maxTransferBlocks: 128,
        optimalTransferBlocks: 8,
        maxUnmapBlocks: 1024,
        maxUnmapDescriptors: 1,
        optimalUnmapGranularity: 8,
        maxWriteSameBlocks: 4096,
      }),
    ],
    [
      VpdPage.LOGICAL_BLOCK_PROVISIONING,
      encodeProvisioning({ unmap: true, writeSameUnmap: true, readsZeroes: true }),
    ],
  ]);
  const run = fakeTarget(
    new Map([[0, new Map([[0, disk({ vpd, blockSize: 4096, blocks: 1000 })]])]]),
  );
  const id = await identifyScsi(run, BASE_OPTIONS);
  assert.equal(id.info.id, 'SER-1');
  assert.equal(id.limits.blockSize, 4096);
  assert.equal(id.limits.maxTransferBytes, 128 * 4096);
  assert.equal(id.limits.canDiscard, true);
  assert.equal(id.limits.maxDiscardBytes, 1024 * 4096);
  assert.equal(id.limits.canWriteZeroes, true);
  assert.equal(id.limits.maxWriteZeroesBytes, 4096 * 4096);
  assert.equal(id.settings.discardWithUnmap, true);
  assert.equal(id.settings.zeroesByUnmap, true, 'LBPWS with LBPRZ: write-zeroes may deallocate');
  assert.equal(id.info.writeCache, 'writeback');

  const bare = fakeTarget(
    new Map([[0, new Map([[0, disk({ modeSense10: false, writeProtect: true })]])]]),
  );
  const plain = await identifyScsi(bare, BASE_OPTIONS);
  assert.equal(plain.info.id, '');
  assert.equal(plain.limits.canDiscard, false);
  assert.equal(plain.limits.canWriteZeroes, false);
  assert.equal(plain.limits.readOnly, true, 'WP from MODE SENSE(6) after (10) was refused');
  assert.equal(plain.info.writeCache, 'writethrough');
});

test('an address with nothing behind it is UnsupportedError naming it', async () => {
  const run = fakeTarget(new Map([[0, new Map([[0, disk()]])]]));
  await assert.rejects(identifyScsi(run, { ...BASE_OPTIONS, target: 0, lun: 9 }), /target 0 LUN 9/);
  await assert.rejects(identifyScsi(run, { ...BASE_OPTIONS, target: 1, lun: 0 }), UnsupportedError);
});

test('the write-protect bit is read even from a LUN without a caching mode page', async () => {
  const log: string[] = [];
  const run = fakeTarget(
    new Map([[0, new Map([[0, disk({ cachingPage: false, writeProtect: true })]])]]),
    log,
  );
  const id = await identifyScsi(run, BASE_OPTIONS);
  assert.equal(id.limits.readOnly, true);
  assert.equal(id.info.writeCache, 'unknown');
  // All pages (0x3f) first, as Linux's sd asks.
  assert.ok(log.includes('  mode page 63'));
});

test('a scan that finds no disk says what it did find', async () => {
  const run = fakeTarget(new Map([[3, new Map([[1, disk({ deviceType: 5 })]])]]));
  await assert.rejects(identifyScsi(run, { ...BASE_OPTIONS, scanAll: true }), (err: Error) => {
    assert.ok(err instanceof UnsupportedError);
    assert.match(err.message, /target 3 lun 1: type 0x5 LUN1/);
    return true;
  });
});
