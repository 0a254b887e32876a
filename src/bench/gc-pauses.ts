import { PerformanceObserver } from 'node:perf_hooks';
import type { GcPauses } from './options.js';

export interface GcPauseWatch {
  /** Updated as Node reports the pauses. */
  readonly pauses: GcPauses;
  reset(): void;
  end(): void;
  /** Waits for Node to report the pauses up to end(), then stops watching. */
  stop(): Promise<void>;
}

/**
 * Counts the garbage-collection pauses that start between reset() (or now) and end(). Node
 * reports them a little later, so the observer stays on until stop().
 */
export function watchGcPauses(): GcPauseWatch {
  const pauses: GcPauses = { count: 0, longestNs: 0, totalNs: 0 };
  let from = performance.now();
  let until = Infinity;
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      if (entry.startTime < from || entry.startTime > until) continue;
      const ns = Math.round(entry.duration * 1e6);
      pauses.count++;
      pauses.totalNs += ns;
      if (ns > pauses.longestNs) pauses.longestNs = ns;
    }
  });
  observer.observe({ entryTypes: ['gc'] });
  return {
    pauses,
    reset() {
      from = performance.now();
      pauses.count = 0;
      pauses.longestNs = 0;
      pauses.totalNs = 0;
    },
    end() {
      until = performance.now();
    },
    async stop() {
      // Node reports a pause from an immediate queued after it: two loop turns pass them all.
      for (let i = 0; i < 2; i++) await new Promise((resolve) => setImmediate(resolve));
      observer.disconnect();
    },
  };
}
