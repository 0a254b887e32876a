import { AdaptiveController } from './adaptive-controller.js';
import type { AdaptiveOptions } from './adaptive-options.js';
import { PollingCompletion, DEFAULT_MICRO_LOOK_NS, DEFAULT_SPIN_SLICE_NS } from './poll.js';
import type { CompletionHost } from './strategy.js';

/**
 * 'adaptive': poll for a bounded, self-tuned time per wait, then arm the call eventfds and
 * block. The budget comes from {@link AdaptiveController} (measured waits against the cost of a
 * wake-up); the spin is spread over event-loop turns of at most `sliceNs` each, so the loop is
 * never blocked for long, and nothing spins while no request is in flight. Under a deep queue
 * on a device slower than the frontend it blocks for batches of completions instead (interrupt
 * moderation with EVENT_IDX).
 */
export class AdaptiveCompletion extends PollingCompletion {
  /** Exposed for diagnostics (budget, decisions). */
  readonly controller: AdaptiveController;

  constructor(
    host: CompletionHost,
    options: Partial<AdaptiveOptions> = {},
    sliceNs: number = DEFAULT_SPIN_SLICE_NS,
    kickAhead = true,
    microSpinNs = DEFAULT_MICRO_LOOK_NS,
  ) {
    const controller = new AdaptiveController(options);
    controller.deferDecisions();
    super('adaptive', host, controller, { sliceNs, sleepNs: 0, kickAhead, microSpinNs });
    this.controller = controller;
  }
}
