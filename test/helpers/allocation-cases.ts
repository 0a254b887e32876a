/**
 * What a 4 KiB read or write allocates, per strategy, against qemu-storage-daemon (null-co),
 * from and into allocBuffer memory and (bounced) ordinary Buffers: the hot path makes no
 * per-request object beyond the Promise the caller asked for. Measured by
 * scripts/garbage.mjs (V8's sampling heap profiler, one child process per strategy, as an
 * application runs one) and judged with room for sampling noise and per-batch costs: an object
 * (24 B and up), a closure or a lone 16 B heap number made per request in the call's or the
 * library's frames lands above the bounds. One made in Node's own frames is judged only by the
 * bytes beyond the stand-in (BEYOND_BOUND), which at depth 1 under poll and adaptive sit ~40 B
 * below it: there, up to ~60 B pass. The loops stay unoptimized, so the call's Promise is always
 * under the call's frame.
 *
 * Every case runs past 3 TiB of a 4 TiB disk, where positions, sector numbers and GPAs are all
 * above 2^31, as on the disks people use; and twice: as V8 compiles it here, and at the worst V8
 * can do, inlining nothing (--no-turbo-inlining: TurboFan's inlining; Node 20 runs no Maglev).
 * Such a number passed to or returned from a call, or stored in a field first defined as
 * undefined, is a new heap number: what a process in CI did once for a GPA that one call was
 * not inlined (16.7 B a write), and what every write did on any disk over 2 GiB (32 B).
 *
 * One test file per strategy and variant (test/integration/allocation-MODE[-uninlined].test.ts,
 * named so: the file's name says what it runs), each about a minute: a file of them all would
 * outlast the test runner's per-file timeout.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { readdirSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { COMPLETION_MODES } from '../../src/completion/index.js';
import { startQsd, type Qsd } from './qsd.js';

const GARBAGE = fileURLToPath(new URL('../../../scripts/garbage.mjs', import.meta.url));

interface GarbageResult {
  ios: number;
  total: number;
  call: number;
  promise: number;
  library: number;
  loop: number;
  beyond: number;
  sites: { site: string; perIo: number }[];
}

/** null-co allocates nothing: a disk this large costs the daemon no memory. */
const DISK_BYTES = 4 * 2 ** 40;

let qsd: Qsd;

interface Case {
  rw: 'read' | 'write';
  depth: 1 | 32;
  /** Ordinary Buffers (bounced through the library's own memory), not allocBuffer's. */
  bounced: boolean;
  /**
   * 4 KiB writes 100 bytes off the device's 512-byte blocks: read-modify-write (two edge reads,
   * then the write's pieces), judged by the library's and the call's bytes only: the stand-in
   * answers each call in one turn where these take three device round trips, each a wake-up
   * that costs Node ~56 B (beyond it: 55-62 B under event, 160-175 B under poll and adaptive
   * at depth 1, measured).
   */
  unaligned?: boolean;
}

/** How the child runs: V8 as it is, or inlining nothing; both at positions from 3 TiB. */
interface Variant {
  label: string;
  nodeFlags: string[];
  base: number;
}
const VARIANTS = {
  compiled: { label: ', past 3 TiB', nodeFlags: [], base: 3 * 2 ** 40 },
  uninlined: {
    label: ', nothing inlined, past 3 TiB',
    nodeFlags: ['--no-turbo-inlining'],
    base: 3 * 2 ** 40,
  },
} satisfies Record<string, Variant>;

/**
 * A process can catch V8 re-tiering a function: a rarely taken branch's first run (a kick-ahead
 * trial's start, a decision that turns to blocking) deoptimizes it, and until it is optimized
 * again its double arithmetic makes a heap number per operation (15-23 B per write in the
 * library over a second, in 2 of 16 processes here; 69.5 B once in CI). A re-tiering passes,
 * while what V8 made of the code in a process stays. So each process samples WINDOWS seconds
 * one after another, and a case passes if one of them is within the bounds: an allocation made
 * for every request shows in every window of a process that makes it. (One that V8's choices
 * put in some processes only, as `#start`'s context was in 3 of 41, is caught in those alone;
 * one made on one path only, say while adaptive blocks, passes if a window runs another.)
 */
