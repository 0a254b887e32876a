import type { BlockDevice } from '../index.js';
import { protocolFeatureNames } from '../protocol/messages.js';
import { expectPositionals, flag, type CommandSpec, type ParsedArgs } from './args.js';
import { withDevice } from './device.js';
import { printFields, printJson, wrapList } from './output.js';
import { formatSize } from './size.js';

export const spec: CommandSpec = {
  name: 'info',
  usage: '<socket> [options]',
  summary:
    'Connect to a vhost-user-blk backend (or with --type scsi a vhost-user-scsi controller), ' +
    'negotiate, and show the device: features (offered and negotiated), protocol features, ' +
    'config space, queues, geometry; for scsi also every target and LUN the scan finds.',
  options: {},
  json: true,
  device: true,
};

/** Everything `info` reports, as plain data (bigint masks stay bigints until printed). */
export function describeDevice(dev: BlockDevice): Record<string, unknown> {
  const info = dev.info;
  return {
    socketPath: info.socketPath,
    type: info.type,
    size: dev.size,
    blockSize: dev.blockSize,
    readOnly: dev.readOnly,
    writeCache: info.writeCache,
    queues: info.queues,
    queueSize: info.queueSize,
    backendQueues: info.backendQueues ?? null,
    maxSegments: info.maxSegments,
    maxSegmentBytes: info.maxSegmentBytes,
    eventIdx: info.eventIdx,
    indirect: info.indirect,
    replyAck: info.replyAck,
    features: {
      offered: info.features.offered,
      negotiated: info.features.negotiated,
      offeredNames: info.features.offeredNames,
      names: info.features.names,
    },
    protocolFeatures: {
      offered: info.protocolFeatures.offered,
      negotiated: info.protocolFeatures.negotiated,
      offeredNames: protocolFeatureNames(info.protocolFeatures.offered),
      names: info.protocolFeatures.names,
    },
    config: info.config,
    ...(info.type === 'virtio-scsi'
      ? {
          scsi: {
            target: info.target,
            lun: info.lun,
            vendor: info.vendor,
            product: info.product,
            revision: info.revision,
            serial: info.serial ?? null,
            designator: info.designator ?? null,
            commands16: info.commands16,
            configSource: info.configSource,
            blockLimits: info.blockLimits ?? null,
            provisioning: info.provisioning ?? null,
            luns: info.luns,
          },
        }
      : {}),
  };
}

function scsiFields(dev: BlockDevice): [string, string | number][] {
  const info = dev.info;
  if (info.type !== 'virtio-scsi') return [];
  return [
    [
      'lun in use',
      `target ${info.target} lun ${info.lun}: ${info.vendor} ${info.product} ${info.revision}`,
    ],
    ['id', info.id || '(none)'],
    ['commands', info.commands16 ? 'READ(16)/WRITE(16)' : 'READ(10)/WRITE(10)'],
    ...info.luns.map((l): [string, string] => [
      `target ${l.target} lun ${l.lun}`,
      `type ${l.deviceType}${l.deviceType === 0 ? ' (disk)' : ''}, ${l.vendor} ${l.product} ${l.revision}`,
    ]),
  ];
}

export async function run({ values, positionals }: ParsedArgs): Promise<number> {
  expectPositionals(spec, positionals, 1);
  const scsi = values['type'] === 'scsi';
  await withDevice(
    positionals[0]!,
    values,
    async (dev) => {
      if (flag(values, 'json')) {
        printJson(describeDevice(dev));
        return;
      }
      const info = dev.info;
      const hex = (v: bigint): string => `0x${v.toString(16).padStart(16, '0')}`;
      const indent = 21;
      printFields([
        ['socket', info.socketPath],
        ['size', `${dev.size} bytes (${formatSize(dev.size)}), ${dev.size / dev.blockSize} blocks`],
        ['block size', dev.blockSize],
        ['read-only', dev.readOnly ? 'yes' : 'no'],
        ['write cache', info.writeCache],
        [
          'queues',
          `${info.queues} in use of ${info.backendQueues ?? info.config.numQueues ?? 1}, ` +
            `${info.queueSize} descriptors each`,
        ],
        [
          'segments',
          `up to ${info.maxSegments} per request, ` +
            `${Number.isFinite(info.maxSegmentBytes) ? `${info.maxSegmentBytes} bytes each` : 'no size limit'}`,
        ],
        [
          'ring',
          `event-idx ${info.eventIdx ? 'on' : 'off'}, indirect ${info.indirect ? 'on' : 'off'}, ` +
            `reply-ack ${info.replyAck ? 'on' : 'off'}`,
        ],
        ['features offered', `${hex(info.features.offered)}`],
        ['', wrapList(info.features.offeredNames, indent)],
        ['features negotiated', `${hex(info.features.negotiated)}`],
        ['', wrapList(info.features.names, indent)],
        ['protocol offered', `${hex(info.protocolFeatures.offered)}`],
        ['', wrapList(protocolFeatureNames(info.protocolFeatures.offered), indent)],
        ['protocol negotiated', `${hex(info.protocolFeatures.negotiated)}`],
        ['', wrapList(info.protocolFeatures.names, indent)],
        ...scsiFields(dev),
      ]);
      process.stdout.write('config space:\n');
      printFields(
        Object.entries(info.config).map(([key, value]) => [key, String(value)]),
        '  ',
      );
    },
    scsi ? { scanAll: true } : {},
  );
  return 0;
}
