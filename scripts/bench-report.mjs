#!/usr/bin/env node
// Side-by-side benchmark report: every completion strategy of this library against refbench (a
// tight C frontend, /work/shared/tools/refbench.c or $REFBENCH_SRC), on qemu-storage-daemon with
// a null-co and a /dev/shm raw-file backend, under explicit CPU placement (taskset). Prints one
// Markdown section on stdout (progress on stderr).
//
//   npm run build && npm run bench:report [-- --rounds 3 --seconds 2 --quick]
//
// Needs `npm run build` first (it runs dist/src/cli/main.js and imports dist/src/), gcc,
// qemu-storage-daemon and taskset. Options:
//   --rounds N        interleaved rounds per cell, the median is reported (default 3)
//   --seconds S       measured seconds per run (default 2), after --ramp S (default 0.5)
//   --step-seconds S  length of each phase of the stepping load (default 5)
//   --step-rounds N   rounds of the stepping load (default 1)
//   --pair-rounds N / --pair-seconds S            paired verdict runs (default 16 x 0.6 s)
//   --pair-qd1-rounds N / --pair-qd1-seconds S    ... at depth 1 (default 24 x 1 s)
//   --pair-paced-rounds N / --pair-paced-seconds S ... paced at 2,000 IOPS (default 16 x 2 s)
//   --pair-step-rounds N / --pair-step-seconds S  ... stepping load (default 7 x 6 s)
//   --qsd-cpu N / --fe-cpu N   placement (default 0 / 1)
//   --quick           1 round of 1 s runs, 2 s steps (a smoke test of the script)
// Child modes (used by the script itself): --child stepping|breakdown SOCKET MODE ..., --child
// paired SOCKET SPEC ROUNDS SECONDS, --child sleep-floor
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { clearTimeout, setTimeout } from 'node:timers';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ARM_COPIES_ENV, loadArm, withArmCopies } from './lib/arm-copies.mjs';
import { armOrder } from './lib/arm-order.mjs';
import { garbageTable } from './lib/garbage-table.mjs';
import { pollingTurnStats } from './lib/polling-stats.mjs';
import { QSD, startQsd } from './lib/qsd.mjs';
import { REFBENCH_SRC } from './lib/refbench.mjs';
import { STEPPING_SCHEDULE, steppingRun } from './lib/stepping.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const DIST = join(ROOT, 'dist', 'src');
const MAIN = join(DIST, 'cli', 'main.js');
const SELF = fileURLToPath(import.meta.url);
const {
  pairedRatioToMean: ratioToMean,
  ratioVerdict,
  ratioCapVerdict,
  ratioAboveVerdict,
  MIN_VERDICT_ROUNDS,
} = await import(pathToFileURL(join(DIST, 'bench', 'paired-ratio.js')).href);
const { median } = await import(pathToFileURL(join(DIST, 'util', 'median.js')).href);
const STRATEGIES = ['event', 'poll', 'sleep-poll', 'adaptive'];
/**
 * Every paired run but the paced one adds a second 'poll' arm: poll ÷ poll per round shows what
 * the method resolves there (at depth 1 the daemon's speed moves between two levels from run to
 * run; at depth 32 on null-co single rounds range over ±25%; stepping, adaptive can at best tie
 * poll on split CPUs).
 */
const CONTROL = 'poll-control';
/**
 * The paced load's verdict compares adaptive with event only, so its paired runs have those two
 * arms and a second event arm (event ÷ event per round): 5 rounds of four arms had per-round
 * ratios of 0.7-1.5x, too wide to tell a median from the 1.2x target.
 */
const PACED_ARMS = ['adaptive', 'event', 'event-control'];
const PHASES = STEPPING_SCHEDULE.length;
const REFS = ['ref-poll', 'ref-event'];

const log = (msg) => process.stderr.write(`bench-report: ${msg}\n`);

// ---------------------------------------------------------------------------------------------
// Child mode 1: the stepping load (lib/stepping.mjs), one run. Prints one JSON line.

async function childStepping(socket, mode, phaseSeconds) {
  process.stdout.write(`${JSON.stringify(await steppingRun(DIST, socket, mode, phaseSeconds))}\n`);
}

// ---------------------------------------------------------------------------------------------
// Child mode 2: the native sleep floor behind 'sleep-poll', and the CPU time one sleep costs
// this process. Prints one JSON line: [{ requestNs, p50, p99, cpuNs }, ...].

async function childSleepFloor() {
  const completion = join(DIST, 'completion', 'index.js');
  const { measureSleepFloor } = await import(pathToFileURL(completion).href);
  const rows = [];
  for (const requestNs of [1000, 50_000]) {
    const samples = 1000;
    const cpu0 = process.cpuUsage();
    const floor = measureSleepFloor(requestNs, samples);
    const cpu = process.cpuUsage(cpu0);
    rows.push({ ...floor, cpuNs: ((cpu.user + cpu.system) * 1000) / samples });
  }
  process.stdout.write(`${JSON.stringify(rows)}\n`);
}

// ---------------------------------------------------------------------------------------------
// Child mode 3: paired runs for the verdicts. On this shared machine the speed of a whole run
// drifts by tens of percent within minutes, more than the differences the targets ask about, so
// the strategies are compared in one process, alternating short runs (in a balanced order, armOrder),
// and each round's adaptive result is divided by the same round's fixed results. Each arm runs
// its own copy of the library (scripts/lib/arm-copies.mjs). Prints one JSON line:
// { mode: [{ iops, p50, cpuPerIo, callsPerIo }, ... one per round] }.

async function childPaired(socket, spec, rounds, seconds) {
  return withArmCopies((copies) => pairedRuns(socket, spec, rounds, seconds, copies));
}

