#!/usr/bin/env node
// What a 4 KiB read allocates, per I/O: V8's sampling heap profiler (through node:inspector),
// keeping the objects that minor and major collections freed, over closed loops of
// `await dev.readInto(buf, pos)` (`--rw write`: `dev.write(buf, pos)`) on a pooled
// shared-memory buffer. Each allocation site is put in one of three groups by the innermost
// frame of this library on its stack:
//   - call: `#start`, where a call makes the Promise it returns and its resolving functions
//     (the target's "the Promise the caller asked for"), or `readInto` / `write` when V8
//     inlined `#start` there. V8 puts an allocation under the outermost function of an optimized
//     frame, so what they inline counts here too. The loops are kept out of TurboFan, so that
//     frame is never the loop's: a call inlined into the loop would put what it makes with the
//     loop's own (other), where only the bytes beyond the stand-in could judge it;
//   - library: under any other frame of this library;
//   - other: no frame of this library (Node's event loop and task queues, the loop's `await`).
// Prints bytes per I/O per group, then the library's sites, largest first, and beside the call
// what a bare Promise costs here (made with its resolving functions by a shared executor, as the
// call makes its own): the baseline the call is judged against; and the same loops' bytes on a
// stand-in device that only hands out bare Promises (below), and the bytes beyond it. Each
// configuration runs in a child process of its own, as an application runs one strategy.
// (`--child SOCKET [options]` measures on a running daemon and prints a JSON line per
// configuration and window, for bench-report.mjs and the allocation test.)
//
//   npm run build && node scripts/garbage.mjs [--backend null|file] [--depth 1] [--rw read|write]
//     [--plain-buffers (ordinary Buffers: bounced)] [--seconds 3] [--interval 256] [--qsd-cpu 0] [--fe-cpu 1] [--top 12] [--no-inline]
//     [--windows 1 (sampled windows one after another in each process, a line each)]
//     [--base 0 (the loops' 256 MiB start at this byte: above 2^31, positions are not small integers;
//       off a multiple of 4096, writes are unaligned: read-modify-write)]
//     [NAME=MODE[:JSON] ...]
// GARBAGE_OTHER=1 in the environment lists the sites outside the library too (Node's frames).
import { Buffer } from 'node:buffer';
import v8 from 'node:v8';
import { Session } from 'node:inspector/promises';
import { dirname, join, resolve, sep } from 'node:path';
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { garbageTable } from './lib/garbage-table.mjs';
import { runScriptChild } from './lib/pinned-child.mjs';
import { readLoop, readLoops } from './lib/read-loops.mjs';
import { withQsd } from './lib/qsd.mjs';
import { parseConfig, parseScriptOptions } from './lib/script-options.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SELF = fileURLToPath(import.meta.url);
const LIBRARY = pathToFileURL(join(ROOT, 'dist', 'src') + sep).href;

function parseArgs(argv) {
  const { options, positionals } = parseScriptOptions(argv, {
    backend: 'null',
    depth: 1,
    rw: 'read',
    plainBuffers: false,
    seconds: 3,
    interval: 256,
    qsdCpu: 0,
    feCpu: '1',
    top: 12,
    noInline: false,
    windows: 1,
    base: 0,
  });
  if (!Number.isSafeInteger(options.base) || options.base < 0) {
    throw new Error(`--base must be a non-negative integer, got ${options.base}`);
  }
  if (!Number.isInteger(options.windows) || options.windows < 1) {
    throw new Error(`--windows must be a positive integer, got ${options.windows}`);
  }
  if (options.rw !== 'read' && options.rw !== 'write') {
    throw new Error(`--rw must be read or write, got ${options.rw}`);
  }
  const configs =
    positionals.length > 0 ? positionals : ['event=event', 'poll=poll', 'adaptive=adaptive'];
  return { ...options, configs };
}

