/**
 * Runs now what Node runs after every callback from the event loop: the process.nextTick
 * callbacks and the microtasks (promise continuations) queued so far, and those they queue.
 * For a callback that settled promises and wants their continuations' requests before it
 * returns. Node's own routine for that, process._tickCallback (its runNextTicks), which Node
 * documents as deprecated (DEP0134, with no replacement; a warning under
 * --pending-deprecation) but still exposes; undefined on a Node without it. Node's order is
 * kept: ticks before microtasks, and the ticks they queue.
 */
export const runPendingCallbacks: (() => void) | undefined = (() => {
  const run: unknown = (process as { _tickCallback?: unknown })._tickCallback;
  return typeof run === 'function' ? (run as () => void).bind(process) : undefined;
})();
