/** Counters a device keeps; `dev.stats` returns a copy. */
export interface DeviceStats {
  /** Device requests submitted to the rings (one user call can make several). */
  requests: number;
  completions: number;
  /** Times we notified the device through a kick eventfd. */
  kicks: number;
  /**
   * Of those, kicks ahead of a request not yet made: polling, as a drain is about to leave the
   * device idle (README, "Kicking ahead").
   */
  kicksAhead: number;
  /**
   * Trials of the kick ahead concluded with a verdict (KickAheadTrial), and of those, the ones
   * after which kicks ahead were off (harm found twice in a row) until the next.
   */
  kickAheadTrials: number;
  kickAheadTrialsAgainst: number;
  /** Times the device's call eventfd woke us. */
  calls: number;
  /** Bytes copied through bounce buffers (0 when all I/O uses allocBuffer memory). */
  bytesBounced: number;
  /** Unaligned writes done as read-modify-write. */
  readModifyWrites: number;
  /** Requests that had to wait for a free descriptor, slot or bounce buffer. */
  queuedForResources: number;
  /** Operation objects the asynchronous read/write paths had to create (the rest were reused). */
  operationsAllocated: number;
  /** virtio-scsi: commands sent again after BUSY, UNIT ATTENTION or a transport failure. */
  retries: number;
  /** virtio-scsi: ABORT TASK and LOGICAL UNIT RESET requests sent after timeouts. */
  taskAborts: number;
  lunResets: number;
  /** virtio-scsi: deferred errors the target reported (an acknowledged command failed later). */
  deferredErrors: number;
  /** Event-loop turns in which a polling strategy spun or slept waiting for completions. */
  pollingTurns: number;
  /** Of those, turns whose spin or sleep lasted 1 ms or more on the clock. */
  pollingTurnsOver1ms: number;
  /**
   * Of those, turns whose spin or sleep held the thread 1 ms or more itself: not counting what
   * others did meanwhile, told by timing alone (a preempting thread, the host's stalls, a
   * garbage collection or compilation on this thread, a late yield, a sleep's late wake-up).
   */
  pollingHoldsOver1ms: number;
  /**
   * The longest polling turn, and the longest hold (as above), over the device's life (ns; a
   * turn of 2.1 s or more counts as 2^31 - 1 ns).
   */
  longestPollingTurnNs: number;
  longestPollingHoldNs: number;
}

export function newDeviceStats(): DeviceStats {
  return {
    requests: 0,
    completions: 0,
    kicks: 0,
    kicksAhead: 0,
    kickAheadTrials: 0,
    kickAheadTrialsAgainst: 0,
    calls: 0,
    bytesBounced: 0,
    readModifyWrites: 0,
    queuedForResources: 0,
    operationsAllocated: 0,
    retries: 0,
    taskAborts: 0,
    lunResets: 0,
    deferredErrors: 0,
    pollingTurns: 0,
    pollingTurnsOver1ms: 0,
    pollingHoldsOver1ms: 0,
    longestPollingTurnNs: 0,
    longestPollingHoldNs: 0,
  };
}

/** Adds to `stats` one polling turn of `turnNs`, of which it held the thread itself for `heldNs`. */
export function countPollingTurn(stats: DeviceStats, turnNs: number, heldNs: number): void {
  stats.pollingTurns++;
  if (turnNs >= 1e6) stats.pollingTurnsOver1ms++;
  if (heldNs >= 1e6) stats.pollingHoldsOver1ms++;
  if (turnNs > stats.longestPollingTurnNs) stats.longestPollingTurnNs = Math.round(turnNs);
  if (heldNs > stats.longestPollingHoldNs) stats.longestPollingHoldNs = Math.round(heldNs);
}
