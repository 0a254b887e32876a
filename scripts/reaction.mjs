#!/usr/bin/env node
// How fast each completion strategy reacts to a change of load, in wall-clock time. One device
// per run goes through a schedule of loads (idle, closed loops of 4 KiB random reads at depth 1
// and 32, a paced 2,000 IOPS); a 10 ms timer samples the I/Os done, the process's CPU time and
// the call eventfd wake-ups (dev.stats.calls), so each 10 ms bin has its IOPS, CPU share and
// calls per I/O. Nothing in the library is instrumented: this is what an application sees.
//
// For each change of load and each metric, the settling time: from the change until the 30 ms
// moving median of the metric stays within a tolerance of its new settled level (the median of
// the bins in the last half of the phase): 0.15 for calls per I/O and CPU share, 10% for IOPS.
// It has to settle in the phase's first half. The fixed strategies are the control: they decide
// nothing, so their settling times are the backend's and the method's own.
// Modes alternate run by run, the order rotated each round; medians over the rounds. Each mode
// first runs the schedule once, shortened and not measured, so V8 has compiled its paths.
//
//   npm run build && node scripts/reaction.mjs [--backend null|file] [--rounds 5]
//     [--qsd-cpu 0] [--fe-cpu 1] [--scale 1] [MODE ...]     (default: adaptive poll event)
//   --scale multiplies every phase's length; --trace prints one round's bins per mode.
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { clearInterval, setInterval } from 'node:timers';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { runScriptChild } from './lib/pinned-child.mjs';
import { withQsd } from './lib/qsd.mjs';
import { parseScriptOptions } from './lib/script-options.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SELF = fileURLToPath(import.meta.url);
const BIN_MS = 10;
const MEDIAN_BINS = 3;

/** The loads, in order: closed loops of `depth` reads, or one paced at `rate` IOPS, or none. */
const SCHEDULE = [
  { name: 'idle', seconds: 1 },
  { name: 'QD1', depth: 1, seconds: 1.5 },
  { name: 'QD32', depth: 32, seconds: 1 },
  { name: 'QD1', depth: 1, seconds: 1.5 },
  { name: '2k IOPS', depth: 1, rate: 2000, seconds: 1.5 },
  { name: 'QD1', depth: 1, seconds: 1.5 },
  { name: 'idle', seconds: 1 },
];

const median = (values) => {
  const s = [...values].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[s.length >> 1];
};

function parseArgs(argv) {
  const { options, positionals } = parseScriptOptions(argv, {
    backend: 'null',
    rounds: 5,
    qsdCpu: 0,
    feCpu: 1,
    scale: 1,
    trace: false,
  });
  const o = { ...options, modes: positionals };
  if (o.modes.length === 0) o.modes = ['adaptive', 'poll', 'event'];
  if (!(Number.isInteger(o.rounds) && o.rounds > 0))
    throw new Error('--rounds: a positive integer');
  if (!(o.scale > 0)) throw new Error('--scale: a positive number');
  return o;
}

