/**
 * Block-range locks that keep concurrent writes from losing each other's bytes: an unaligned
 * write reads its edge blocks, merges, and writes them back, so nothing else may write those
 * blocks in between. Unaligned writes lock exclusively; aligned writes lock shared (they may run
 * together, as the device would let them). Grants are FIFO among conflicting requests, so a
 * stream of writes cannot starve a waiting one.
 */
export class RangeLockEntry {
  granted = false;
  // Initialized, not declared: a field that class semantics first define as undefined holds
  // every number as a heap number, so each store of a position above 2^31 made a new one
  // (32 B per write on a 64 GiB disk, measured).
  start = 0;
  end = 0;
  exclusive = false;
  /** Entries are reusable (one per pooled operation): set the range, then acquireEntry(). */
  constructor(
    start: number,
    end: number,
    exclusive: boolean,
    public onGranted: () => void,
  ) {
    this.start = start;
    this.end = end;
    this.exclusive = exclusive;
  }

  conflictsWith(other: RangeLockEntry): boolean {
    return this.start < other.end && other.start < this.end && (this.exclusive || other.exclusive);
  }
}

/**
 * The held and the waiting entries are the first #heldCount / #waitingCount elements of arrays
 * that never shrink: a push after a pop or a splice that emptied an array allocates a new
 * backing store, and a splice returns a new array (together ~250 B an aligned write at depth 1,
 * measured). Held entries keep no order; waiting ones keep their arrival order (FIFO).
 */
export class RangeLock {
  readonly #held: (RangeLockEntry | undefined)[] = [];
  #heldCount = 0;
  readonly #waiting: (RangeLockEntry | undefined)[] = [];
  #waitingCount = 0;
  /**
   * Entries granted by the #grantAfter passes running now, told in order (a stack, a pass's
   * slice cleared when it ends); one released before it is told leaves its slot empty.
   */
  readonly #granted: (RangeLockEntry | undefined)[] = [];
  #grantedCount = 0;

  get heldCount(): number {
    return this.#heldCount;
  }

  get waitingCount(): number {
    return this.#waitingCount;
  }

  /**
   * Requests [start, end). If it is free now the entry comes back with `granted` set and
   * `onGranted` is not called; otherwise `onGranted` runs later, inside a release().
   */
  acquire(start: number, end: number, exclusive: boolean, onGranted: () => void): RangeLockEntry {
    return this.acquireEntry(new RangeLockEntry(start, end, exclusive, onGranted));
  }

  /** acquire() with an entry the caller keeps and reuses (no allocation per request). */
  acquireEntry(entry: RangeLockEntry): RangeLockEntry {
    entry.granted = false;
    if (!this.#blocked(entry, this.#waitingCount)) {
      entry.granted = true;
      this.#held[this.#heldCount++] = entry;
    } else {
      this.#waiting[this.#waitingCount++] = entry;
    }
    return entry;
  }

  /** Releases a granted entry, or withdraws a waiting one (its operation was aborted). */
  release(entry: RangeLockEntry): void {
    if (entry.granted) {
      const held = this.#held;
      const i = indexIn(held, this.#heldCount, entry);
      if (i < 0) throw new Error('RangeLock: entry is neither held nor waiting');
      held[i] = held[--this.#heldCount];
      held[this.#heldCount] = undefined;
      // Granted in a pass still telling (an earlier onGranted released it): never told now.
      const told = indexIn(this.#granted, this.#grantedCount, entry);
      if (told >= 0) this.#granted[told] = undefined;
    } else {
      const i = indexIn(this.#waiting, this.#waitingCount, entry);
      if (i < 0) throw new Error('RangeLock: entry is neither held nor waiting');
      this.#removeWaiting(i);
    }
    this.#grantAfter(entry);
  }

  /** Whether a held entry, or one of the first `aheadCount` waiting, conflicts with `entry`. */
  #blocked(entry: RangeLockEntry, aheadCount: number): boolean {
    for (let i = 0; i < this.#heldCount; i++) if (this.#held[i]!.conflictsWith(entry)) return true;
    for (let i = 0; i < aheadCount; i++) if (this.#waiting[i]!.conflictsWith(entry)) return true;
    return false;
  }

  #removeWaiting(i: number): void {
    const waiting = this.#waiting;
    const last = --this.#waitingCount;
    for (let j = i; j < last; j++) waiting[j] = waiting[j + 1];
    waiting[last] = undefined;
  }

  /**
   * Only waiters that overlapped `gone` can have been waiting for it: anything else is still
   * blocked by whatever blocked it before (a waiter granted now stays in its way, as held).
   * Checking just those, in one pass that keeps the rest in place, keeps a long chain of
   * dependent writes linear, not quadratic. The granted are told after the pass, in order,
   * from a stack of its own (an onGranted may release, and so grant, again).
   */
  #grantAfter(gone: RangeLockEntry): void {
    const count = this.#waitingCount;
    if (count === 0) return;
    const waiting = this.#waiting;
    const base = this.#grantedCount;
    let kept = 0;
    for (let i = 0; i < count; i++) {
      const w = waiting[i]!;
      const overlaps = w.start < gone.end && gone.start < w.end;
      // FIFO: a waiter goes ahead only if nothing held and nothing queued before it (the ones
      // kept so far, now at 0..kept) conflicts.
      if (overlaps && !this.#blocked(w, kept)) {
        w.granted = true;
        this.#held[this.#heldCount++] = w;
        this.#granted[this.#grantedCount++] = w;
      } else {
        waiting[kept++] = w;
      }
    }
    for (let i = kept; i < count; i++) waiting[i] = undefined;
    this.#waitingCount = kept;
    const end = this.#grantedCount;
    // Every one is told even if one throws (the first error is rethrown): an untold entry would
    // hold its range, and every waiter behind it, for good.
    let failure: unknown;
    let failed = false;
    for (let i = base; i < end; i++) {
      const w = this.#granted[i];
      if (w === undefined) continue;
      try {
        w.onGranted();
      } catch (err) {
        if (!failed) failure = err;
        failed = true;
      }
    }
    for (let i = base; i < end; i++) this.#granted[i] = undefined;
    this.#grantedCount = base;
    if (failed) throw failure;
  }
}

function indexIn(
  list: readonly (RangeLockEntry | undefined)[],
  count: number,
  entry: RangeLockEntry,
): number {
  for (let i = 0; i < count; i++) if (list[i] === entry) return i;
  return -1;
}
