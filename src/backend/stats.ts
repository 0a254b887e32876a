/** Counters of a BlockServer, over all connections. */
export interface ServerStats {
  /** Frontends accepted (one at a time). */
  connections: number;
  /** Virtio requests taken off the rings. */
  requests: number;
  /** Kick eventfd wake-ups. */
  kicksReceived: number;
  /** Call eventfd signals sent. */
  callsSent: number;
  /** Requests failed for breaking an advertised limit (size_max, seg_max, discard limits). */
  rejected: number;
}

export function newServerStats(): ServerStats {
  return { connections: 0, requests: 0, kicksReceived: 0, callsSent: 0, rejected: 0 };
}
