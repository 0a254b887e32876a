import { InvalidArgumentError } from '../errors.js';
import { EventCompletion } from './event.js';
import type { CompletionHost, CompletionStrategy } from './strategy.js';

/** How completions are noticed; see README "Completion strategies". */
export type CompletionMode = 'event';

export const COMPLETION_MODES: readonly CompletionMode[] = ['event'];

export function createCompletion(mode: CompletionMode, host: CompletionHost): CompletionStrategy {
  switch (mode) {
    case 'event':
      return new EventCompletion(host);
    default:
      throw new InvalidArgumentError(
        `completion must be one of ${COMPLETION_MODES.join(', ')}, got ${String(mode)}`,
      );
  }
}