const WINDOWS = 3;

/**
 * On a machine whose other tenants take the CPUs, a whole process can miss: the load flips
 * adaptive between spinning and blocking, each flip runs a branch the warm-up never did or
 * stores a controller field's first fraction (a new map: "wrong map" for every method compiled
 * against the old), V8 deoptimizes, and while the code runs unoptimized its double arithmetic
 * makes heap numbers (CI: 18.6, 182.8 and 17.1 B per read in the library at 6-39k IOPS, from
 * #update, #inTrial and their callees; here, with two busy loops beside the test, 2 of 5
 * processes so at 6-34k IOPS, and windows up to 502 B). Such windows differ from each other
 * by 2-30x, where an allocation V8 put in every request of a process makes about the same
 * bytes in each. So a process whose every window misses gets a second process, unless the
 * library's bytes are over its bound in every window and within TIERING_SPREAD of each other:
 * that fails at once. An allocation made in every process misses in both.
 */
const PROCESSES = 2;
const TIERING_SPREAD = 1.5;

/**
 * The child's warm-up is at most 30 s; the windows, the baselines and the open add a few. (A
 * process takes 7-11 s here: a file's eight cases, each with a second process, fit the test
 * runner's per-file limit, --test-timeout in package.json, 300 s.)
 */
const CHILD_TIMEOUT_MS = 90_000;

async function measure(mode: string, c: Case, v: Variant): Promise<GarbageResult[]> {
  const args = [...v.nodeFlags, GARBAGE, '--child', qsd.socketPath];
  const base = v.base + (c.unaligned === true ? UNALIGNED_BY : 0);
  args.push('--depth', String(c.depth), '--rw', c.rw, '--base', String(base));
  args.push('--seconds', '1', '--windows', String(WINDOWS));
  if (c.bounced) args.push('--plain-buffers');
  const { stdout } = await promisify(execFile)(process.execPath, [...args, `${mode}=${mode}`], {
    timeout: CHILD_TIMEOUT_MS,
  });
  return stdout
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as GarbageResult);
}

// Beyond the stand-in (the same loops on a device that only hands out bare Promises), measured
// -3 to 8 B here, but -32 to -42 B for poll and adaptive at depth 1: there each read is a loop
// turn on the stand-in, where polling settles it in a turn it is already in (so this bound
// catches less there); at depth 32 the stand-in settles all 32 in a turn, where the device's
// batches shrink on a slow machine (a callback into JavaScript costs V8 ~56 B), yet a burst's
// process.nextTick (21-26 B) is caught.
const BEYOND_BOUND = { 1: 24, 32: 16 } as const;

// The library's frames, measured 0.0-0.7 B in most windows and up to 9.4 B where V8 was
// re-tiering something: a lone heap number made for every request (16 B) is over it.
const LIBRARY_BOUND = 8;

const CASES: Case[] = [
  { rw: 'read', depth: 1, bounced: false },
  { rw: 'read', depth: 32, bounced: false },
  { rw: 'write', depth: 1, bounced: false },
  { rw: 'write', depth: 32, bounced: false },
  { rw: 'read', depth: 1, bounced: true },
  { rw: 'write', depth: 1, bounced: true },
  { rw: 'write', depth: 1, bounced: false, unaligned: true },
  { rw: 'write', depth: 32, bounced: true, unaligned: true },
];
const UNALIGNED_BY = 100;

