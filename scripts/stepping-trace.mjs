#!/usr/bin/env node
// What the adaptive controller sees and does on a stepping load, against what poll does: closed
// loops of 4 KiB `readInto` at depth 1, 32, 1, 32 (--phase-ms each, random 4 KiB-aligned offsets
// in the first GiB) on a daemon already running at SOCKET. Prints, per phase, the IOPS, the kicks
// and kicks ahead and interrupts (calls) per I/O from the device's stats, and with MODE adaptive
// the waits decided (blocked at once / a budget below the longest spin / the longest spin), the
// hits and misses it was told (a miss is a wait that ended blocked), its preemption readings per
// wait, and when it judged the CPU shared (a spy on its prototype).
//
//   npm run build && taskset -c 1 node scripts/stepping-trace.mjs SOCKET [--mode adaptive|poll|...]
//     [--phase-ms 1500]
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { distUrl } from './lib/dist.mjs';
import { parseScriptOptions } from './lib/script-options.mjs';

const { options, positionals } = parseScriptOptions(process.argv.slice(2), {
  mode: 'adaptive',
  phaseMs: 1500,
});
const [socket] = positionals;
if (!socket) throw new Error('usage: stepping-trace.mjs SOCKET [--mode M] [--phase-ms MS]');
const { openBlockDevice } = await import(distUrl('index.js'));
const { AdaptiveController } = await import(distUrl('completion/adaptive-controller.js'));

const DEPTHS = [1, 32, 1, 32];
const phases = DEPTHS.map((depth) => ({
  depth,
  ios: 0,
  waits: [0, 0, 0],
  hits: 0,
  misses: 0,
  preemptions: [],
  stats: '',
}));
let phase = phases[0];
let t0 = performance.now();
const sharedFlips = [];
const proto = AdaptiveController.prototype;
const { preempted, startWait, hit, miss } = proto;
proto.startWait = function (inFlight, nowNs) {
  const budget = startWait.call(this, inFlight, nowNs);
  phase.waits[budget === 0 ? 0 : budget < this.maxSpinNs ? 1 : 2]++;
  return budget;
};
proto.hit = function (waitNs) {
  phase.hits++;
  return hit.call(this, waitNs);
};
proto.miss = function (spunNs, waitedNs) {
  phase.misses++;
  return miss.call(this, spunNs, waitedNs);
};
proto.preempted = function (perWait) {
  const was = this.cpuShared;
  preempted.call(this, perWait);
  phase.preemptions.push(perWait);
  if (this.cpuShared !== was) {
    sharedFlips.push(`${Math.round(performance.now() - t0)} ms: ${this.cpuShared}`);
  }
};

const dev = await openBlockDevice(socket, { completion: options.mode });
const buffers = Array.from({ length: Math.max(...DEPTHS) }, () => dev.allocBuffer(4096));
t0 = performance.now();
for (const p of phases) {
  phase = p;
  const before = { ...dev.stats };
  const end = performance.now() + options.phaseMs;
  await Promise.all(
    buffers.slice(0, p.depth).map(async (buffer) => {
      while (performance.now() < end) {
        await dev.readInto(buffer, Math.floor(Math.random() * 262_144) * 4096);
        p.ios++;
      }
    }),
  );
  const s = dev.stats;
  const per = (key) => (s[key] - before[key]) / p.ios;
  p.stats = `kicks ${per('kicks').toFixed(2)} (${per('kicksAhead').toFixed(2)} ahead), calls ${per('calls').toFixed(3)}`;
}
await dev.close();

const at = (values, q) => {
  if (values.length === 0) return '-';
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(q * (sorted.length - 1))].toFixed(3);
};
const seconds = options.phaseMs / 1000;
for (const p of phases) {
  let line = `depth ${p.depth}: ${Math.round(p.ios / seconds)} IOPS, per I/O ${p.stats}`;
  if (options.mode === 'adaptive') {
    line +=
      `; waits decided ${p.waits.join(' / ')} (blocked at once / below the longest spin / the longest)` +
      `, hits ${p.hits}, misses ${p.misses}; preemptions per wait: ${p.preemptions.length} readings, p50 ${at(p.preemptions, 0.5)}, max ${at(p.preemptions, 1)}`;
  }
  process.stdout.write(`${line}\n`);
}
if (options.mode === 'adaptive') {
  process.stdout.write(`CPU judged shared: ${sharedFlips.join(', ') || 'never'}\n`);
}