const frameName = (f) =>
  `${f.functionName || '(anonymous)'} ${f.url.startsWith(LIBRARY) ? f.url.slice(LIBRARY.length) : f.url.split('/').pop()}:${f.lineNumber + 1}`;

/** Which group an allocation belongs to (see the top of this file), and where it was made. */
function classify(stack) {
  const at = stack.findIndex((f) => f.url.startsWith(LIBRARY));
  // Code of the application's own (its read loop's continuations, which a polling engine's
  // turn runs with native.runMicrotasks) is not the library's, even when called from it.
  const appAt = stack.findIndex((f) => f.url !== '' && !f.url.startsWith('node:'));
  if (at < 0 || appAt < at) {
    return { group: 'other', site: stack.slice(0, 3).map(frameName).join(' < ') };
  }
  const site = stack
    .slice(0, at + 1)
    .map(frameName)
    .join(' < ');
  const frame = stack[at];
  // V8 inlines #start into readInto at times (never readInto into the loop: see neverOptimize).
  const call =
    (frame.functionName === '#start' ||
      frame.functionName === 'readInto' ||
      frame.functionName === 'write') &&
    frame.url.endsWith('/api/block-device.js');
  return { group: call ? 'call' : 'library', site };
}

function walk(node, stack, out) {
  const here = [node.callFrame, ...stack];
  if (node.selfSize > 0) {
    const { group, site } = classify(here);
    out.groups[group] = (out.groups[group] ?? 0) + node.selfSize;
    if (group !== 'other' || process.env.GARBAGE_OTHER) {
      const entry = out.sites.get(site) ?? { group, bytes: 0 };
      entry.bytes += node.selfSize;
      out.sites.set(site, entry);
    }
  }
  for (const child of node.children) walk(child, here, out);
}

/**
 * Bytes per bare Promise, made as the library makes the call's (src/api/block-device.ts): a
 * shared executor leaves both resolving functions in module variables, and the Promise is
 * resolved later, from another function.
 */
let capturedResolve;
let capturedReject;
function captureResolvers(resolve, reject) {
  capturedResolve = resolve;
  capturedReject = reject;
}
// Kept a while, as a caller keeps the Promise it awaits (unused, V8 might not make it at all),
// with its resolving functions, as the library keeps them until the request settles.
const kept = new Array(1024).fill(null);
const keptResolvers = new Array(2048).fill(null);
function makePromise(i) {
  const promise = new Promise(captureResolvers);
  keptResolvers[(i & 1023) * 2] = capturedResolve;
  keptResolvers[(i & 1023) * 2 + 1] = capturedReject;
  kept[i & 1023] = promise;
}
function settlePromise(i) {
  keptResolvers[(i & 1023) * 2](i);
}

async function promiseBaseline(session, interval) {
  const count = 200_000;
  const round = (from) => {
    for (let i = from; i < from + count; i++) {
      makePromise(i);
      settlePromise(i);
    }
  };
  round(0); // warm-up: JIT
  await session.post('HeapProfiler.startSampling', {
    samplingInterval: interval,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  });
  round(count);
  const { profile } = await session.post('HeapProfiler.stopSampling');
  let bytes = 0;
  const walkAll = (node, under) => {
    // makePromise, or the loop it is inlined into (V8 names the outermost function).
    const name = node.callFrame.functionName;
    const inside = under || name === 'makePromise' || name === 'round';
    if (inside) bytes += node.selfSize;
    for (const c of node.children) walkAll(c, inside);
  };
  walkAll(profile.head, false);
  return bytes / count;
}

/**
 * A stand-in for the device: each call hands out a bare Promise (as above) and all are settled
 * at the next loop turn, from a native turn handle, as the polling strategies settle theirs.
 */
