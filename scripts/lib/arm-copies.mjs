// A private copy of a build for each arm of a paired comparison in one process. Arms that import
// the same modules share V8's type feedback: the engine's calls into its policy (poll's and
// adaptive's) and the strategy calls of the device turn polymorphic, code that a process using
// one strategy never runs. Measured at depth 1 on null-co (BENCHMARKS.md, "One build per arm"):
// adaptive sharing poll's modules made 94.5% of poll's IOPS where its own copy made 98.7%, and
// a poll arm alone 105.9%. A copy is its own set of ES modules; the native addon and the
// packages in node_modules stay shared (Node loads them once per resolved path).
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  realpathSync,
  rmSync,
  symlinkSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';

/**
 * Copies of `dist` directories (a build's dist/, with src/ inside) under a temp dir, one per
 * call of `copy`, each next to links to its package's node_modules and build/ and a copy of its
 * package.json (ES module type). `remove` deletes them all.
 */
export function armCopies() {
  const root = mkdtempSync(join(tmpdir(), 'vhost-user-arms-'));
  let n = 0;
  return {
    /** A private copy of `dist`; returns its path (a dist/ directory, as given). */
    copy(dist) {
      const pkg = dirname(realpathSync(dist));
      const dir = join(root, `arm-${n++}`);
      mkdirSync(dir);
      cpSync(realpathSync(dist), join(dir, basename(dist)), { recursive: true });
      cpSync(join(pkg, 'package.json'), join(dir, 'package.json'));
      for (const link of ['node_modules', 'build']) {
        const target = join(pkg, link);
        if (existsSync(target)) symlinkSync(realpathSync(target), join(dir, link));
      }
      return join(dir, basename(dist));
    },
    remove() {
      rmSync(root, { recursive: true, force: true });
    },
  };
}
