// Where the scripts import the built library from: this checkout's dist/ (`npm run build`).
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The URL of a module of the built library, by its path under src/ ('index.js'). */
export const distUrl = (path) => pathToFileURL(join(ROOT, 'dist', 'src', path)).href;
