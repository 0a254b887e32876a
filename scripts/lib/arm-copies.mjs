// A private copy of the library for each arm of a paired comparison in one process. Arms that
// import the same modules share V8's type feedback (the engine's calls into its policy, the
// device's into its strategy, the harness's into the device turn polymorphic) and the modules'
// per-thread state (the preemption count, the spin's yield history, sleep-poll's learnt
// overshoot), which a process using one strategy has to itself; so each arm is measured as
// such a process would run it. (Whether sharing moved the depth-1 verdicts was not settled:
// BENCHMARKS.md, "One copy of the library per arm".) Each arm also gets its
// own instance of the harness module that makes its I/O (an import with a query is a new module
// instance; what that module imports, off the I/O path, stays shared). The native addon and
// node_modules stay shared: Node loads them once per real path.
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  realpathSync,
  rmSync,
  symlinkSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import process from 'node:process';
import { pathToFileURL, URL } from 'node:url';

/**
 * Where a parent script asks its child to put the copies (inside the parent's own temp dir,
 * which it removes however the child ends, a SIGKILL included).
 */
export const ARM_COPIES_ENV = 'VHOST_USER_ARM_COPIES_DIR';

/** The node_modules directory the package at `pkg` resolves its dependencies from. */
function nodeModulesOf(pkg) {
  const require = createRequire(join(pkg, 'package.json'));
  let manifest;
  try {
    manifest = require.resolve('hdr-histogram-js/package.json');
  } catch (cause) {
    throw new Error(
      `${pkg}: its dependencies are not installed (npm ci there, or link node_modules)`,
      { cause },
    );
  }
  return dirname(dirname(manifest));
}

/**
 * Runs `fn(copies)`, then removes the copies. `copies.copy(dist)` copies a build's dist/src
 * (dist: a build's dist/ directory) into a directory of its own next to links to the
 * package's node_modules and build/ and a copy of its package.json (the ES module type), and
 * returns the copy's dist/. `copies.instance(url)` imports a new instance of a harness module.
 */
export async function withArmCopies(fn) {
  // A dir of its own, inside the given one: children never share or delete the parent's dir.
  const given = process.env[ARM_COPIES_ENV];
  if (given) mkdirSync(given, { recursive: true });
  const root = mkdtempSync(join(given || tmpdir(), 'vhost-user-arms-'));
  let n = 0;
  const copies = {
    copy(dist) {
      const real = realpathSync(dist);
      const pkg = dirname(real);
      const build = join(pkg, 'build');
      if (!existsSync(build))
        throw new Error(`${pkg}: no build/ (the native addon): build it first`);
      const dir = join(root, `arm-${n++}`);
      mkdirSync(dir);
      cpSync(join(real, 'src'), join(dir, 'dist', 'src'), { recursive: true });
      cpSync(join(pkg, 'package.json'), join(dir, 'package.json'));
      symlinkSync(realpathSync(build), join(dir, 'build'));
      symlinkSync(realpathSync(nodeModulesOf(pkg)), join(dir, 'node_modules'));
      return join(dir, 'dist');
    },
    instance(url) {
      return import(`${url}?arm=${n++}`);
    },
  };
  try {
    return await fn(copies);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

/**
 * What one arm runs with: its build (`dist`, a dist/ directory; copied when `copies` is given,
 * withArmCopies' argument) and the harness that makes its I/O (runBench from that build; the
 * stepping load and the plain loop, a module instance of their own with `copies`).
 */
export async function loadArm(dist, copies) {
  const own = copies ? copies.copy(dist) : dist;
  const harness = (name) => {
    const url = new URL(`./${name}`, import.meta.url).href;
    return copies ? copies.instance(url) : import(url);
  };
  const bench = await import(pathToFileURL(join(own, 'src', 'bench', 'index.js')).href);
  return {
    dist: own,
    runBench: bench.runBench,
    steppingRun: (await harness('stepping.mjs')).steppingRun,
    plainRun: (await harness('plain-run.mjs')).plainRun,
  };
}
