// The bare closed loop of `bench-ab.mjs --plain`: `o.iodepth` loops of `readInto` at random
// aligned offsets, no histogram, no pacing. A module of its own so that each arm of a paired
// run can import its own instance (arm-copies.mjs).
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { pathToFileURL } from 'node:url';

/** One run against `dist` (a build's dist/): { iops, p50: NaN, cpuPerIo, callsPerIo }. */
export async function plainRun(dist, socket, mode, o, options, seed) {
  const { openBlockDevice } = await import(pathToFileURL(join(dist, 'src', 'index.js')).href);
  const dev = await openBlockDevice(socket, {
    ...o.open,
    completion: mode,
    ...(options ? { completionOptions: options } : {}),
  });
  try {
    const blocks = Math.floor(Math.min(dev.size, 1 << 30) / o.bs);
    let measuring = false;
    let ios = 0;
    const loop = async (i, end) => {
      const buf = dev.allocBuffer(o.bs);
      let block = (seed * 7919 + i * 104729) % blocks;
      while (performance.now() < end) {
        block = (block + 7919) % blocks;
        await dev.readInto(buf, block * o.bs);
        if (measuring) ios++;
      }
    };
    const run = (ms) => {
      const end = performance.now() + ms;
      return Promise.all(Array.from({ length: o.iodepth }, (_, i) => loop(i, end)));
    };
    await run(o.ramp * 1000);
    const calls0 = dev.stats.calls;
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    measuring = true;
    await run(o.seconds * 1000);
    const elapsed = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    return {
      iops: ios / elapsed,
      p50: NaN,
      cpuPerIo: (cpu.user + cpu.system) / Math.max(1, ios),
      callsPerIo: (dev.stats.calls - calls0) / Math.max(1, ios),
    };
  } finally {
    await dev.close();
  }
}
