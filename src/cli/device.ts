import { openBlockDevice, type BlockDevice, type OpenOptions } from '../index.js';
import { flag, stringOption, type OptionValues } from './args.js';
import { parseCount } from './size.js';

/** Opens the device with the common options (--trace, --queue-size, --timeout). */
export function openFromArgs(
  socketPath: string,
  values: OptionValues,
  extra: OpenOptions = {},
): Promise<BlockDevice> {
  const options: OpenOptions = { ...extra };
  // Without --trace, DEBUG=vhost-user still applies (the library reads it when trace is unset).
  if (flag(values, 'trace')) options.trace = true;
  const queueSize = stringOption(values, 'queue-size');
  if (queueSize !== undefined) options.queueSize = parseCount(queueSize, '--queue-size');
  const timeout = stringOption(values, 'timeout');
  if (timeout !== undefined) options.timeout = parseCount(timeout, '--timeout');
  return openBlockDevice(socketPath, options);
}

/** Runs `body` on an open device and always closes it, keeping body's error over close's. */
export async function withDevice<T>(
  socketPath: string,
  values: OptionValues,
  body: (dev: BlockDevice) => Promise<T>,
  extra: OpenOptions = {},
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
