/**
 * The library used in unusual ways: inside worker threads, several devices in one process with
 * different completion strategies, devices closed from their own callbacks. Peers:
 * qemu-storage-daemon and the embedded backend in a child process. What runs in a worker runs in
 * a child Node process (runScript), so a crash or a leak there cannot take the test runner down.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { COMPLETION_MODES } from '../../src/completion/index.js';
import { startQsd, type Qsd } from '../helpers/qsd.js';
import { LIBRARY_ENTRY, runScript, runScriptJson } from '../helpers/run-script.js';

let qsd: Qsd;

before(async () => {
  qsd = await startQsd({ size: 16 << 20 });
});

after(async () => {
  await qsd?.stop();
});

/**
 * A script for runScript that runs `body` (an async function's, given `lib`, the library, and
 * `data`, with the socket and the item) in a worker thread, one worker after another per item
 * of `items`, and prints what each worker posted, how it exited and how many more fds the
 * process has open than before it. The main thread loads the
 * library only if `mainLoads`.
 */
function workersScript(body: string, items: readonly unknown[], mainLoads: boolean): string {
  const worker = [
    // The child runs with --input-type=module, which its eval'ed workers inherit.
    "import { parentPort, workerData as data } from 'node:worker_threads';",
    '(async () => {',
    '  const lib = await import(data.entry);',
    body,
    '})().then(',
    '  (result) => parentPort.postMessage(String(result)),',
    '  (err) => parentPort.postMessage(`failed: ${err?.stack ?? err}`),',
    ');',
  ].join('\n');
  return [
    "import { readdirSync } from 'node:fs';",
    "import { Worker } from 'node:worker_threads';",
    "const fds = () => readdirSync('/proc/self/fd').length;",
    mainLoads ? `await import(${JSON.stringify(LIBRARY_ENTRY)});` : '',
    // Node opens /dev/null for good as its first worker starts: not the library's.
    "await new Promise((resolve) => new Worker('', { eval: true }).on('exit', resolve));",
    `for (const item of ${JSON.stringify(items)}) {`,
    '  const before = fds();',
    `  const w = new Worker(${JSON.stringify(worker)}, {`,
    `    eval: true, workerData: { entry: ${JSON.stringify(LIBRARY_ENTRY)}, item, socket: ${JSON.stringify(qsd.socketPath)} },`,
    '  });',
    // Apart: a worker's last message and its error event come in either order.
    "  let said = '';",
    "  let failed = '';",
    "  w.on('message', (m) => (said += m));",
    "  w.on('error', (e) => (failed += ` error: ${e.message}`));",
    "  const code = await new Promise((resolve) => w.on('exit', resolve));",
    '  console.log(`${item}: ${said}${failed} (exit ${code}), ${fds() - before} fds left`);',
    '}',
  ].join('\n');
}

test('a worker thread that alone loaded the library opens a device, does I/O with each strategy, and exits: the process lives on', async () => {
  // Node unloads the addons a worker loaded when the worker exits, before V8 frees its heap, and
  // the rings' SharedArrayBuffer has the addon's deleter: the process died of SIGSEGV as the
  // first worker ended (RTLD_NODELETE keeps the addon mapped).
  const body = [
    '  const dev = await lib.openBlockDevice(data.socket, { completion: data.item });',
    '  await dev.write(Buffer.alloc(4096, 0x5a), 4096);',
    '  const back = Buffer.alloc(4096);',
    '  dev.readSync(back, 4096);',
    '  const again = await dev.read(4096, 4096);',
    '  await dev.close();',
    "  return back.every((b) => b === 0x5a) && again.equals(back) ? 'ok' : 'bad data';",
  ].join('\n');
  const { code, signal, out } = await runScript(
    workersScript(body, COMPLETION_MODES, false),
    60_000,
  );
  assert.deepEqual(
    { code, signal, out: out.trim().split('\n') },
    {
      code: 0,
      signal: null,
      out: COMPLETION_MODES.map((mode) => `${mode}: ok (exit 0), 0 fds left`),
    },
  );
});