/** One pass through the schedule; resolves the bins: [{ t, phase, ios, cpuUs, calls }]. */
async function scheduleRun(socket, mode, scale) {
  const { openBlockDevice } = await import(
    pathToFileURL(join(ROOT, 'dist', 'src', 'index.js')).href
  );
  const dev = await openBlockDevice(socket, { completion: mode });
  const blocks = Math.floor(Math.min(dev.size, 1 << 30) / 4096);
  let phase = 0;
  let load = SCHEDULE[0];
  let loadStart = 0;
  let issued = 0;
  let done = 0;
  let wake = [];
  let stopped = false;
  let seed = 12345;
  const nextOffset = () => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return Math.floor((seed / 4294967296) * blocks) * 4096;
  };
  const worker = async (i) => {
    const buf = dev.allocBuffer(4096);
    try {
      while (!stopped) {
        const depth = load.depth ?? 0;
        if (i >= depth) {
          await new Promise((r) => wake.push(r));
          continue;
        }
        if (load.rate) {
          // The n-th I/O of the paced phase is due at its start + n / rate (as runBench paces).
          const due = loadStart + (issued / load.rate) * 1000;
          issued++;
          const now = performance.now();
          if (due > now) await sleep(Math.max(1, Math.ceil(due - now)));
          if (stopped || load.depth === undefined) continue;
        }
        await dev.readInto(buf, nextOffset());
        done++;
      }
    } finally {
      if (!dev.closed) dev.freeBuffer(buf);
    }
  };
  const bins = [];
  const starts = [];
  const sample = () => {
    const cpu = process.cpuUsage();
    bins.push({
      t: performance.now(),
      phase,
      ios: done,
      cpuUs: cpu.user + cpu.system,
      calls: dev.stats.calls,
    });
  };
  const workers = Array.from({ length: 32 }, (_, i) => worker(i));
  const t0 = performance.now();
  sample();
  const timer = setInterval(sample, BIN_MS);
  try {
    let at = 0;
    for (phase = 0; phase < SCHEDULE.length; phase++) {
      load = SCHEDULE[phase];
      loadStart = performance.now();
      starts.push(loadStart - t0);
      issued = 0;
      const w = wake;
      wake = [];
      for (const r of w) r();
      at += load.seconds * scale * 1000;
      await sleep(Math.max(0, t0 + at - performance.now()));
    }
  } finally {
    clearInterval(timer);
    stopped = true;
    for (const r of wake) r();
    await Promise.all(workers);
    await dev.close();
  }
  // Bin i covers (t[i-1], t[i]]; it belongs to the phase that was running at its end.
  const out = bins.slice(1).map((b, i) => {
    const a = bins[i];
    const ms = b.t - a.t;
    const ios = b.ios - a.ios;
    return {
      t: b.t - t0,
      phase: b.phase,
      iops: (ios / ms) * 1000,
      cpuShare: (b.cpuUs - a.cpuUs) / 1000 / ms,
      callsPerIo: ios > 0 ? (b.calls - a.calls) / ios : NaN,
    };
  });
  return { bins: out, starts };
}

/** Per phase: start (ms), its bins, and the settled level of each metric. */
function phasesOf({ bins, starts }) {
  return SCHEDULE.map((load, p) => {
    const own = bins.filter((b) => b.phase === p);
    const settled = {};
    for (const key of ['iops', 'cpuShare', 'callsPerIo']) {
      const late = own
        .slice(own.length >> 1)
        .map((b) => b[key])
        .filter(Number.isFinite);
      settled[key] = median(late);
    }
    return { load, start: starts[p], bins: own, settled };
  });
}

/** A settling time for "not within the phase's first half" (it survives JSON, unlike NaN). */
const NOT_SETTLED = -1;

/** How close to its new settled level a metric must be to count as settled. */
const TOLERANCE = {
  callsPerIo: () => 0.15,
  cpuShare: () => 0.15,
  iops: (to) => 0.1 * to,
};

/**
 * Milliseconds from the phase's start until the metric's moving median stays within tolerance
 * of the phase's settled level (NOT_SETTLED: not within the phase's first half; null: no
 * samples, an idle phase's calls per I/O).
 */
function settleMs(phase, key) {
  const to = phase.settled[key];
  if (!Number.isFinite(to)) return null;
  const tol = TOLERANCE[key](to);
  const vals = phase.bins.map((b) => b[key]);
  const half = Math.max(1, phase.bins.length >> 1);
  let last = -1;
  for (let i = 0; i < half; i++) {
    const w = vals.slice(Math.max(0, i - MEDIAN_BINS + 1), i + 1).filter(Number.isFinite);
    if (w.length === 0 || Math.abs(median(w) - to) > tol) last = i;
  }
  if (last === half - 1) return NOT_SETTLED;
  return phase.bins[last + 1].t - phase.start;
}

/** For each change of load: { label, levels: { key: [from, to] }, key: ms | NOT_SETTLED | null }. */
function reactions(run) {
  const phases = phasesOf(run);
  const out = [];
  for (let p = 1; p < phases.length; p++) {
    const prev = phases[p - 1];
    const cur = phases[p];
    const r = { label: `${prev.load.name} → ${cur.load.name}`, levels: {} };
    for (const key of ['callsPerIo', 'cpuShare', 'iops']) {
      r.levels[key] = [prev.settled[key], cur.settled[key]];
      r[key] = settleMs(cur, key);
    }
    out.push(r);
  }
  return out;
}

