// The stepping load of the benchmark scripts (runBench has one fixed depth): 4 KiB random reads
// from 32 workers, those above the current depth parked on a promise, the depth moving
// 1 → 32 → 1 → 32 every phase. Resolves one result object (whole run and per phase).
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import process from 'node:process';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join, resolve } from 'node:path';
import { pollingTurnStats } from './polling-stats.mjs';

export const STEPPING_SCHEDULE = [1, 32, 1, 32];

const OWN_DIST = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'src');

/**
 * `dist`: the dist/src directory of the build to load; `completionOptions`: passed to
 * openBlockDevice (e.g. { adaptive: {...} }), for A/B runs of the controller's knobs.
 */
export async function steppingRun(dist, socket, mode, phaseSeconds, completionOptions, open = {}) {
  const { openBlockDevice } = await import(pathToFileURL(join(dist, 'index.js')).href);
  // The measuring tool comes from this tree's build, whatever build is measured (`dist` may be
  // an older one, without it).
  const { watchGcPauses } = await import(pathToFileURL(join(OWN_DIST, 'bench', 'index.js')).href);
  const hdr = await import('hdr-histogram-js');
  const schedule = STEPPING_SCHEDULE;
  const dev = await openBlockDevice(socket, {
    ...open,
    completion: mode,
    ...(completionOptions ? { completionOptions } : {}),
  });
  dev.on('error', () => {});
  const blocks = Math.floor(dev.size / 4096);
  let depth = schedule[0];
  let wake = [];
  let stopped = false;
  // hdr histograms, WebAssembly build as runBench uses (recording never allocates, and costs
  // what it costs in the bench tables); freed at the end.
  await hdr.initWebAssembly();
  const histogram = () =>
    hdr.build({
      lowestDiscernibleValue: 1,
      highestTrackableValue: 3_600_000_000,
      numberOfSignificantValueDigits: 3,
      useWebAssembly: true,
    });
  const all = histogram();
  let n = 0;
  const perPhase = schedule.map(() => ({ ios: 0, hist: histogram() }));
  try {
    let phase = 0;
    let seed = 12345;
    const rand = () => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed / 4294967296;
    };
    const worker = async (i) => {
      const buf = dev.allocBuffer(4096);
      try {
        while (!stopped) {
          if (i >= depth) {
            await new Promise((r) => wake.push(r));
            continue;
          }
          const off = Math.floor(rand() * blocks) * 4096;
          const t0 = performance.now();
          await dev.readInto(buf, off);
          const ns = Math.max(1, Math.round((performance.now() - t0) * 1e6));
          if (stopped) break;
          n++;
          all.recordValue(ns);
          const p = perPhase[phase];
          p.ios++;
          p.hist.recordValue(ns);
        }
      } finally {
        if (!dev.closed) dev.freeBuffer(buf);
      }
    };
    const loop = monitorEventLoopDelay({ resolution: 1 });
    loop.enable();
    const gc = watchGcPauses();
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const workers = Array.from({ length: 32 }, (_, i) => worker(i));
    for (phase = 0; phase < schedule.length; phase++) {
      depth = schedule[phase];
      const w = wake;
      wake = [];
      for (const r of w) r();
      await sleep(phaseSeconds * 1000);
    }
    phase = schedule.length - 1;
    stopped = true;
    const seconds = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    loop.disable();
    gc.end();
    for (const r of wake) r();
    await Promise.all(workers);
    const stats = dev.stats;
    await dev.close();
    await gc.stop();
    const out = {
      iops: n / seconds,
      p50: all.getValueAtPercentile(50) / 1000,
      p99: all.getValueAtPercentile(99) / 1000,
      cpuPerIo: (cpu.user + cpu.system) / n,
      loopMaxMs: loop.max / 1e6,
      gcMaxMs: gc.pauses.longestNs / 1e6,
      ...pollingTurnStats(stats),
      phases: perPhase.map((p, i) => ({
        depth: schedule[i],
        iops: p.ios / phaseSeconds,
        p50: p.hist.getValueAtPercentile(50) / 1000,
      })),
      kicksPerIo: stats.kicks / n,
      aheadPerIo: (stats.kicksAhead ?? 0) / n,
      callsPerIo: stats.calls / n,
    };
    return out;
  } finally {
    all.destroy();
    for (const p of perPhase) p.hist.destroy();
  }
}
