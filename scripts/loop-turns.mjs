#!/usr/bin/env node
// How long the event loop's turns take while a completion strategy polls: a probe runs once per
// loop iteration (setImmediate, the phase the polling turns run in) and records the time between
// its runs, while closed loops of 4 KiB reads keep requests in flight. A slow device (a throttle
// group, 2 ms between completions at the default 500 IOPS) makes every polling turn spin or
// sleep in full, which is where an option's cap shows. Beside the gaps: the longest GC pause,
// and the polling turns of 1 ms or more as the loop saw them and as they held it themselves
// (the device's stats). Prints one line per configuration and round (the order rotates).
//
//   npm run build && node scripts/loop-turns.mjs [--backend throttle|null|file]
//     [--throttle-iops 500] [--depth 1] [--seconds 1.5] [--rounds 1] [--qsd-cpu 0] [--fe-cpu 1]
//     [NAME=MODE[:JSON] ...]     JSON: completionOptions, e.g. 'slice=poll:{"spinSliceNs":700000}'
//   --fe-cpu takes a taskset list too (0,1: the frontend may use both CPUs).
import { spawnSync } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { pollingTurnStats } from './lib/polling-stats.mjs';
import { withQsd } from './lib/qsd.mjs';
import { readLoops } from './lib/read-loops.mjs';
import { parseConfig, parseScriptOptions } from './lib/script-options.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SELF = fileURLToPath(import.meta.url);

function parseArgs(argv) {
  const { options, positionals } = parseScriptOptions(argv, {
    backend: 'throttle',
    throttleIops: 500,
    depth: 1,
    seconds: 1.5,
    rounds: 1,
    qsdCpu: 0,
    feCpu: '1',
  });
  const o = { ...options, configs: positionals };
  if (o.configs.length === 0) {
    o.configs = [
      'poll=poll',
      'sleep-poll=sleep-poll',
      'adaptive=adaptive',
      'poll-cap=poll:{"spinSliceNs":700000}',
      'sleep-poll-cap=sleep-poll:{"sleepIntervalNs":700000}',
    ];
  }
  return o;
}

async function child(socket, o) {
  const load = (path) => import(pathToFileURL(join(ROOT, 'dist', ...path)).href);
  const lib = {
    ...(await load(['src', 'index.js'])),
    ...(await load(['src', 'bench', 'index.js'])),
    ...(await load(['test', 'helpers', 'loop-gaps.js'])),
  };
  const configs = o.configs.map(parseConfig);
  for (let round = 0; round < o.rounds; round++) {
    const shift = round % configs.length;
    for (const config of [...configs.slice(shift), ...configs.slice(0, shift)]) {
      await measure(socket, o, config, lib);
    }
  }
}

async function measure(socket, o, { name, mode, options }, lib) {
  const { openBlockDevice, watchGcPauses, loopGaps } = lib;
  const dev = await openBlockDevice(socket, {
    completion: mode,
    ...(options ? { completionOptions: options } : {}),
  });
  try {
    const end = performance.now() + o.seconds * 1000;
    const work = readLoops(dev, o.depth, end);
    const gc = watchGcPauses();
    const gaps = await loopGaps(work);
    const ios = await work;
    gc.end();
    await gc.stop();
    const st = dev.stats;
    const turns = pollingTurnStats(st);
    const q = (p) => gaps[Math.min(gaps.length - 1, Math.floor(gaps.length * p))].toFixed(3);
    const over = gaps.filter((g) => g >= 1).length;
    process.stdout.write(
      `| ${name} | ${ios} | ${gaps.length} | ${q(0.5)} | ${q(0.9)} | ${q(0.99)} | ${q(0.999)} | ` +
        `${gaps.at(-1).toFixed(2)} | ${over} (${((over / gaps.length) * 100).toFixed(2)}%) | ` +
        `${(gc.pauses.longestNs / 1e6).toFixed(2)} | ${st.pollingTurns} | ` +
        `${turns.stretchedOver1ms} / ${turns.holdsOver1ms} | ` +
        `${Number.isFinite(turns.holdMaxMs) ? turns.holdMaxMs.toFixed(3) : '–'} |\n`,
    );
  } finally {
    await dev.close();
  }
}

async function main() {
  const argv = process.argv.slice(2);
  if (argv[0] === '--child') return child(argv[1], parseArgs(argv.slice(2)));
  const o = parseArgs(argv);
  await withQsd(o.backend, o.qsdCpu, { throttleIops: o.throttleIops }, async (qsd) => {
    process.stdout.write(
      `- command: \`node scripts/loop-turns.mjs ${argv.join(' ')}\`\n` +
        `- backend: \`${qsd.shownCmd}\`; frontend on CPU ${o.feCpu}; depth ${o.depth}, ` +
        `${o.seconds} s per configuration\n\n` +
        '| config | I/Os | loop turns | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | turns ≥ 1 ms | longest GC pause ms | polling turns | of them ≥ 1 ms: seen / held | longest hold ms |\n' +
        '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n',
    );
    const r = spawnSync(
      'taskset',
      ['-c', String(o.feCpu), process.execPath, SELF, '--child', qsd.sock, ...argv],
      { stdio: ['ignore', 'inherit', 'inherit'] },
    );
    if (r.status !== 0) throw new Error(`child exited ${r.status}`);
  });
}

await main();