async function child(socket, o) {
  const runs = Object.fromEntries(o.modes.map((m) => [m, []]));
  for (const mode of o.modes) await scheduleRun(socket, mode, 0.2);
  for (let round = 0; round < o.rounds; round++) {
    for (let k = 0; k < o.modes.length; k++) {
      const mode = o.modes[(k + round) % o.modes.length];
      await sleep(300);
      const run = await scheduleRun(socket, mode, o.scale);
      runs[mode].push({
        reactions: reactions(run),
        ...(round === 0 && o.trace ? { bins: run.bins } : {}),
      });
    }
  }
  process.stdout.write(`${JSON.stringify(runs)}\n`);
}

const fmtMs = (xs) => {
  if (xs.every((x) => x === null)) return '–';
  const finite = xs.filter((x) => x !== null && x !== NOT_SETTLED);
  const never = xs.filter((x) => x === NOT_SETTLED).length;
  if (finite.length === 0) return `not in half the phase (${never}/${xs.length})`;
  const m = median(finite).toFixed(0);
  const range = `${Math.min(...finite).toFixed(0)}–${Math.max(...finite).toFixed(0)}`;
  return `${m} [${range}]${never ? `, ${never}× not in half the phase` : ''}`;
};

function table(runs, o) {
  const lines = [
    '| change of load | mode | settled levels (calls/IO; CPU share; kIOPS), median | calls/IO, ms | CPU share, ms | IOPS, ms |',
    '|---|---|---|---|---|---|',
  ];
  const first = runs[o.modes[0]][0].reactions;
  for (let i = 0; i < first.length; i++) {
    for (const mode of o.modes) {
      const rs = runs[mode].map((r) => r.reactions[i]);
      const lv = (key, scale, digits) =>
        ['0', '1']
          .map((j) => median(rs.map((r) => r.levels[key][j]).filter((v) => v !== null)) * scale)
          .map((v) => (Number.isFinite(v) ? v.toFixed(digits) : '–'))
          .join(' → ');
      const levels = `${lv('callsPerIo', 1, 2)}; ${lv('cpuShare', 100, 0)}%; ${lv('iops', 1e-3, 1)}`;
      const col = (key) => fmtMs(rs.map((r) => r[key]));
      lines.push(
        `| ${mode === o.modes[0] ? first[i].label : ''} | ${mode} | ${levels} | ${col('callsPerIo')} | ${col('cpuShare')} | ${col('iops')} |`,
      );
    }
  }
  return lines.join('\n');
}

function traceTable(runs, o) {
  const out = [];
  for (const mode of o.modes) {
    const bins = runs[mode][0].bins;
    if (!bins) continue;
    out.push(`\n${mode}, round 1 (t ms, phase, kIOPS, CPU %, calls/IO):`);
    for (const b of bins) {
      out.push(
        `${b.t.toFixed(0)}\t${SCHEDULE[b.phase].name}\t${(b.iops / 1000).toFixed(1)}\t${(b.cpuShare * 100).toFixed(0)}\t${Number.isFinite(b.callsPerIo) ? b.callsPerIo.toFixed(2) : '-'}`,
      );
    }
  }
  return out.join('\n');
}

async function main() {
  const argv = process.argv.slice(2);
  if (argv[0] === '--child') return child(argv[1], parseArgs(argv.slice(2)));
  const o = parseArgs(argv);
  await withQsd(o.backend, o.qsdCpu, {}, async (qsd) => {
    const out = await runScriptChild(o.feCpu, SELF, qsd.sock, argv);
    const runs = JSON.parse(out.trim().split('\n').pop());
    const schedule = SCHEDULE.map((l) => `${l.name} ${l.seconds * o.scale} s`).join(', ');
    process.stdout.write(
      `- command: \`node scripts/reaction.mjs ${argv.join(' ')}\`\n` +
        `- backend: \`${qsd.shownCmd}\`; frontend on CPU ${o.feCpu}\n` +
        `- schedule: ${schedule}; ${o.rounds} rounds; ${BIN_MS} ms bins, ${MEDIAN_BINS * BIN_MS} ms moving median\n\n` +
        `Settling time: from the change of load until the metric's moving median stays within ` +
        `0.15 (calls per I/O, CPU share) or 10% (IOPS) of its new level; median [range] over ` +
        `rounds (–: an idle phase has no calls per I/O):\n\n${table(runs, o)}\n` +
        (o.trace ? `${traceTable(runs, o)}\n` : ''),
    );
  });
}

await main();
