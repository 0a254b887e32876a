#!/usr/bin/env node
// Paired A/B runs of completion configurations in one process, for questions the full report
// (bench-report.mjs) does not ask: an adaptive knob against its default, or this build against
// another build of the library (`@DIST`: a dist/ directory of another checkout). Configurations
// alternate in short runs, in a balanced order (armOrder), so that the machine's drift hits them
// alike; each round's result is divided by the same round's result of the first configuration.
//
//   npm run build && node scripts/bench-ab.mjs [options] NAME=MODE[@DIST][:JSON] ...
//   e.g. node scripts/bench-ab.mjs --backend file --iodepth 1 poll=poll adaptive=adaptive \
//          'w15=adaptive:{"latencyWeight":1.5}'
//
// Every run opens the device afresh, so an adaptive row includes its controller's start (the
// first trial, within the ramp at the defaults), as an application's first seconds would.
//
// Options: --backend null|file|throttle (default null; throttle: the file behind a throttle
// group of --throttle-iops, default 4000), --rw randread, --bs 4096, --iodepth 1,
// --rate IOPS (0: as fast as it goes), --rounds 8, --seconds 0.6, --ramp 0.3,
// --qsd-cpu 0, --fe-cpu 1 (taskset placement of the daemon and of the measuring child; the
// child's is a CPU list: 0-1 leaves it free on both).
// --socket PATH measures a backend that is already running there instead (SPDK's vhost target,
// say; --backend and --qsd-cpu do not apply), --hugepages 2M|1G opens every arm with hugepage
// memory (SPDK needs it).
// --stepping runs the report's stepping load instead (depth 1 → 32 → 1 → 32, each phase a
// quarter of --seconds, default 6 with --stepping; --rw, --bs, --iodepth, --rate and --ramp do
// not apply) and adds its phases to the table.
// Each arm imports its own copy of its build (scripts/lib/arm-copies.mjs says why);
// --shared-modules loads each build once for all its arms instead.
// --raw FILE keeps every round's numbers there as JSON ({ argv, runs: { NAME: [round...] } }).
// --plain measures a bare closed loop instead of `runBench` (`--iodepth` loops of
// `readInto`, random 4 KiB-aligned offsets, no histogram, no pacing): IOPS, CPU and calls per
// I/O only. At depth 1 it shows the frontend's own turnaround with the least code around it.
//
//   node scripts/bench-ab.mjs --warmup [--backend file] [MODE ...]
// measures how the backend's service time at depth 1 moves with the frontend's behaviour: after
// a second of idle, a closed loop of 4 KiB reads for 0.6 s per MODE (default poll, event),
// printed as the median latency in each 25 ms of the run.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ARM_COPIES_ENV, loadArm, withArmCopies } from './lib/arm-copies.mjs';
import { armOrder } from './lib/arm-order.mjs';
import { runPinnedChild as runChild } from './lib/pinned-child.mjs';
import { parseScriptOptions } from './lib/script-options.mjs';
import { startQsd } from './lib/qsd.mjs';
import { STEPPING_SCHEDULE } from './lib/stepping.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { ratioSummary } = await import(
  pathToFileURL(join(ROOT, 'dist', 'src', 'bench', 'paired-ratio.js')).href
);
const { median } = await import(pathToFileURL(join(ROOT, 'dist', 'src', 'util', 'median.js')).href);
const SELF = fileURLToPath(import.meta.url);
const pct = (x) => `${(x * 100).toFixed(1)}%`;

function parseArgs(argv) {
  const { options, positionals, given } = parseScriptOptions(argv, {
    backend: 'null',
    throttleIops: 4000,
    rw: 'randread',
    bs: 4096,
    iodepth: 1,
    rate: 0,
    rounds: 8,
    seconds: 0.6,
    ramp: 0.3,
    qsdCpu: 0,
    feCpu: '1',
    warmup: false,
    stepping: false,
    plain: false,
    sharedModules: false,
    socket: '',
    hugepages: '',
    raw: '',
  });
  const o = { ...options, configs: positionals };
  if (!(Number.isInteger(o.throttleIops) && o.throttleIops > 0)) {
    throw new Error(`--throttle-iops must be a positive integer, got ${o.throttleIops}`);
  }
  if (o.plain && (o.rate > 0 || o.rw !== 'randread' || o.stepping)) {
    throw new Error('--plain reads as fast as it goes: --rate, --rw and --stepping do not apply');
  }
  if (o.hugepages !== '' && o.hugepages !== '2M' && o.hugepages !== '1G') {
    throw new Error(`--hugepages must be 2M or 1G, got ${o.hugepages}`);
  }
  o.open = o.hugepages === '' ? {} : { hugepages: o.hugepages };
  // Phases shorter than a trial (300 ms) would measure the controller's start only.
  if (o.stepping && !given('seconds')) o.seconds = 6;
  return o;
}

