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
  /** scsi: ABORT TASK requests received on the controlq (answered or not). */
  tmfAbortTask: number;
  /** scsi: of those, the ones that found their command held and completed it ABORTED. */
  tmfAbortMatched: number;
  /** scsi: LOGICAL UNIT RESET requests received. */
  tmfLunReset: number;
  /** scsi: every other task management request (I_T NEXUS RESET, ABORT TASK SET, QUERY, ...). */
  tmfOther: number;
}

export function newServerStats(): ServerStats {
  return {
    connections: 0,
    requests: 0,
    kicksReceived: 0,
    callsSent: 0,
    rejected: 0,
    tmfAbortTask: 0,
    tmfAbortMatched: 0,
    tmfLunReset: 0,
    tmfOther: 0,
  };
}
