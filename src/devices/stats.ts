/** Counters a device keeps; `dev.stats` returns a copy. */
export interface DeviceStats {
  /** Device requests submitted to the rings (one user call can make several). */
  requests: number;
  completions: number;
  /** Times we notified the device through a kick eventfd. */
  kicks: number;
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
}

export function newDeviceStats(): DeviceStats {
  return {
    requests: 0,
    completions: 0,
    kicks: 0,
    calls: 0,
    bytesBounced: 0,
    readModifyWrites: 0,
    queuedForResources: 0,
    operationsAllocated: 0,
    retries: 0,
    taskAborts: 0,
    lunResets: 0,
    deferredErrors: 0,
  };
}