/**
 * NAME=MODE[@DIST][:JSON]. JSON is an object of completionOptions.adaptive's keys, plus
 * completionOptions' own spinSliceNs, sleepIntervalNs, kickAhead and microLookNs (e.g.
 * poll:{"kickAhead":false}).
 */
function parseConfig(text) {
  const eq = text.indexOf('=');
  if (eq <= 0) throw new Error(`a configuration is NAME=MODE[@DIST][:JSON], got ${text}`);
  const name = text.slice(0, eq);
  let rest = text.slice(eq + 1);
  let options;
  const colon = rest.indexOf(':');
  if (colon >= 0) {
    options = completionOptionsOf(JSON.parse(rest.slice(colon + 1)), text);
    rest = rest.slice(0, colon);
  }
  const at = rest.indexOf('@');
  const dist = at >= 0 ? resolve(rest.slice(at + 1)) : join(ROOT, 'dist');
  const mode = at >= 0 ? rest.slice(0, at) : rest;
  return { name, mode, dist, options };
}

const TOP_LEVEL_KEYS = ['spinSliceNs', 'sleepIntervalNs', 'kickAhead', 'microLookNs'];

/** completionOptions for a configuration's JSON. */
function completionOptionsOf(json, text) {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new Error(`the JSON of a configuration is an object, got ${text}`);
  }
  const options = {};
  const adaptive = {};
  if ('adaptive' in json) {
    throw new Error(`give adaptive's keys directly, not under "adaptive": ${text}`);
  }
  for (const [key, value] of Object.entries(json)) {
    if (TOP_LEVEL_KEYS.includes(key)) options[key] = value;
    else adaptive[key] = value;
  }
  if (Object.keys(adaptive).length > 0) options.adaptive = adaptive;
  return options;
}

// Child: the paired runs, one JSON line { name: [{ iops, p50, cpuPerIo, callsPerIo[, phases] }...] }.
async function childAb(socket, o) {
  if (o.sharedModules) return pairedRuns(socket, o, undefined);
  return withArmCopies((copies) => pairedRuns(socket, o, copies));
}

