import {
  InvalidArgumentError,
  openDevice,
  type BlockDevice,
  type ScsiOpenOptions,
} from '../index.js';
import { flag, stringOption, type OptionValues } from './args.js';
import { UsageError } from './errors.js';
import { parseCount } from './size.js';

/** Open options with the device type: what the common device flags describe. */
export type DeviceArgs = ScsiOpenOptions & { type: 'blk' | 'scsi' };

/**
 * The common device options (--type, --target, --lun, --trace, --queue-size, --hugepages,
 * --timeout) over
 * `extra`, checked.
 */
export function deviceArgs(values: OptionValues, extra: ScsiOpenOptions = {}): DeviceArgs {
  const options: ScsiOpenOptions = { ...extra };
  const type = stringOption(values, 'type') ?? 'blk';
  if (type !== 'blk' && type !== 'scsi') {
    throw new UsageError(`--type must be blk or scsi, got ${type}`);
  }
  for (const key of ['target', 'lun'] as const) {
    const value = stringOption(values, key);
    if (value === undefined) continue;
    if (type !== 'scsi') throw new UsageError(`--${key} needs --type scsi`);
    options[key] = parseCount(value, `--${key}`, 0);
  }
  // Without --trace, DEBUG=vhost-user still applies (the library reads it when trace is unset).
  if (flag(values, 'trace')) options.trace = true;
  const queueSize = stringOption(values, 'queue-size');
  if (queueSize !== undefined) {
    const n = parseCount(queueSize, '--queue-size', 4, 32768);
    if ((n & (n - 1)) !== 0) throw new UsageError(`--queue-size must be a power of two, got ${n}`);
    options.queueSize = n;
  }
  const hugepages = stringOption(values, 'hugepages');
  if (hugepages !== undefined) {
    if (hugepages !== '2M' && hugepages !== '1G') {
      throw new UsageError(`--hugepages must be 2M or 1G, got ${hugepages}`);
    }
    options.hugepages = hugepages;
  }
  const timeout = stringOption(values, 'timeout');
  if (timeout !== undefined) options.timeout = parseCount(timeout, '--timeout');
  return { ...options, type };
}

/**
 * Opens the device the common options describe. Options the library or the device refuses at
 * open (InvalidArgumentError: more queues than the device has...) are usage errors.
 */
export async function openFromArgs(
  socketPath: string,
  values: OptionValues,
  extra: ScsiOpenOptions = {},
): Promise<BlockDevice> {
  try {
    return await openDevice(socketPath, deviceArgs(values, extra));
  } catch (err) {
    throw asUsageError(err);
  }
}

/** An InvalidArgumentError (bad open options) as a UsageError; anything else as it is. */
export function asUsageError(err: unknown): unknown {
  return err instanceof InvalidArgumentError ? new UsageError(err.message) : err;
}

/** Runs `body` on an open device and always closes it, keeping body's error over close's. */
export async function withDevice<T>(
  socketPath: string,
  values: OptionValues,
  body: (dev: BlockDevice) => Promise<T>,
  extra: ScsiOpenOptions = {},
): Promise<T> {
  const dev = await openFromArgs(socketPath, values, extra);
  // A backend dying while idle is reported by the next call; the listener keeps it from crashing us.
  dev.on('error', () => {});
  try {
    return await body(dev);
  } finally {
    await dev.close().catch(() => {});
  }
}
