#!/usr/bin/env node
// CPU per I/O of a paced load as an application's process sees it, and what the adaptive
// controller decides there: two 4 KiB reads after each timer of 1 ms (about 1,500 IOPS here,
// since a timer lasts more than its 1 ms; `bench --rate_iops 2000` instead sets each read's due
// time and catches up), measured from --warm-ms into the process to --seconds, on a daemon already
// running at SOCKET. With MODE adaptive it prints the budgets decided, the hits and misses, and
// the resumes the controller was told (a spy on its prototype).
//
//   npm run build && taskset -c 1 node scripts/paced-trace.mjs SOCKET [--mode adaptive|event|...]
//     [--seconds 3] [--warm-ms 500]
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseScriptOptions } from './lib/script-options.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dist = (path) => pathToFileURL(join(ROOT, 'dist', 'src', path)).href;
const { options, positionals } = parseScriptOptions(process.argv.slice(2), {
  mode: 'adaptive',
  seconds: 3,
  warmMs: 500,
});
const [socket] = positionals;
if (!socket)
  throw new Error('usage: paced-trace.mjs SOCKET [--mode M] [--seconds S] [--warm-ms MS]');
const { openBlockDevice } = await import(dist('index.js'));
const { AdaptiveController } = await import(dist('completion/adaptive-controller.js'));

const proto = AdaptiveController.prototype;
const { startWait, hit, miss, resumed } = proto;
const budgets = [];
const hits = [];
const misses = [];
const idles = [];
let recording = false;
proto.startWait = function (inFlight, nowNs) {
  const budget = startWait.call(this, inFlight, nowNs);
  if (recording) budgets.push(budget);
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

const dev = await openBlockDevice(socket, { completion: options.mode });
const buf = dev.allocBuffer(4096);
const t0 = performance.now();
let ios = 0;
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

const at = (values, p) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
};
const perIo = (us) => (us / ios).toFixed(1);
process.stdout.write(
  `${options.mode}: ${ios} I/Os (${Math.round(ios / (options.seconds - options.warmMs / 1000))} IOPS), CPU per I/O ${perIo(cpu.user + cpu.system)} µs (user ${perIo(cpu.user)}, system ${perIo(cpu.system)})\n`,
);
if (options.mode === 'adaptive') {
  process.stdout.write(
    `waits decided ${budgets.length}: blocked at once ${budgets.filter((b) => b === 0).length}, budget p90 ${at(budgets, 0.9)} ns; hits ${hits.length} (p50 ${at(hits, 0.5)} ns), misses ${misses.length} (waited p50 ${at(misses, 0.5)} ns); resumes told ${idles.length} (idle p50 ${at(idles, 0.5)} ns)\n`,
  );
}