async function pairedRuns(socket, o, copies) {
  const configs = [];
  for (const c of o.configs.map(parseConfig))
    configs.push({ ...c, ...(await loadArm(c.dist, copies)) });
  const out = Object.fromEntries(configs.map((c) => [c.name, []]));
  for (let round = 0; round < o.rounds; round++) {
    for (const k of armOrder(configs.length, round)) {
      const c = configs[k];
      if (o.stepping) {
        const r = await c.steppingRun(
          join(c.dist, 'src'),
          socket,
          c.mode,
          o.seconds / STEPPING_SCHEDULE.length,
          c.options,
          o.open,
        );
        out[c.name].push({
          iops: r.iops,
          p50: r.p50,
          cpuPerIo: r.cpuPerIo,
          callsPerIo: r.callsPerIo,
          phases: r.phases.map((p) => p.iops),
        });
        continue;
      }
      if (o.plain) {
        out[c.name].push(await c.plainRun(c.dist, socket, c.mode, o, c.options, round + 1));
        continue;
      }
      const r = await c.runBench({
        socket,
        rw: o.rw,
        bs: o.bs,
        iodepth: o.iodepth,
        runtime: o.seconds,
        ramp_time: o.ramp,
        completion: c.mode,
        randseed: round + 1,
        ...(o.rate > 0 ? { rate_iops: o.rate } : {}),
        open: { ...o.open, ...(c.options ? { completionOptions: c.options } : {}) },
      });
      out[c.name].push({
        iops: r.total.iops,
        p50: (r.total.latency.p50 ?? NaN) / 1000,
        cpuPerIo: r.cpu.perIo,
        callsPerIo: r.deviceStats.calls / Math.max(1, r.deviceStats.requests),
        loopMs: r.maxEventLoopDelay / 1e6,
      });
    }
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

// Child: warm-up traces, one line per mode.
async function childWarmup(socket, modes) {
  const { openBlockDevice } = await import(
    pathToFileURL(join(ROOT, 'dist', 'src', 'index.js')).href
  );
  const bucketMs = 25;
  const runMs = 600;
  for (const mode of modes) {
    await sleep(1000);
    const dev = await openBlockDevice(socket, { completion: mode });
    const buf = dev.allocBuffer(4096);
    const samples = [];
    const t0 = performance.now();
    for (let i = 0; performance.now() - t0 < runMs; i++) {
      const start = performance.now();
      await dev.readInto(buf, ((i * 7919) % 262144) * 4096);
      samples.push([start - t0, performance.now() - start]);
    }
    await dev.close();
    const cells = [];
    for (let b = 0; b * bucketMs < runMs; b++) {
      const lat = samples.filter(([t]) => t >= b * bucketMs && t < (b + 1) * bucketMs);
      cells.push(lat.length ? (median(lat.map(([, l]) => l)) * 1000).toFixed(0) : '-');
    }
    process.stdout.write(`| ${mode} | ${samples.length} | ${cells.join(' ')} |\n`);
  }
}

function table(runs, configs) {
  const base = configs[0].name;
  const phased = runs[base][0].phases !== undefined;
  const looped = runs[base][0].loopMs !== undefined;
  const lines = [
    `| config | IOPS | p50 µs | CPU µs/IO | calls/IO | IOPS ÷ ${base} | p50 ÷ ${base} | CPU ÷ ${base} |${phased ? ` IOPS per phase (depth ${STEPPING_SCHEDULE.join(', ')}), median |` : ''}${looped ? ' worst loop delay ms, median round [worst] |' : ''}`,
    `|---|---:|---:|---:|---:|---|---|---|${phased ? '---|' : ''}${looped ? '---|' : ''}`,
  ];
  for (const { name } of configs) {
    const rs = runs[name];
    const ratio = (key) => {
      if (name === base) return '';
      const q = rs.map((r, i) => r[key] / runs[base][i][key]);
      if (!q.every(Number.isFinite)) return '–';
      const s = ratioSummary(q);
      return `${pct(s.median)} (CI ${pct(s.low)}–${pct(s.high)}) [${pct(s.min)}–${pct(s.max)}]`;
    };
    const m = (key, digits) => {
      const v = median(rs.map((r) => r[key]));
      return Number.isFinite(v) ? v.toFixed(digits) : '–';
    };
    const phases = phased
      ? ` ${STEPPING_SCHEDULE.map((_, i) => median(rs.map((r) => r.phases[i])).toFixed(0)).join(' / ')} |`
      : '';
    const loop = looped
      ? ` ${m('loopMs', 2)} [${Math.max(...rs.map((r) => r.loopMs)).toFixed(2)}] |`
      : '';
    lines.push(
      `| ${name} | ${m('iops', 0)} | ${m('p50', 1)} | ${m('cpuPerIo', 1)} | ${m('callsPerIo', 3)} | ${ratio('iops')} | ${ratio('p50')} | ${ratio('cpuPerIo')} |${phases}${loop}`,
    );
  }
  return lines.join('\n');
}

async function main() {
  const argv = process.argv.slice(2);
  if (argv[0] === '--child-ab') return childAb(argv[1], parseArgs(argv.slice(2)));
  if (argv[0] === '--child-warmup') return childWarmup(argv[1], argv.slice(2));
  const o = parseArgs(argv);
  const dir = mkdtempSync(join(tmpdir(), 'vhost-user-bench-ab-'));
  let qsd;
  try {
    qsd =
      o.socket === ''
        ? await startQsd(o.backend, dir, o.qsdCpu, { throttleIops: o.throttleIops })
        : {
            sock: resolve(o.socket),
            shownCmd: `already running at ${o.socket}`,
            stop: async () => {},
          };
    const pin = ['-c', String(o.feCpu), process.execPath, SELF];
    process.stdout.write(`- command: \`node scripts/bench-ab.mjs ${argv.join(' ')}\`\n`);
    process.stdout.write(`- backend: \`${qsd.shownCmd}\`; frontend on CPU ${o.feCpu}\n\n`);
    if (o.warmup) {
      if (o.raw !== '') throw new Error('--raw keeps paired rounds: --warmup has none');
      const modes = o.configs.length > 0 ? o.configs : ['poll', 'event'];
      process.stdout.write('| mode | reads | median latency (µs) in each 25 ms from the start |\n');
      process.stdout.write('|---|---:|---|\n');
      process.stdout.write(await runChild([...pin, '--child-warmup', qsd.sock, ...modes]));
      return;
    }
    if (o.configs.length < 2) throw new Error('give at least two configurations');
    const configs = o.configs.map(parseConfig);
    // The child's copies of the library go in this script's temp dir, removed below.
    process.env[ARM_COPIES_ENV] = join(dir, 'arms');
    const out = await runChild([...pin, '--child-ab', qsd.sock, ...argv]);
    const runs = JSON.parse(out.trim().split('\n').pop());
    if (o.raw !== '') writeFileSync(o.raw, `${JSON.stringify({ argv, runs })}\n`);
    const load = o.stepping
      ? `stepping load (4 KiB randread, depth ${STEPPING_SCHEDULE.join(' → ')}, ` +
        `${o.seconds / STEPPING_SCHEDULE.length} s per phase); ${o.rounds} rounds`
      : `${o.plain ? 'plain closed loop of reads' : o.rw} ${o.bs} B, depth ${o.iodepth}${o.rate ? `, paced at ${o.rate} IOPS` : ''}; ` +
        `${o.rounds} rounds of ${o.seconds} s after ${o.ramp} s ramp`;
    const modules = o.sharedModules
      ? 'arms of one build share its modules'
      : 'each arm imports its own copy of its build (scripts/lib/arm-copies.mjs)';
    process.stdout.write(
      `${load}; ${modules}; medians, and per-round ratios to ${configs[0].name} ` +
        `(median (its 90% bootstrap interval, src/bench/paired-ratio.ts) [range]):\n\n` +
        `${table(runs, configs)}\n`,
    );
  } finally {
    await qsd?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
