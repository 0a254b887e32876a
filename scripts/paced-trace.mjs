#!/usr/bin/env node
// CPU per I/O of a paced load as an application's process sees it, and what the adaptive
// controller decides there: two 4 KiB reads after each timer of 1 ms (about 1,500 IOPS here,
// since a timer lasts more than its 1 ms; `bench --rate_iops 2000` instead sets each read's due
// time and catches up), measured from --warm-ms after the device opened to --seconds, on a daemon
// already running at SOCKET. With MODE adaptive it prints the budgets decided, the hits and
// misses, and the resumes the controller was told over that span (a spy on its prototype), and
// when its trials began and ended (from the device's opening, the first --warm-ms included).
// --rate IOPS paces as `bench --rate_iops` does instead (the library's runBench at depth 1, its
// ramp --warm-ms; each read due at start + n / rate, a late timer's reads issued back to back),
// and prints the interrupts (calls) per I/O too.
//
//   npm run build && taskset -c 1 node scripts/paced-trace.mjs SOCKET [--mode adaptive|event|...]
//     [--seconds 3] [--warm-ms 500] [--rate 0]
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { setTimeout } from 'node:timers';
import { setTimeout as sleep } from 'node:timers/promises';
import { distUrl } from './lib/dist.mjs';
import { parseScriptOptions } from './lib/script-options.mjs';

const { options, positionals } = parseScriptOptions(process.argv.slice(2), {
  mode: 'adaptive',
  seconds: 3,
  warmMs: 500,
  rate: 0,
});
const [socket] = positionals;
if (!socket)
  throw new Error(
    'usage: paced-trace.mjs SOCKET [--mode M] [--seconds S] [--warm-ms MS] [--rate IOPS]',
  );
const { openBlockDevice } = await import(distUrl('index.js'));
const { AdaptiveController } = await import(distUrl('completion/adaptive-controller.js'));

const proto = AdaptiveController.prototype;
const { startWait, hit, miss, resumed } = proto;
const budgets = [];
const hits = [];
const misses = [];
const idles = [];
let recording = false;
// When each trial began and ended (ms from the device's opening).
const trialsAt = [];
const trialsEndedAt = [];
let trialsSeen = 0;
let wasInTrial = false;
let t0 = performance.now();
proto.startWait = function (inFlight, nowNs) {
  const budget = startWait.call(this, inFlight, nowNs);
  if (recording) budgets.push(budget);
  if (this.trials !== trialsSeen) {
    trialsSeen = this.trials;
    trialsAt.push(Math.round(performance.now() - t0));
  }
  if (wasInTrial && !this.inTrial) trialsEndedAt.push(Math.round(performance.now() - t0));
  wasInTrial = this.inTrial;
  return budget;
};
proto.hit = function (waitNs) {
  if (recording) hits.push(waitNs);
  return hit.call(this, waitNs);
};
proto.miss = function (spunNs, waitedNs) {
  if (recording) misses.push(waitedNs);
  return miss.call(this, spunNs, waitedNs);
};
proto.resumed = function (idleNs, busyNs) {
  if (recording) idles.push(idleNs);
  return resumed.call(this, idleNs, busyNs);
};

let ios = 0;
let cpuPerIo;
let userPerIo;
let systemPerIo;
let callsPerIo;
if (options.rate > 0) {
  const { runBench } = await import(distUrl('bench/index.js'));
  const r = await runBench({
    socket,
    rw: 'randread',
    bs: 4096,
    iodepth: 1,
    runtime: options.seconds - options.warmMs / 1000,
    ramp_time: options.warmMs / 1000,
    completion: options.mode,
    rate_iops: options.rate,
    opened: () => {
      t0 = performance.now();
      setTimeout(() => (recording = true), options.warmMs);
    },
  });
  callsPerIo = r.deviceStats.calls / Math.max(1, r.deviceStats.requests);
  ios = r.total.ios;
  cpuPerIo = r.cpu.perIo;
  userPerIo = r.cpu.user / ios; // µs, as process.cpuUsage()
  systemPerIo = r.cpu.system / ios;
} else {
  const dev = await openBlockDevice(socket, { completion: options.mode });
  const buf = dev.allocBuffer(4096);
  t0 = performance.now();
  let cpu0;
  while (performance.now() - t0 < options.seconds * 1000) {
    if (!recording && performance.now() - t0 >= options.warmMs) {
      recording = true;
      cpu0 = process.cpuUsage();
      ios = 0;
    }
    await sleep(1);
    for (let k = 0; k < 2; k++) {
      await dev.readInto(buf, ((ios * 7919) % 200_000) * 4096);
      ios++;
    }
  }
  const cpu = process.cpuUsage(cpu0);
  await dev.close();
  cpuPerIo = (cpu.user + cpu.system) / ios;
  userPerIo = cpu.user / ios;
  systemPerIo = cpu.system / ios;
}

const at = (values, p) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
};
const us = (n) => n.toFixed(1);
process.stdout.write(
  `${options.mode}: ${ios} I/Os (${Math.round(ios / (options.seconds - options.warmMs / 1000))} IOPS), CPU per I/O ${us(cpuPerIo)} µs (user ${us(userPerIo)}, system ${us(systemPerIo)})${callsPerIo === undefined ? '' : `, calls per I/O ${callsPerIo.toFixed(3)}`}\n`,
);
if (options.mode === 'adaptive') {
  process.stdout.write(
    `waits decided ${budgets.length}: blocked at once ${budgets.filter((b) => b === 0).length}, budget p90 ${at(budgets, 0.9)} ns; hits ${hits.length} (p50 ${at(hits, 0.5)} ns), misses ${misses.length} (waited p50 ${at(misses, 0.5)} ns); resumes told ${idles.length} (idle p50 ${at(idles, 0.5)} ns); trials began at ${trialsAt.join(', ') || 'none'} ms, ended at ${trialsEndedAt.join(', ') || 'none'} ms\n`,
  );
}
