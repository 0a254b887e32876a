// Where the benchmark scripts find refbench, the tight C frontend they measure against.
import { dirname, resolve } from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** refbench.c: $REFBENCH_SRC, or ../shared/tools/refbench.c beside the project. */
export const REFBENCH_SRC =
  process.env.REFBENCH_SRC ?? resolve(ROOT, '..', 'shared', 'tools', 'refbench.c');