test('a worker that ends without closing its device (falls off its end, process.exit, throws) leaves no fd open and the backend free', async () => {
  // fds are the process's: they stayed open after the worker, the socket with them, so
  // qemu-storage-daemon (one connection at a time) kept serving the dead worker and the next
  // open timed out in its handshake. Requests are in flight when the worker exits or throws.
  const body = [
    '  const dev = await lib.openBlockDevice(data.socket, { completion: "poll", timeout: 3000 });',
    '  await dev.read(0, 4096);',
    '  if (data.item === "end") return "ended";',
    '  const loop = async () => { for (let i = 0; ; i++) await dev.read((i % 64) * 4096, 4096); };',
    '  for (let i = 0; i < 4; i++) void loop();',
    '  await new Promise((resolve) => setTimeout(resolve, 50));',
    '  if (data.item === "exit") process.exit(0);',
    '  setImmediate(() => { throw new Error("thrown"); });',
    '  return "threw";',
  ].join('\n');
  const { code, signal, out } = await runScript(
    workersScript(body, ['end', 'exit', 'throw', 'end'], true),
    60_000,
  );
  assert.deepEqual(
    { code, signal, out: out.trim().split('\n') },
    {
      code: 0,
      signal: null,
      out: [
        'end: ended (exit 0), 0 fds left',
        'exit:  (exit 0), 0 fds left',
        'throw: threw error: thrown (exit 1), 0 fds left',
        'end: ended (exit 0), 0 fds left',
      ],
    },
  );
});

/** Script lines defining `targets()`: the process's open fds, each with what it names (readlink). */
const FD_TARGETS = [
  'const targets = () => {',
  '  const map = new Map();',
  "  for (const fd of readdirSync('/proc/self/fd')) {",
  // An fd gone between the listing and the readlink (readdirSync's own).
  '    try { map.set(Number(fd), readlinkSync(`/proc/self/fd/${fd}`)); } catch {}',
  '  }',
  '  return map;',
  '};',
];

test('a worker ended by terminate() with its device open and I/O in flight leaves no fd or mapping behind, and the backend takes the next connection', async () => {
  // No 'exit' event runs in a terminated worker, so no JavaScript can close what it opened: the
  // socket, the memfds and the eventfds stayed open for the life of the process, and
  // qemu-storage-daemon (one connection at a time) never answered the next open's handshake.
  // The addon closes them as the worker's environment is torn down (native/fds.cc).
  const nullQsd = await startQsd({ driver: 'null', size: 16 << 20 });
  try {
    const worker = [
      "import { parentPort, workerData as data } from 'node:worker_threads';",
      "import { readdirSync, readlinkSync } from 'node:fs';",
      ...FD_TARGETS,
      '(async () => {',
      '  const lib = await import(data.entry);',
      '  const before = targets();',
      "  const dev = await lib.openBlockDevice(data.socket, { completion: 'event', timeout: 3000 });",
      '  await dev.read(0, 4096);',
      // The fds that came with the device: their numbers and what each is.
      '  const made = [...targets()].filter(([fd, target]) => before.get(fd) !== target);',
      '  const loop = async () => { for (let i = 0; ; i++) await dev.read((i % 64) * 4096, 4096); };',
      '  for (let i = 0; i < 4; i++) void loop();',
      '  parentPort.postMessage(made);',
      '})().catch((err) => parentPort.postMessage(`failed: ${err?.stack ?? err}`));',
    ].join('\n');
    const script = [
      "import { readdirSync, readlinkSync, readFileSync } from 'node:fs';",
      "import { Worker } from 'node:worker_threads';",
      "import { setTimeout as sleep } from 'node:timers/promises';",
      ...FD_TARGETS,
      // Node opens /dev/null for good as its first worker starts: not the library's.
      "await new Promise((resolve) => new Worker('', { eval: true }).on('exit', resolve));",
      'const before = targets();',
      `const w = new Worker(${JSON.stringify(worker)}, {`,
      `  eval: true, workerData: { entry: ${JSON.stringify(LIBRARY_ENTRY)}, socket: ${JSON.stringify(nullQsd.socketPath)} },`,
      '});',
      'const made = await new Promise((resolve, reject) => {',
      "  w.once('message', resolve);",
      "  w.once('error', reject);",
      '});',
      'if (!Array.isArray(made)) throw new Error(String(made));',
      'await sleep(50);',
      'const code = await w.terminate();',
      'const now = targets();',
      // Each fd of the device is closed, or its number is something else's now.
      'const left = made.filter(([fd, target]) => now.get(fd) === target);',
      "const maps = readFileSync('/proc/self/maps', 'utf8');",
      'const memfds = made.map(([, target]) => target).filter((t) => t.startsWith("/memfd:"));',
      "const mapped = memfds.filter((t) => maps.includes(t.replace(/ \\(deleted\\)$/, '')));",
      'const kinds = [...new Set(made.map(([, t]) => t.replace(/[:\\[].*/, "")))].sort();',
      `const lib = await import(${JSON.stringify(LIBRARY_ENTRY)});`,
      'const reopen = (async () => {',
      `  const dev = await lib.openBlockDevice(${JSON.stringify(nullQsd.socketPath)}, { timeout: 3000 });`,
      '  await dev.read(0, 4096);',
      '  await dev.close();',
      "  return 'reopened';",
      '})();',
      'const reopened = await Promise.race([',
      '  reopen.catch((err) => `reopen failed: ${err.message}`),',
      // Unref'ed: the process ends as soon as the open has.
      "  sleep(8000, 'reopen hung', { ref: false }),",
      ']);',
      'console.log(JSON.stringify({ code, kinds, left, extra: now.size - before.size, mapped, reopened }));',
    ].join('\n');
    assert.deepEqual(await runScriptJson(script, 60_000), {
      code: 0,
      signal: null,
      result: {
        code: 1,
        kinds: ['/memfd', 'anon_inode', 'socket'],
        left: [],
        extra: 0,
        mapped: [],
        reopened: 'reopened',
      },
    });
  } finally {
    await nullQsd.stop();
  }
});