/** Which bounds a measurement exceeds (none: it passes). */
function overBounds(r: GarbageResult, c: Case): string[] {
  const detail = JSON.stringify(r.sites.slice(0, 3));
  const over: string[] = [];
  if (r.ios <= 1000) over.push(`only ${r.ios} I/Os measured`);
  // Both ways: below, the call's own Promise was not under the call (the loops are never
  // optimized, so nothing is inlined into them) or the sampling fell short; a window of ~8k
  // unaligned writes samples the call's 216 B to about ±4 B, so one window can be 8 B short.
  if (Math.abs(r.call - r.promise) > 8) {
    over.push(`the call made ${r.call} B, a bare Promise ${r.promise}`);
  }
  if (r.library > LIBRARY_BOUND) over.push(`the library made ${r.library} B per I/O: ${detail}`);
  if (c.unaligned !== true && r.beyond > BEYOND_BOUND[c.depth]) {
    over.push(`${r.beyond} B per I/O beyond the stand-in's ${r.loop}: ${detail}`);
  }
  return over;
}

/**
 * The calling file's tests, from its name (allocation-MODE[-uninlined].test.js): every case under
 * MODE, run as the variant says, against a daemon of its own. Every file also checks that each
 * completion mode has both of its files.
 */
export function defineAllocationTests(fileUrl: string): void {
  const file = basename(fileURLToPath(fileUrl));
  const named = /^allocation-(.+?)(-uninlined)?\.test\.js$/.exec(file);
  const mode = COMPLETION_MODES.find((m) => m === named?.[1]);
  if (named === null || mode === undefined) throw new Error(`${file}: not an allocation test name`);
  const variant = named[2] === undefined ? VARIANTS.compiled : VARIANTS.uninlined;
  before(async () => {
    qsd = await startQsd({ driver: 'null', size: DISK_BYTES });
  });
  after(async () => {
    await qsd.stop();
  });
  for (const c of CASES) defineCase(mode, c, variant);
  test('every completion mode has its allocation test files', () => {
    const files = readdirSync(dirname(fileURLToPath(fileUrl)));
    for (const m of COMPLETION_MODES) {
      for (const name of [`allocation-${m}.test.js`, `allocation-${m}-uninlined.test.js`]) {
        assert.ok(files.includes(name), `${name} is missing`);
      }
    }
  });
}

function defineCase(mode: string, c: Case, v: Variant): void {
  const kind = `${c.bounced ? 'bounced ' : ''}${c.unaligned === true ? 'unaligned ' : ''}${c.rw}`;
  const what = `${kind.startsWith('u') ? 'an' : 'a'} ${kind}`;
  const name =
    `${mode}, depth ${c.depth}${v.label}: ` +
    `${what} allocates nothing per request beyond its Promise`;
  test(name, { timeout: PROCESSES * CHILD_TIMEOUT_MS + 30_000 }, async (t) => {
    const f = (bytes: number): string => bytes.toFixed(1);
    const failures: string[] = [];
    for (let p = 1; p <= PROCESSES; p++) {
      const windows = await measure(mode, c, v);
      assert.equal(windows.length, WINDOWS);
      let missedWindows = 0;
      for (const [i, r] of windows.entries()) {
        const where = `process ${p}, window ${i + 1}`;
        t.diagnostic(
          `${where}: ${r.ios} I/Os; B per I/O: call ${f(r.call)} (a bare Promise ` +
            `${f(r.promise)}), library ${f(r.library)}, beyond the stand-in ${f(r.beyond)}`,
        );
        const exceeded = overBounds(r, c);
        if (exceeded.length > 0) {
          missedWindows++;
          failures.push(`${where}: ${exceeded.join('; ')}`);
        }
      }
      if (missedWindows < WINDOWS) return;
      // Fails at once on a steady allocation in the library's frames; a miss elsewhere (Node's
      // frames, too few I/Os) or a spread as re-tiering makes gets the second process.
      const library = windows.map((r) => r.library);
      const steady =
        library.every((bytes) => bytes > LIBRARY_BOUND) &&
        Math.max(...library) < TIERING_SPREAD * Math.min(...library);
      if (steady) break;
    }
    assert.fail(failures.join('\n'));
  });
}
