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
import { LIBRARY_ENTRY, runScript } from '../helpers/run-script.js';

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