class StandIn {
  #resolvers = [];
  #count = 0;
  #turn;
  constructor(native) {
    this.native = native;
    this.#turn = native.turnCreate(() => {
      const n = this.#count;
      this.#count = 0;
      for (let i = 0; i < n; i++) this.#resolvers[i](i);
      native.runMicrotasks();
    });
  }
  allocBuffer(length) {
    return Buffer.alloc(length);
  }
  readInto() {
    const promise = new Promise(captureResolvers);
    this.#resolvers[this.#count++] = capturedResolve;
    this.native.turnSchedule(this.#turn);
    return promise;
  }
  write() {
    return this.readInto();
  }
  close() {
    this.native.turnClose(this.#turn);
  }
}

/** The read loops' loop, a literal of its own: V8 keeps the stand-in's feedback apart. */
async function standInLoop(dev, i, end, write, base) {
  const buf = dev.allocBuffer(4096);
  let block = i;
  let ios = 0;
  while (performance.now() < end) {
    block = (block + 7919) % 65536;
    if (write) await dev.write(buf, base + block * 4096);
    else await dev.readInto(buf, base + block * 4096);
    ios++;
  }
  return ios;
}

/**
 * Bytes per I/O of the same closed loops on the stand-in, all of them (the Promise, the await,
 * the turn): what a read costs with nothing of the library in it. A call's cost beyond its
 * Promise is a configuration's total less this (the loops alike unoptimized: neverOptimize).
 */
async function loopBaseline(session, native, o) {
  const dev = new StandIn(native);
  const loops = (ms) => {
    const end = performance.now() + ms;
    const write = o.rw === 'write';
    const all = Array.from({ length: o.depth }, (_, i) => standInLoop(dev, i, end, write, o.base));
    return Promise.all(all).then((counts) => counts.reduce((a, b) => a + b, 0));
  };
  try {
    await loops(1000); // warm-up: JIT
    await session.post('HeapProfiler.startSampling', {
      samplingInterval: o.interval,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true,
    });
    const ios = await loops(Math.min(o.seconds, 1.5) * 1000);
    const { profile } = await session.post('HeapProfiler.stopSampling');
    let bytes = 0;
    const walkAll = (node) => {
      bytes += node.selfSize;
      for (const c of node.children) walkAll(c);
    };
    walkAll(profile.head);
    return bytes / ios;
  } finally {
    dev.close();
  }
}

/**
 * Keeps `fn` in V8's unoptimized tiers, which inline nothing: what a library call made stays
 * under the call's own frame. Both loops alike, so their own bytes still cancel in `beyond`.
 */
function neverOptimize(fn) {
  v8.setFlagsFromString('--allow-natives-syntax');
  try {
    new Function('fn', '%NeverOptimizeFunction(fn)')(fn);
  } finally {
    v8.setFlagsFromString('--no-allow-natives-syntax');
  }
}

/**
 * One sampled window of the read loops on `dev`: I/Os, and bytes per I/O by group and by site.
 * Windows after the first run on in the same process: what V8 made of the code there stays,
 * where a re-tiering (a rare branch's first run deoptimizing a function, interpreted until it is
 * optimized again) passes.
 */
async function sampleWindow(session, dev, o) {
  await session.post('HeapProfiler.startSampling', {
    samplingInterval: o.interval,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  });
  const end = performance.now() + o.seconds * 1000;
  const ios = await readLoops(dev, o.depth, end, o.rw === 'write', o.plainBuffers, o.base);
  const { profile } = await session.post('HeapProfiler.stopSampling');
  const out = { groups: {}, sites: new Map() };
  walk(profile.head, [], out);
  const per = (bytes) => (bytes ?? 0) / ios;
  const total = Object.values(out.groups).reduce((a, b) => a + b, 0);
  const sites = [...out.sites].sort((a, b) => b[1].bytes - a[1].bytes).slice(0, o.top);
  return {
    ios,
    total: per(total),
    call: per(out.groups.call),
    library: per(out.groups.library),
    other: per(out.groups.other),
    sites: sites.map(([site, { group, bytes }]) => ({ site, group, perIo: per(bytes) })),
  };
}

/** I/Os made before the measurement, at the least. */
const WARM_UP_IOS = 60_000;
const WARM_UP_MS = 3000;

async function child(socket, o) {
  const dist = join(ROOT, 'dist', 'src');
  const { openBlockDevice } = await import(pathToFileURL(join(dist, 'index.js')).href);
  const { native } = await import(pathToFileURL(join(dist, 'native.js')).href);
  // Before either loop first runs: V8 refuses (a fatal check) a function it has compiled beyond
  // the interpreter.
  neverOptimize(readLoop);
  neverOptimize(standInLoop);
  const session = new Session();
  session.connect();
  const promise = await promiseBaseline(session, o.interval);
  const loopBytes = await loopBaseline(session, native, o);
  for (const { name, mode, options } of o.configs.map(parseConfig)) {
    const dev = await openBlockDevice(socket, {
      completion: mode,
      ...(options ? { completionOptions: options } : {}),
    });
    try {
      const write = o.rw === 'write';
      const plain = o.plainBuffers;
      // Warm-up (JIT, pools): WARM_UP_MS and WARM_UP_IOS I/Os. A strategy that makes ~10k I/Os
      // a second would otherwise be measured while V8 still (re)optimizes its turn, whose
      // interpreted code makes a heap number for each fractional result (seen: 14.6 B a read;
      // after 1 s and 30k I/Os, adaptive's unaligned writes at depth 32 still fell from 274 to
      // 11 B a write over the three windows, in a fresh clone's test run).
      const warmFrom = performance.now();
      let warmed = 0;
      while (
        (warmed < WARM_UP_IOS || performance.now() - warmFrom < WARM_UP_MS) &&
        performance.now() - warmFrom < 30_000
      ) {
        warmed += await readLoops(dev, o.depth, performance.now() + 250, write, plain, o.base);
      }
      for (let window = 1; window <= o.windows; window++) {
        const w = await sampleWindow(session, dev, o);
        const result = {
          name:
            `${name}${write ? ' (writes)' : ''}${plain ? ' (bounced)' : ''}` +
            (o.windows > 1 ? ` #${window}` : ''),
          mode,
          rw: o.rw,
          depth: o.depth,
          window,
          ios: w.ios,
          total: w.total,
          call: w.call,
          promise,
          library: w.library,
          other: w.other,
          loop: loopBytes,
          beyond: w.total - loopBytes,
          sites: w.sites,
        };
        process.stdout.write(`${JSON.stringify(result)}\n`);
      }
    } finally {
      await dev.close();
    }
  }
  session.disconnect();
}

async function main() {
  const argv = process.argv.slice(2);
  if (argv[0] === '--child') return child(argv[1], parseArgs(argv.slice(2)));
  const o = parseArgs(argv);
  await withQsd(o.backend, o.qsdCpu, {}, async (qsd) => {
    // --no-inline: each allocation under the function that made it, and the worst V8 can do:
    // a fractional or large number passed to or returned from a call it did not inline is a
    // new heap number, where inlined it stays in a register.
    const flags = o.noInline ? ['--no-turbo-inlining'] : [];
    // One child per configuration, as an application runs one strategy: run in one process,
    // the engine's calls into its policy see several kinds and V8 inlines them no longer.
    const options = argv.filter((arg) => !o.configs.includes(arg));
    const results = [];
    for (const config of o.configs) {
      const out = await runScriptChild(o.feCpu, SELF, qsd.sock, [...options, config], flags);
      for (const line of out.trim().split('\n')) results.push(JSON.parse(line));
    }
    process.stdout.write(
      `- command: \`node scripts/garbage.mjs ${argv.join(' ')}\`\n` +
        `- backend: \`${qsd.shownCmd}\`; frontend on CPU ${o.feCpu}; depth ${o.depth}, ` +
        `${o.windows} × ${o.seconds} s sampled per configuration (every ${o.interval} B on average)\n\n` +
        `${garbageTable(results).join('\n')}\n`,
    );
  });
}

await main();