async function pairedRuns(socket, spec, rounds, seconds, copies) {
  const w = JSON.parse(spec);
  const arms = w.rate ? PACED_ARMS : [...STRATEGIES, CONTROL];
  const own = {};
  for (const arm of arms) own[arm] = await loadArm(dirname(DIST), copies);
  const out = Object.fromEntries(arms.map((m) => [m, []]));
  for (let round = 0; round < rounds; round++) {
    const order = armOrder(arms.length, round).map((i) => arms[i]);
    for (const arm of order) {
      const mode = arm === CONTROL ? 'poll' : arm === 'event-control' ? 'event' : arm;
      if (w.stepping) {
        const r = await own[arm].steppingRun(
          join(own[arm].dist, 'src'),
          socket,
          mode,
          seconds / PHASES,
        );
        out[arm].push({
          iops: r.iops,
          p50: r.p50,
          cpuPerIo: r.cpuPerIo,
          callsPerIo: r.callsPerIo,
        });
        continue;
      }
      const r = await own[arm].runBench({
        socket,
        rw: w.rw,
        bs: w.bs,
        iodepth: w.qd,
        runtime: seconds,
        ramp_time: 0.3,
        completion: mode,
        randseed: round + 1,
        ...(w.rate ? { rate_iops: w.rate } : {}),
      });
      out[arm].push({
        iops: r.total.iops,
        p50: (r.total.latency.p50 ?? NaN) / 1000,
        cpuPerIo: r.cpu.perIo,
        callsPerIo: r.deviceStats.calls / Math.max(1, r.deviceStats.requests),
      });
    }
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

// ---------------------------------------------------------------------------------------------
// Child mode 4: where the time of one QD1 read goes. The script (not the library) wraps four
// methods of the library's own modules: SplitVirtqueue.publish (request on the ring),
// BlkQueue.kick and SplitVirtqueue.kickNeeded (the eventfd write, if the device wants one) and
// BlkQueue.drain (completion noticed and popped).

async function childBreakdown(socket, mode, seconds) {
  const { openBlockDevice } = await import(pathToFileURL(join(DIST, 'index.js')).href);
  const { BlkQueue } = await import(
    pathToFileURL(join(DIST, 'devices', 'blk', 'blk-queue.js')).href
  );
  const { SplitVirtqueue } = await import(pathToFileURL(join(DIST, 'virtqueue', 'split.js')).href);
  const { native } = await import(pathToFileURL(join(DIST, 'native.js')).href);
  const now = () => performance.now();
  const mark = { pub: 0, kickStart: 0, kickEnd: 0, aheadStart: 0, drainStart: 0, drainEnd: 0 };
  // An eventfd write outside a kick is a kick ahead (polling, before the drain).
  let inKick = false;
  const eventfdWrite = native.eventfdWrite;
  native.eventfdWrite = (...a) => {
    if (inKick) return eventfdWrite(...a);
    const start = now();
    const r = eventfdWrite(...a);
    mark.aheadStart = start;
    return r;
  };
  const publish = SplitVirtqueue.prototype.publish;
  SplitVirtqueue.prototype.publish = function (...a) {
    const r = publish.apply(this, a);
    mark.pub = now();
    return r;
  };
  // A kick decision writes the eventfd only if the device asked for it (kickNeeded): only those
  // are timed as kicks.
  let written = false;
  const kickNeeded = SplitVirtqueue.prototype.kickNeeded;
  SplitVirtqueue.prototype.kickNeeded = function (...a) {
    const r = kickNeeded.apply(this, a);
    if (r) written = true;
    return r;
  };
  const kick = BlkQueue.prototype.kick;
  BlkQueue.prototype.kick = function (...a) {
    const start = now();
    written = false;
    inKick = true;
    let r;
    try {
      r = kick.apply(this, a);
    } finally {
      inKick = false;
    }
    if (written) {
      mark.kickStart = start;
      mark.kickEnd = now();
    }
    return r;
  };
  const drain = BlkQueue.prototype.drain;
  BlkQueue.prototype.drain = function (...a) {
    const s = now();
    const r = drain.apply(this, a);
    if (r > 0) {
      mark.drainStart = s;
      mark.drainEnd = now();
    }
    return r;
  };
  const dev = await openBlockDevice(socket, { completion: mode });
  dev.on('error', () => {});
  const buf = dev.allocBuffer(4096);
  const blocks = Math.floor(dev.size / 4096);
  // The columns follow one request's timeline: call → on ring → kick → kick written → drain
  // starts → drain ends → await resumes, so per request they add up to the total whether the
  // kick comes inside the call (polling strategies, from idle) or after it returns
  // (process.nextTick); the table shows their medians. After a kick inside the call, "kick →
  // completion noticed" holds the rest of the call too (the wait's decision): our CPU time, which
  // overlaps the device's. The call's own length and where its kick went are columns beside them.
  // A kick ahead (the completion noticed, before the drain) is a column of its own.
  const rows = {
    submit: [],
    toKick: [],
    kick: [],
    deviceAndNotice: [],
    ahead: [],
    drain: [],
    resume: [],
    total: [],
    call: [],
  };
  let kickedInCall = 0;
  let unkicked = 0;
  let kickedAhead = 0;
  const end = now() + seconds * 1000;
  let i = 0;
  while (now() < end) {
    const off = ((i++ * 7919) % blocks) * 4096;
    const t0 = now();
    const p = dev.readInto(buf, off);
    const tRet = now();
    await p;
    const t3 = now();
    if (i < 1000) continue; // warm-up (JIT, adaptive controller)
    const us = (a, b) => (b - a) * 1000;
    // No kick for this request (the device asked for none): the ring is all it needed.
    const kicked = mark.kickStart >= mark.pub;
    if (!kicked) unkicked++;
    else if (mark.kickEnd <= tRet) kickedInCall++;
    const kickEnd = kicked ? mark.kickEnd : mark.pub;
    const ahead = mark.aheadStart >= kickEnd && mark.aheadStart <= mark.drainStart;
    if (ahead) kickedAhead++;
    const noticed = ahead ? mark.aheadStart : mark.drainStart;
    rows.submit.push(us(t0, mark.pub));
    rows.toKick.push(kicked ? us(mark.pub, mark.kickStart) : 0);
    rows.kick.push(kicked ? us(mark.kickStart, mark.kickEnd) : 0);
    rows.deviceAndNotice.push(us(kickEnd, noticed));
    rows.ahead.push(us(noticed, mark.drainStart));
    rows.drain.push(us(mark.drainStart, mark.drainEnd));
    rows.resume.push(us(mark.drainEnd, t3));
    rows.total.push(us(t0, t3));
    rows.call.push(us(t0, tRet));
  }
  dev.freeBuffer(buf);
  await dev.close();
  const out = {};
  for (const [k, v] of Object.entries(rows)) out[k] = median(v);
  out.n = rows.total.length;
  out.kickedInCall = kickedInCall / out.n;
  out.unkicked = unkicked / out.n;
  out.kickedAhead = kickedAhead / out.n;
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

// ---------------------------------------------------------------------------------------------
// Parent: machine facts, backends, runs.

function parseArgs(argv) {
  const o = {
    rounds: 3,
    seconds: 2,
    ramp: 0.5,
    stepSeconds: 5,
    stepRounds: 1,
    pairRounds: 16,
    pairSeconds: 0.6,
    pairQd1Rounds: 24,
    pairQd1Seconds: 1,
    pairPacedRounds: 16,
    pairPacedSeconds: 2,
    pairStepRounds: 7,
    pairStepSeconds: 6,
    qsdCpu: 0,
    feCpu: 1,
  };
  // --quick sets the defaults; options given with it still apply, wherever they stand.
  if (argv.includes('--quick'))
    Object.assign(o, {
      rounds: 1,
      seconds: 1,
      ramp: 0.2,
      stepSeconds: 2,
      pairRounds: 2,
      pairSeconds: 0.3,
      pairQd1Rounds: 2,
      pairQd1Seconds: 0.3,
      pairPacedRounds: 1,
      pairPacedSeconds: 0.5,
      pairStepRounds: 1,
      pairStepSeconds: 2,
    });
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => Number(argv[++i]);
    if (a === '--rounds') o.rounds = next();
    else if (a === '--seconds') o.seconds = next();
    else if (a === '--ramp') o.ramp = next();
    else if (a === '--step-seconds') o.stepSeconds = next();
    else if (a === '--step-rounds') o.stepRounds = next();
    else if (a === '--pair-rounds') o.pairRounds = next();
    else if (a === '--pair-seconds') o.pairSeconds = next();
    else if (a === '--pair-qd1-rounds') o.pairQd1Rounds = next();
    else if (a === '--pair-qd1-seconds') o.pairQd1Seconds = next();
    else if (a === '--pair-paced-rounds') o.pairPacedRounds = next();
    else if (a === '--pair-paced-seconds') o.pairPacedSeconds = next();
    else if (a === '--pair-step-rounds') o.pairStepRounds = next();
    else if (a === '--pair-step-seconds') o.pairStepSeconds = next();
    else if (a === '--qsd-cpu') o.qsdCpu = next();
    else if (a === '--fe-cpu') o.feCpu = next();
    else if (a !== '--quick') throw new Error(`unknown option ${a}`);
  }
  return o;
}

const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).map(Number);

async function waitForQuiet() {
  const start = Date.now();
  let l = loadavg();
  while (l[0] > 1.5 && Date.now() - start < 180_000) {
    log(`load average ${l.join(' ')} > 1.5: waiting (up to 3 min)`);
    await sleep(15_000);
    l = loadavg();
  }
  return { load: l, waitedSeconds: Math.round((Date.now() - start) / 1000) };
}

function machine() {
  const info = readFileSync('/proc/cpuinfo', 'utf8');
  const model = /model name\s*:\s*(.*)/.exec(info)?.[1] ?? cpus()[0]?.model ?? 'unknown';
  const nproc = execFileSync('nproc', { encoding: 'utf8' }).trim();
  let kernel = '';
  try {
    kernel = execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim();
  } catch {
    kernel = 'unknown';
  }
  let qsdVersion = '';
  try {
    qsdVersion = execFileSync(QSD, ['--version'], { encoding: 'utf8' }).split('\n')[0];
  } catch {
    qsdVersion = 'unknown';
  }
  return { model, nproc, kernel, node: process.version, qsdVersion };
}

/** Run time of every thread of a process, ns (from /proc/PID/task/x/schedstat). */
function procCpuNs(pid) {
  let total = 0;
  try {
    for (const t of readdirSync(`/proc/${pid}/task`)) {
      try {
        total += Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ')[0]);
      } catch {
        // thread gone
      }
    }
  } catch {
    return NaN;
  }
  return total;
}

function runChild(cmd, args, timeoutMs) {
  return new Promise((resolveRun, reject) => {
    const child = spawn(cmd, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, DEBUG: '' },
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${err.trim()}`));
      else resolveRun(out);
    });
  });
}

/** One cell run: returns normalized metrics. */
/** Runs this script as a child (`--child KIND ...args`) pinned to `cpu`; resolves its stdout. */
function runSelfChild(cpu, kind, args, timeoutMs) {
  return runChild(
    'taskset',
    ['-c', String(cpu), process.execPath, SELF, '--child', kind, ...args],
    timeoutMs,
  );
}

async function runCell(ctx, backend, w, who, cpu) {
  const secs = ctx.o.seconds;
  const be0 = procCpuNs(backend.pid);
  let m;
  if (who.startsWith('ref-')) {
    const out = await runChild(
      'taskset',
      [
        '-c',
        String(cpu),
        ctx.refbench,
        backend.sock,
        '--qd',
        String(w.qd),
        '--bs',
        String(w.bs),
        '--rw',
        w.rw,
        '--mode',
        who.slice(4),
        '--seconds',
        String(secs),
        '--warmup',
        String(ctx.o.ramp),
        '--no-verify',
        '--quiet',
      ],
      (secs + 30) * 1000,
    );
    const r = JSON.parse(out.trim().split('\n').pop());
    m = {
      iops: r.iops,
      mbps: r.mbps,
      p50: r.lat_us.p50,
      p99: r.lat_us.p99,
      cpuPerIo: r.cpu_us_per_io,
      loopMaxMs: NaN,
      kicksPerIo: r.kicks_per_io,
      callsPerIo: r.ios ? r.call_signals / r.ios : NaN,
      ios: r.ios,
    };
  } else {
    const args = [
      '-c',
      String(cpu),
      process.execPath,
      MAIN,
      'bench',
      backend.sock,
      '--json',
      '--rw',
      w.rw,
      '--bs',
      String(w.bs),
      '--iodepth',
      String(w.qd),
      '--runtime',
      String(secs),
      '--ramp-time',
      String(ctx.o.ramp),
      '--completion',
      who,
    ];
    if (w.rate) args.push('--rate_iops', String(w.rate));
    const out = await runChild('taskset', args, (secs + 30) * 1000);
    const job = JSON.parse(out).jobs[0];
    const d = job.read.total_ios >= job.write.total_ios ? job.read : job.write;
    const ios = job.read.total_ios + job.write.total_ios;
    const vu = job['vhost-user'];
    m = {
      iops: job.read.iops + job.write.iops,
      mbps: (job.read.bw_bytes + job.write.bw_bytes) / 1e6,
      p50: d.clat_ns.percentile['50.000000'] / 1000,
      p99: d.clat_ns.percentile['99.000000'] / 1000,
      cpuPerIo: vu.cpu_per_io_us,
      loopMaxMs: vu.max_event_loop_delay_ns / 1e6,
      gcMaxMs: vu.longest_gc_pause_ns / 1e6,
      ...pollingTurnStats(vu.device_stats),
      kicksPerIo: vu.device_stats.kicks / Math.max(1, vu.device_stats.requests),
      aheadPerIo: (vu.device_stats.kicksAhead ?? 0) / Math.max(1, vu.device_stats.requests),
      callsPerIo: vu.device_stats.calls / Math.max(1, vu.device_stats.requests),
      ios,
    };
  }
  // Backend CPU over the whole child (ramp and setup included): an upper bound per I/O.
  m.backendCpuPerIo = (procCpuNs(backend.pid) - be0) / 1000 / (m.ios * (1 + ctx.o.ramp / secs));
  return m;
}

const WORKLOADS = [
  { id: 'rr4k-qd1', label: '4 KiB randread QD1', rw: 'randread', bs: 4096, qd: 1 },
  { id: 'rr4k-qd32', label: '4 KiB randread QD32', rw: 'randread', bs: 4096, qd: 32 },
  { id: 'rw4k-qd32', label: '4 KiB randwrite QD32', rw: 'randwrite', bs: 4096, qd: 32 },
  { id: 'sr128k-qd8', label: '128 KiB seq read QD8', rw: 'read', bs: 131072, qd: 8 },
  {
    id: 'paced2k',
    label: '4 KiB randread QD1 @ 2,000 IOPS',
    rw: 'randread',
    bs: 4096,
    qd: 1,
    rate: 2000,
  },
];

/**
 * Over several runs: the worst loop delay, longest GC pause and longest polling hold (ms; NaN where
 * no run has one: refbench, or event's holds), and the polling turns of 1 ms or more: held by
 * their own spin or sleep, and on the clock.
 */
function loopWorst(runs) {
  const worst = (k) => {
    const v = runs.map((r) => r[k]).filter(Number.isFinite);
    return v.length > 0 ? Math.max(...v) : NaN;
  };
  const sum = (k) => {
    const v = runs.map((r) => r[k]).filter(Number.isFinite);
    return v.length > 0 ? v.reduce((a, b) => a + b, 0) : NaN;
  };
  return {
    loopWorstMs: worst('loopMaxMs'),
    gcWorstMs: worst('gcMaxMs'),
    holdWorstMs: worst('holdMaxMs'),
    holdsOver1ms: sum('holdsOver1ms'),
    stretchedOver1ms: sum('stretchedOver1ms'),
  };
}

/** Runs every cell of `groups` (workload x who) in interleaved rounds; the order rotates per round. */
async function interleaved(ctx, backend, groups, cpu, tag) {
  const results = new Map();
  const cells = [];
  for (const w of groups)
    for (const who of w.rate ? STRATEGIES : [...STRATEGIES, ...REFS]) cells.push({ w, who });
  for (let round = 0; round < ctx.o.rounds; round++) {
    const shift = (round * 3) % cells.length;
    const order = [...cells.slice(shift), ...cells.slice(0, shift)];
    for (const { w, who } of order) {
      const key = `${w.id}|${who}`;
      log(`${backend.kind} ${tag} round ${round + 1}/${ctx.o.rounds}: ${w.label} ${who}`);
      const m = await runCell(ctx, backend, w, who, cpu);
      if (!results.has(key)) results.set(key, []);
      results.get(key).push(m);
    }
  }
  // Median of each metric over the rounds (each metric on its own); the loop's: worst, or sum.
  const summary = new Map();
  for (const [key, runs] of results) {
    const s = {};
    for (const k of Object.keys(runs[0])) s[k] = median(runs.map((r) => r[k]));
    Object.assign(s, loopWorst(runs));
    s.iopsRuns = runs.map((r) => r.iops);
    summary.set(key, s);
  }
  return summary;
}

async function stepping(ctx, backend, cpu) {
  const res = new Map();
  for (let round = 0; round < ctx.o.stepRounds; round++) {
    for (const mode of STRATEGIES) {
      log(`${backend.kind} stepping round ${round + 1}/${ctx.o.stepRounds}: ${mode}`);
      const be0 = procCpuNs(backend.pid);
      const out = await runSelfChild(
        cpu,
        'stepping',
        [backend.sock, mode, String(ctx.o.stepSeconds)],
        (ctx.o.stepSeconds * PHASES + 30) * 1000,
      );
      const r = JSON.parse(out);
      r.backendCpuPerIo =
        (procCpuNs(backend.pid) - be0) / 1000 / (r.iops * ctx.o.stepSeconds * PHASES);
      if (!res.has(mode)) res.set(mode, []);
      res.get(mode).push(r);
    }
  }
  const summary = new Map();
  for (const [mode, runs] of res) {
    const s = {};
    for (const k of [
      'iops',
      'p50',
      'p99',
      'cpuPerIo',
      'kicksPerIo',
      'aheadPerIo',
      'callsPerIo',
      'backendCpuPerIo',
    ]) {
      s[k] = median(runs.map((r) => r[k]));
    }
    Object.assign(s, loopWorst(runs));
    s.phases = runs[0].phases;
    summary.set(mode, s);
  }
  return summary;
}

/** The verdicts' paired runs: one child per workload (and the stepping load), strategies alternating. */
async function paired(ctx, backend, workloads, cpu, withStepping) {
  const o = ctx.o;
  const res = new Map();
  // Depth 1 gets more and longer rounds, the paced load longer ones: the daemon's depth-1
  // latency moves between two levels from one short run to the next.
  const jobs = workloads.map((w) => [
    w.id,
    { rw: w.rw, bs: w.bs, qd: w.qd, rate: w.rate },
    w.rate ? o.pairPacedRounds : w.qd === 1 ? o.pairQd1Rounds : o.pairRounds,
    w.rate ? o.pairPacedSeconds : w.qd === 1 ? o.pairQd1Seconds : o.pairSeconds,
  ]);
  if (withStepping)
    jobs.push(['stepping', { stepping: true }, o.pairStepRounds, o.pairStepSeconds]);
  for (const [id, spec, rounds, seconds] of jobs) {
    log(`${backend.kind} paired (cpu ${cpu}): ${id}, ${rounds} rounds`);
    const budget = (rounds * (STRATEGIES.length + 1) * (seconds + 2) + 60) * 1000;
    const out = await runSelfChild(
      cpu,
      'paired',
      [backend.sock, JSON.stringify(spec), String(rounds), String(seconds)],
      budget,
    );
    res.set(id, JSON.parse(out));
  }
  return res;
}

async function breakdown(ctx, backend, cpu) {
  const out = new Map();
  for (const mode of ['poll', 'adaptive', 'event']) {
    log(`${backend.kind} breakdown (cpu ${cpu}): ${mode}`);
    const r = await runSelfChild(
      cpu,
      'breakdown',
      [backend.sock, mode, String(ctx.o.seconds)],
      (ctx.o.seconds + 30) * 1000,
    );
    out.set(mode, JSON.parse(r));
  }
  return out;
}

/** What a 4 KiB read allocates, per strategy, at depth 1 and 32 (scripts/garbage.mjs). */
async function garbage(ctx, backend, cpu) {
  const results = [];
  for (const depth of [1, 32]) {
    log(`${backend.kind} garbage (cpu ${cpu}): depth ${depth}`);
    // A child per strategy, as an application runs one (see scripts/garbage.mjs).
    for (const mode of STRATEGIES) {
      const out = await runChild(
        'taskset',
        [
          '-c',
          String(cpu),
          process.execPath,
          join(ROOT, 'scripts', 'garbage.mjs'),
          '--child',
          backend.sock,
          '--depth',
          String(depth),
          '--seconds',
          String(ctx.o.seconds),
          '--top',
          '3',
          `${mode}=${mode}`,
        ],
        (ctx.o.seconds + 40) * 1000,
      );
      for (const line of out.trim().split('\n')) results.push(JSON.parse(line));
    }
  }
  return results;
}

// ---------------------------------------------------------------------------------------------
// Markdown.

const f = (v, d = 0) => (Number.isFinite(v) ? v.toFixed(d) : '–');
const fk = (v) =>
  Number.isFinite(v) ? (v >= 10_000 ? `${(v / 1000).toFixed(1)}k` : v.toFixed(0)) : '–';
const ratio = (a, b) =>
  Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}×` : '–';

/** Kicks per I/O, and how many of them were kicks ahead, where there were any. */
const kicksCell = (s) =>
  `${f(s.kicksPerIo, 2)}${s.aheadPerIo > 0.005 ? ` (${f(s.aheadPerIo, 2)} ahead)` : ''}`;

/** The loop's worst over the runs: delay, GC pause, and what one polling turn held itself. */
const loopCell = (s) => `${f(s.loopWorstMs, 1)} / ${f(s.gcWorstMs, 1)} / ${f(s.holdWorstMs, 2)}`;

function cellTable(summary, w, sameCpuNote) {
  const lines = [
    `**${w.label}**${sameCpuNote ?? ''}`,
    '',
    '| frontend | IOPS | MB/s | p50 µs | p99 µs | CPU µs/IO | qsd CPU µs/IO | kicks/IO | calls/IO | worst loop delay / GC pause / polling hold ms | IOPS ÷ ref | p50 ÷ ref | CPU/IO ÷ ref |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  const refPoll = summary.get(`${w.id}|ref-poll`);
  const refEvent = summary.get(`${w.id}|ref-event`);
  for (const who of [...STRATEGIES, ...REFS]) {
    const s = summary.get(`${w.id}|${who}`);
    if (!s) continue;
    let vs = ['', '', ''];
    if (!who.startsWith('ref-') && refPoll) {
      // poll-ish strategies against refbench poll; event against refbench event (poll too).
      const refs = who === 'event' ? [refEvent, refPoll] : [refPoll];
      const cmp = (k) => refs.map((r) => ratio(s[k], r?.[k])).join(' / ');
      vs = [cmp('iops'), cmp('p50'), cmp('cpuPerIo')];
    }
    lines.push(
      `| ${who === 'ref-poll' ? 'refbench poll' : who === 'ref-event' ? 'refbench event' : who} | ${fk(s.iops)} | ${f(s.mbps, 1)} | ${f(s.p50, 1)} | ${f(s.p99, 1)} | ${f(s.cpuPerIo, 2)} | ${f(s.backendCpuPerIo, 2)} | ${kicksCell(s)} | ${f(s.callsPerIo, 2)} | ${loopCell(s)} | ${vs.join(' | ')} |`,
    );
  }
  lines.push('');
  return lines;
}

const FIXED = ['event', 'poll', 'sleep-poll'];

/**
 * Per-round ratios of `key` between two arms of paired runs: their median, range and 90%
 * bootstrap interval (src/bench/paired-ratio.ts). Verdicts are judged from the interval: single
 * rounds here range from half to twice the base at depth 1, and a median of 24 of them moved by
 * 7-10 points between runs of the same code (BENCHMARKS.md). Against 'poll', where the runs have
 * a second poll arm (CONTROL), and against 'event' where the paced runs have a second event
 * arm, each round's base is the mean of the two: the arm listed later came out ahead in 11 of 15
 * runs of the twenty-seventh session, and adaptive sits between them in the order.
 */
const SECOND_ARM = { poll: CONTROL, event: 'event-control' };
function pairedRatio(runs, a, b, key) {
  const bases = [b];
  if (runs[SECOND_ARM[b]] && a !== SECOND_ARM[b]) bases.push(SECOND_ARM[b]);
  const values = (name) => runs[name].map((x) => x[key]);
  return ratioToMean(bases.map(values), values(a));
}

const pct = (x) => `${(x * 100).toFixed(1)}%`;
const times = (x) => `${x.toFixed(2)}×`;
const range = (q, fmt = pct) =>
  `median of ${q.rounds} rounds, 90% interval ${fmt(q.low)}–${fmt(q.high)}, range ${fmt(q.min)}–${fmt(q.max)}`;
/** A verdict from an interval `q`, in the table's words. */
const verdictCell = (v, q, detail) =>
  v === 'met'
    ? 'met'
    : v === 'missed'
      ? `**missed** (${detail})`
      : `**not resolved** (${q.rounds < MIN_VERDICT_ROUNDS ? `${q.rounds} rounds: too few` : detail})`;

/**
 * The event-loop target over every separate run of a backend and placement (the stepping load's
 * too): polling turns that held the loop 1 ms or more themselves, and those that lasted that long
 * on the clock, beside the worst delays the loop saw (event's too: what it sees without polling)
 * and the longest GC pause.
 */
function loopTarget(backend, placement, summary, step) {
  const cells = [...summary.entries()]
    .filter(([key]) => !key.endsWith('|ref-poll') && !key.endsWith('|ref-event'))
    .map(([key, s]) => ({ who: key.split('|')[1], s }));
  for (const [who, s] of step ?? []) cells.push({ who, s });
  const max = (list, k) => Math.max(...list.map((c) => c.s[k]).filter(Number.isFinite));
  const polling = cells.filter((c) => c.who !== 'event');
  const event = cells.filter((c) => c.who === 'event');
  const total = (k) => polling.reduce((n, c) => n + (Number.isFinite(c.s[k]) ? c.s[k] : 0), 0);
  const held = total('holdsOver1ms');
  return `| polling never holds the event loop ≥ 1 ms | ${backend} ${placement} | every separate run${step ? ', stepping included' : ''} | polling turns whose own spin or sleep held it ≥ 1 ms: ${held} (longest hold ${f(max(polling, 'holdWorstMs'), 2)} ms); turns of ≥ 1 ms on the clock (held, or stretched by others as told by timing): ${total('stretchedOver1ms')}. The loop's worst delay: ${f(max(polling, 'loopWorstMs'), 1)} ms with polling, ${f(max(event, 'loopWorstMs'), 1)} ms with event; longest GC pause ${f(max(cells, 'gcWorstMs'), 1)} ms | ${held === 0 ? 'turns within their bounds; the loop as a whole not shown' : '**missed**'} |`;
}

function targets(all) {
  // all: [{ backend, placement, summary, stepping, paired }]
  const rows = ['| target | backend | workload | measured | verdict |', '|---|---|---|---|---|'];
  for (const { backend, summary, stepping: step, placement, paired: pair } of all) {
    for (const w of WORKLOADS) {
      const runs = pair?.get(w.id);
      if (w.rate || !runs) continue;
      const med = (m, k) => median(runs[m].map((x) => x[k]));
      const best = FIXED.reduce((x, y) => (med(y, 'iops') > med(x, 'iops') ? y : x));
      const q = pairedRatio(runs, 'adaptive', best, 'iops');
      // The control: the same strategy twice in each round.
      const control = (key) => {
        if (!runs[CONTROL]) return '';
        const c = pairedRatio(runs, CONTROL, 'poll', key);
        return `; control, poll ÷ poll: ${pct(c.median)} (interval ${pct(c.low)}–${pct(c.high)})`;
      };
      rows.push(
        `| adaptive IOPS ≥ 95% of best fixed | ${backend} ${placement} | ${w.label} | ${f(med('adaptive', 'iops'))} vs ${best} ${f(med(best, 'iops'))}: adaptive ÷ ${best} ${pct(q.median)} (${range(q)})${control('iops')} | ${verdictCell(ratioVerdict(q, 0.95), q, `interval ${pct(q.low)}–${pct(q.high)} against 95%`)} |`,
      );
      if (w.qd === 1) {
        const low = FIXED.reduce((x, y) => (med(y, 'p50') < med(x, 'p50') ? y : x));
        const l = pairedRatio(runs, 'adaptive', low, 'p50');
        rows.push(
          `| adaptive p50 ≤ 105% of best fixed | ${backend} ${placement} | ${w.label} | ${f(med('adaptive', 'p50'), 1)} µs vs ${low} ${f(med(low, 'p50'), 1)} µs: ${pct(l.median)} (${range(l)})${control('p50')} | ${verdictCell(ratioCapVerdict(l, 1.05), l, `interval ${pct(l.low)}–${pct(l.high)} against 105%`)} |`,
        );
      }
      if (w.qd === 32 && w.bs === 4096) {
        // What a tight C frontend pays for either side of the trade: refbench event's CPU per
        // I/O and the share of refbench poll's IOPS it keeps by blocking.
        const refPoll = summary.get(`${w.id}|ref-poll`);
        const refEvent = summary.get(`${w.id}|ref-event`);
        const yardstick = `refbench poll ${f(refPoll?.cpuPerIo, 2)}; refbench event ${f(refEvent?.cpuPerIo, 2)} at ${ratio(refEvent?.iops, refPoll?.iops)} refbench poll's IOPS`;
        for (const m of STRATEGIES) {
          const c = summary.get(`${w.id}|${m}`);
          rows.push(
            `| CPU per 4 KiB I/O at QD32 ≤ 4 µs | ${backend} ${placement} | ${w.label} (${m}) | ${f(c.cpuPerIo, 2)} µs (${yardstick}) | ${c.cpuPerIo <= 4 ? 'met' : `**missed** by ${f(c.cpuPerIo - 4, 2)} µs`}${backend === 'file' && m !== 'event' ? ' (backend-bound: polling spends its wait)' : ''} |`,
          );
        }
      }
    }
    const p = (m) => summary.get(`paced2k|${m}`);
    const pacedRuns = pair?.get('paced2k');
    if (pacedRuns) {
      const q = pairedRatio(pacedRuns, 'adaptive', 'event', 'cpuPerIo');
      const c = pacedRuns['event-control']
        ? pairedRatio(pacedRuns, 'event-control', 'event', 'cpuPerIo')
        : undefined;
      const control = c
        ? `; control, event ÷ event ${times(c.median)} (interval ${times(c.low)}–${times(c.high)})`
        : '';
      const med = (m) => median(pacedRuns[m].map((x) => x.cpuPerIo));
      const separate =
        p('adaptive') && p('event')
          ? `; separate runs: ${f(p('adaptive').cpuPerIo, 1)} vs ${f(p('event').cpuPerIo, 1)} µs (${(p('adaptive').cpuPerIo / p('event').cpuPerIo).toFixed(2)}×)`
          : '';
      rows.push(
        `| 2,000 IOPS: adaptive CPU/IO ≤ 1.2× event | ${backend} ${placement} | paced QD1 | ${f(med('adaptive'), 1)} vs ${f(med('event'), 1)} µs: ${times(q.median)} (${range(q, times)})${control}${separate} | ${verdictCell(ratioCapVerdict(q, 1.2), q, `interval ${times(q.low)}–${times(q.high)} against 1.2×`)} |`,
      );
    }
    rows.push(loopTarget(backend, placement, summary, step));
    const stepRuns = pair?.get('stepping');
    if (stepRuns) {
      const qs = FIXED.map((m) => [m, pairedRatio(stepRuns, 'adaptive', m, 'iops')]);
      // Above each: every interval above 100%; missed where one lies wholly at or below it.
      const verdicts = qs.map(([m, q]) => [m, ratioAboveVerdict(q)]);
      const not = (v) => verdicts.filter(([, x]) => x === v).map(([m]) => m);
      const medIops = (m) => median(stepRuns[m].map((x) => x.iops));
      const c = stepRuns[CONTROL] ? pairedRatio(stepRuns, CONTROL, 'poll', 'iops') : undefined;
      const control = c
        ? `; control, poll ÷ poll ${pct(c.median)} (interval ${pct(c.low)}–${pct(c.high)})`
        : '';
      const verdict =
        not('missed').length > 0
          ? `**missed**: not above ${not('missed').join(', ')}`
          : not('not resolved').length > 0
            ? `**not resolved** against ${not('not resolved').join(', ')} (the interval spans 100%, or too few rounds)`
            : 'met';
      rows.push(
        `| stepping: adaptive IOPS above each fixed | ${backend} ${placement} | 1/32/1/32 | adaptive ${f(medIops('adaptive'))}; ${qs.map(([m, q]) => `÷ ${m} (${f(medIops(m))}) ${pct(q.median)} (interval ${pct(q.low)}–${pct(q.high)}) [${pct(q.min)}–${pct(q.max)}]`).join(', ')}; ${qs[0][1].rounds} rounds${control}${step ? `; separate runs: ${FIXED.map((m) => `${m} ${f(step.get(m).iops)}`).join(', ')}, adaptive ${f(step.get('adaptive').iops)}` : ''} | ${verdict} |`,
      );
    }
  }
  return rows;
}

/**
 * The hot path allocates nothing per request beyond the Promise the caller asked for: what the
 * library allocates outside the call that makes that Promise (`#start`), per I/O, and how far
 * the call is from a bare Promise made the same way in the same process, either way (a Promise
 * counted under another frame would show as a call far below it). A heap number is 16 B here
 * (no pointer compression), and the sampling is good to about 2 B per I/O: an allowance of 12 B
 * lets through what comes every few requests (decisions, samples, a batch's kick) and catches one
 * object on every request.
 */
const GARBAGE_ALLOWANCE = 12;
function garbageTarget(results) {
  if (results.length === 0)
    return '| no per-request allocation beyond the Promise | – | – | not measured | – |';
  const cells = results
    .map(
      (r) =>
        `${r.name} depth ${r.depth}: ${f(r.library, 1)} B, the call ${f(r.call - r.promise, 1)} B`,
    )
    .join(', ');
  const over = results.filter(
    (r) => r.library > GARBAGE_ALLOWANCE || Math.abs(r.call - r.promise) > GARBAGE_ALLOWANCE,
  );
  const worst = over.reduce((a, b) => (b.library > a.library ? b : a), over[0]);
  return `| no per-request allocation beyond the Promise | null-co split | 4 KiB reads, depth 1 and 32 | bytes per I/O the library allocates outside the call that makes the Promise, and the call's bytes minus those of a bare Promise with its resolving functions (${f(Math.min(...results.map((r) => r.promise)), 0)}–${f(Math.max(...results.map((r) => r.promise)), 0)} B here); allowance ${GARBAGE_ALLOWANCE} B each: ${cells} | ${over.length === 0 ? 'met' : `**missed** where over ${GARBAGE_ALLOWANCE} B: ${over.map((r) => `${r.name} depth ${r.depth}`).join(', ')} (largest outside the call: ${worst?.sites.find((x) => x.group === 'library')?.site ?? 'none in the top sites'})`} |`;
}

async function main() {
  const argv = process.argv.slice(2);
  if (argv[0] === '--child') {
    if (argv[1] === 'stepping') return childStepping(argv[2], argv[3], Number(argv[4]));
    if (argv[1] === 'breakdown') return childBreakdown(argv[2], argv[3], Number(argv[4]));
    if (argv[1] === 'sleep-floor') return childSleepFloor();
    if (argv[1] === 'paired') {
      return childPaired(argv[2], argv[3], Number(argv[4]), Number(argv[5]));
    }
    throw new Error(`unknown child ${argv[1]}`);
  }
  const o = parseArgs(argv);
  if (!existsSync(MAIN)) {
    process.stderr.write('bench-report: dist/ is missing: run `npm run build` first\n');
    process.exit(2);
  }
  const dir = mkdtempSync(join(tmpdir(), 'vhost-user-bench-report-'));
  // The paired children's copies of the library go in here, removed with it.
  process.env[ARM_COPIES_ENV] = join(dir, 'arms');
  const backends = [];
  const cleanup = async () => {
    for (const b of backends) await b.stop().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('SIGINT', () => {
    cleanup().finally(() => process.exit(130));
  });
  try {
    const refbench = join(dir, 'refbench');
    execFileSync('gcc', ['-O2', '-o', refbench, REFBENCH_SRC], { stdio: 'inherit' });
    const quiet = await waitForQuiet();
    const started = new Date();
    const mach = machine();
    const sleepFloor = JSON.parse(await runSelfChild(o.feCpu, 'sleep-floor', [], 60_000));
    const ctx = { o, refbench };
    const all = [];
    const breakdowns = [];
    let garbageRuns = [];
    const qsdCmds = [];
    for (const kind of ['null', 'file']) {
      const backend = await startQsd(kind, dir, o.qsdCpu);
      backends.push(backend);
      qsdCmds.push(backend.shownCmd);
      const split = await interleaved(
        ctx,
        backend,
        WORKLOADS,
        o.feCpu,
        `qsd cpu ${o.qsdCpu} / fe cpu ${o.feCpu}`,
      );
      const same = await interleaved(
        ctx,
        backend,
        [WORKLOADS[0]],
        o.qsdCpu,
        `all on cpu ${o.qsdCpu}`,
      );
      const step = await stepping(ctx, backend, o.feCpu);
      const pairSplit = await paired(ctx, backend, WORKLOADS, o.feCpu, true);
      const pairSame = await paired(ctx, backend, [WORKLOADS[0]], o.qsdCpu, true);
      all.push({
        backend: kind,
        placement: 'split',
        summary: split,
        stepping: step,
        paired: pairSplit,
      });
      all.push({
        backend: kind,
        placement: 'same CPU',
        summary: same,
        stepping: undefined,
        paired: pairSame,
      });
      if (kind === 'null') {
        breakdowns.push({
          placement: `split (qsd CPU ${o.qsdCpu}, frontend CPU ${o.feCpu})`,
          rows: await breakdown(ctx, backend, o.feCpu),
        });
        breakdowns.push({
          placement: `same CPU (${o.qsdCpu})`,
          rows: await breakdown(ctx, backend, o.qsdCpu),
        });
        garbageRuns = await garbage(ctx, backend, o.feCpu);
      }
      await backend.stop();
      backends.pop();
    }
    const endLoad = loadavg();
    const md = [];
    const out = (s = '') => md.push(s);
    out(`## Run of ${started.toISOString()}`);
    out();
    out(
      `- command: \`npm run bench:report${argv.length ? ` -- ${argv.join(' ')}` : ''}\` (after \`npm run build\`)`,
    );
    out(
      `- machine: ${mach.nproc} vCPUs, ${mach.model}; kernel ${mach.kernel}; Node ${mach.node}; ${mach.qsdVersion}`,
    );
    out(
      `- load average at start: ${quiet.load.join(' ')}${quiet.waitedSeconds > 0 ? ` (after waiting ${quiet.waitedSeconds} s for it to drop)` : ''}; at the end: ${endLoad.join(' ')}`,
    );
    out(
      `- placement: qemu-storage-daemon pinned to CPU ${o.qsdCpu}, the frontend (node or refbench) to CPU ${o.feCpu} (\`taskset -c\`); the "same CPU" tables pin both to CPU ${o.qsdCpu}`,
    );
    out(
      `- method: ${o.rounds} interleaved rounds (order rotated each round) of ${o.seconds} s measured after ${o.ramp} s ramp per run, every cell a fresh process (\`node dist/src/cli/main.js bench --json\` or refbench); the median of each metric over the rounds; worst loop delay is the max over rounds. Stepping load: ${o.stepRounds} round(s), ${o.stepSeconds} s per phase. Verdicts (the Targets table): paired runs in one process per workload, strategies alternating in a balanced order (a Williams design: over each whole cycle of rounds, each runs right after every other equally often within rounds; ${o.pairRounds} rounds of ${o.pairSeconds} s after 0.3 s ramp; at depth 1 ${o.pairQd1Rounds} rounds of ${o.pairQd1Seconds} s; paced load ${o.pairPacedRounds} rounds of ${o.pairPacedSeconds} s; stepping load ${o.pairStepRounds} rounds of ${o.pairStepSeconds / PHASES} s phases), each arm importing its own copy of the library (scripts/lib/arm-copies.mjs), each round's adaptive result divided by the same round's fixed result (by the mean of the round's two poll or two event arms, where that strategy is the one), the median of those ratios with its 90% bootstrap interval (rounds resampled; src/bench/paired-ratio.ts): a verdict is met when the whole interval meets the target, missed when none of it does, and not resolved when it straddles the bound or rests on fewer than 5 rounds; a second poll arm (the control: poll ÷ poll per round) shows the method's own spread; the paced load runs adaptive, event and a second event arm (event ÷ event) only`,
    );
    out(
      `- sleep floor (\`native.sleepNs\`, the sleep of \`sleep-poll\`, on CPU ${o.feCpu}, ${sleepFloor[0].samples} sleeps each): ${sleepFloor.map((r) => `asked ${f(r.requestNs / 1000, 0)} µs → p50 ${f(r.p50 / 1000, 1)} µs, p99 ${f(r.p99 / 1000, 1)} µs, ${f(r.cpuNs / 1000, 1)} µs of CPU per sleep`).join('; ')}`,
    );
    out(`- backends: ${qsdCmds.map((c) => `\`${c}\``).join('; ')}`);
    out(
      "- columns: CPU µs/IO is the frontend process (user+sys) over the measured time; qsd CPU µs/IO is the daemon's thread run time over the whole child (ramp included, so an upper bound); ratios ÷ ref are against refbench poll (for `event`: refbench event / refbench poll)",
    );
    out();
    for (const { backend, placement, summary } of all) {
      out(
        `### ${backend === 'null' ? 'null-co' : 'raw file in /dev/shm (page cache)'} backend, ${placement === 'split' ? `qsd on CPU ${o.qsdCpu}, frontend on CPU ${o.feCpu}` : `both on CPU ${o.qsdCpu}`}`,
      );
      out();
      for (const w of WORKLOADS)
        if (summary.has(`${w.id}|adaptive`)) md.push(...cellTable(summary, w));
    }
    for (const { backend, stepping: step } of all) {
      if (!step) continue;
      out(
        `### Stepping load, ${backend} backend: 4 KiB randread, depth 1 → 32 → 1 → 32, ${o.stepSeconds} s each (split placement)`,
      );
      out();
      out(
        '| strategy | total IOPS | p50 µs | p99 µs | CPU µs/IO | qsd CPU µs/IO | kicks/IO | calls/IO | worst loop delay / GC pause / polling hold ms | per phase IOPS (p50 µs) |',
      );
      out('|---|---:|---:|---:|---:|---:|---:|---:|---:|---|');
      for (const [m, s] of step) {
        out(
          `| ${m} | ${fk(s.iops)} | ${f(s.p50, 1)} | ${f(s.p99, 1)} | ${f(s.cpuPerIo, 2)} | ${f(s.backendCpuPerIo, 2)} | ${kicksCell(s)} | ${f(s.callsPerIo, 2)} | ${loopCell(s)} | ${s.phases.map((p) => `${p.depth}: ${fk(p.iops)} (${f(p.p50, 1)})`).join(', ')} |`,
        );
      }
      out();
    }
    for (const b of breakdowns) {
      out(`### Where a QD1 4 KiB read goes (null-co, ${b.placement}; medians, µs)`);
      out();
      out(
        '| strategy | call → on ring | on ring → kick | kick (eventfd write) | kick → completion noticed (device + wait) | kick ahead (to the drain) | drain (pop + complete) | drain → await resumes | total | the call itself | kicked inside the call | not kicked | kicked ahead |',
      );
      out('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
      for (const [m, r] of b.rows) {
        out(
          `| ${m} | ${f(r.submit, 2)} | ${f(r.toKick, 2)} | ${f(r.kick, 2)} | ${f(r.deviceAndNotice, 2)} | ${f(r.ahead, 2)} | ${f(r.drain, 2)} | ${f(r.resume, 2)} | ${f(r.total, 2)} | ${f(r.call, 2)} | ${f(100 * r.kickedInCall, 0)}% | ${f(100 * r.unkicked, 0)}% | ${f(100 * r.kickedAhead, 0)}% |`,
        );
      }
      out();
    }
    out(
      `### What a 4 KiB read allocates (null-co, frontend on CPU ${o.feCpu}; bytes per I/O, V8's sampling heap profiler, collected objects included; \`scripts/garbage.mjs\`)`,
    );
    out();
    md.push(...garbageTable(garbageRuns));
    out();
    out('### Targets');
    out();
    md.push(...targets(all), garbageTarget(garbageRuns));
    out();
    process.stdout.write(`${md.join('\n')}\n`);
    writeFileSync(
      join(tmpdir(), 'vhost-user-bench-report.json'),
      JSON.stringify(
        {
          all: all.map((a) => ({
            ...a,
            summary: Object.fromEntries(a.summary),
            stepping: a.stepping && Object.fromEntries(a.stepping),
            paired: a.paired && Object.fromEntries(a.paired),
          })),
          breakdowns: breakdowns.map((b) => ({ ...b, rows: Object.fromEntries(b.rows) })),
          garbage: garbageRuns,
        },
        null,
        1,
      ),
    );
  } finally {
    await cleanup();
  }
}

await main();
