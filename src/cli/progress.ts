import { formatSize } from './size.js';

/**
 * A live status line on stderr, redrawn at most 10 times a second, only when stderr is a
 * terminal (pipes and logs get nothing, so output stays parseable).
 */
export class ProgressLine {
  readonly #enabled: boolean;
  #last = 0;
  #drawn = false;

  constructor(enabled = process.stderr.isTTY === true) {
    this.#enabled = enabled;
  }

  update(render: () => string, force = false): void {
    if (!this.#enabled) return;
    const now = Date.now();
    if (!force && now - this.#last < 100) return;
    this.#last = now;
    const width = (process.stderr.columns ?? 80) - 1;
    process.stderr.write(`\r${render().slice(0, width)}\x1b[K`);
    this.#drawn = true;
  }

  /** Erases the line so the summary that follows starts clean. */
  done(): void {
    if (this.#drawn) process.stderr.write('\r\x1b[K');
    this.#drawn = false;
  }
}

/** "[#####.....]  42%  12.0 MiB / 28.6 MiB  95.1 MiB/s" */
export function transferLine(done: number, total: number, startedMs: number): string {
  const fraction = total > 0 ? done / total : 1;
  const bar = 24;
  const filled = Math.round(fraction * bar);
  const seconds = Math.max(1e-3, (Date.now() - startedMs) / 1000);
  return (
    `[${'#'.repeat(filled)}${'.'.repeat(bar - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}%  ` +
    `${formatSize(done)} / ${formatSize(total)}  ${formatSize(done / seconds)}/s`
  );
}