test("a worker's teardown closes only the fds that are still what the addon gave it", async () => {
  // fd numbers are reused at once: an fd closed through the addon (in any thread) is forgotten
  // before its number can be given again, and one closed behind the addon's back is closed at
  // teardown only if the number still names the same file. Here the main thread closes two of
  // the worker's fds, one each way, and takes their numbers for files of its own: the first for
  // another file, the second for the same file (opened again through /proc), which only the
  // forgetting tells from the worker's.
  const nativeEntry = new URL('../../src/native.js', import.meta.url).href;
  const worker = [
    "import { parentPort, workerData as data } from 'node:worker_threads';",
    '(async () => {',
    '  const { native } = await import(data.entry);',
    "  const behind = native.memfdCreate('vu-behind', 0);",
    "  const handed = native.memfdCreate('vu-handed', 0);",
    '  const held = native.eventfd();',
    '  parentPort.postMessage({ behind, handed, held });',
    '  setInterval(() => {}, 1000);',
    '})().catch((err) => parentPort.postMessage(`failed: ${err?.stack ?? err}`));',
  ].join('\n');
  const script = [
    "import { closeSync, openSync, readlinkSync } from 'node:fs';",
    "import { Worker } from 'node:worker_threads';",
    `const { native } = await import(${JSON.stringify(nativeEntry)});`,
    "const target = (fd) => { try { return readlinkSync(`/proc/self/fd/${fd}`); } catch { return 'closed'; } };",
    `const w = new Worker(${JSON.stringify(worker)}, { eval: true, workerData: { entry: ${JSON.stringify(nativeEntry)} } });`,
    "const fds = await new Promise((resolve, reject) => { w.once('message', resolve); w.once('error', reject); });",
    "if (typeof fds !== 'object') throw new Error(String(fds));",
    'closeSync(fds.behind);',
    "const file = openSync('/dev/zero', 'r');",
    "const alias = openSync(`/proc/self/fd/${fds.handed}`, 'r');",
    'native.close(fds.handed);',
    "const again = openSync(`/proc/self/fd/${alias}`, 'r');",
    'const held = target(fds.held);',
    'await w.terminate();',
    'console.log(JSON.stringify({',
    '  reused: file === fds.behind && again === fds.handed,',
    '  file: target(file),',
    '  again: target(again),',
    '  held: [held, target(fds.held)],',
    '}));',
  ].join('\n');
  assert.deepEqual(await runScriptJson(script, 30_000), {
    code: 0,
    signal: null,
    result: {
      reused: true,
      file: '/dev/zero',
      again: '/memfd:vu-handed (deleted)',
      held: ['anon_inode:[eventfd]', 'closed'],
    },
  });
});
