/**
 * Block-range locks that keep concurrent writes from losing each other's bytes: an unaligned
 * write reads its edge blocks, merges, and writes them back, so nothing else may write those
 * blocks in between. Unaligned writes lock exclusively; aligned writes lock shared (they may run
 * together, as the device would let them). Grants are FIFO among conflicting requests, so a
 * stream of writes cannot starve a waiting one.
 */
export class RangeLockEntry {
  granted = false;
  /** Entries are reusable (one per pooled operation): set the range, then acquireEntry(). */
  constructor(
    public start: number,
    public end: number,
    public exclusive: boolean,
    public onGranted: () => void,
  ) {}

  conflictsWith(other: RangeLockEntry): boolean {
    return this.start < other.end && other.start < this.end && (this.exclusive || other.exclusive);
  }
}

export class RangeLock {
  readonly #held: RangeLockEntry[] = [];
  #waiting: RangeLockEntry[] = [];

  get heldCount(): number {
    return this.#held.length;
  }

  get waitingCount(): number {
    return this.#waiting.length;
  }

  /**
   * Requests [start, end). If it is free now the entry comes back with `granted` set and
   * `onGranted` is not called; otherwise `onGranted` runs later, inside a release() or cancel().
   */
  acquire(start: number, end: number, exclusive: boolean, onGranted: () => void): RangeLockEntry {
    return this.acquireEntry(new RangeLockEntry(start, end, exclusive, onGranted));
  }

  /** acquire() with an entry the caller keeps and reuses (no allocation per request). */
  acquireEntry(entry: RangeLockEntry): RangeLockEntry {
    entry.granted = false;
    if (!this.#blocked(entry, this.#waiting, this.#waiting.length)) {
      entry.granted = true;
      this.#held.push(entry);
    } else {
      this.#waiting.push(entry);
    }
    return entry;
  }

  /** Releases a granted entry, or withdraws a waiting one (its operation was aborted). */
  release(entry: RangeLockEntry): void {
    const list = entry.granted ? this.#held : this.#waiting;
    const i = list.indexOf(entry);
    if (i < 0) throw new Error('RangeLock: entry is neither held nor waiting');
    list.splice(i, 1);
    this.#grantAfter(entry);
  }

  #blocked(entry: RangeLockEntry, ahead: readonly RangeLockEntry[], aheadCount: number): boolean {
    for (const h of this.#held) if (h.conflictsWith(entry)) return true;
    for (let i = 0; i < aheadCount; i++) if (ahead[i]!.conflictsWith(entry)) return true;
    return false;
  }

  /**
   * Only waiters that overlapped `gone` can have been waiting for it: anything else is still
   * blocked by whatever blocked it before (a waiter granted now stays in its way, as held).
   * Checking just those keeps a long chain of dependent writes linear, not quadratic.
   */
  #grantAfter(gone: RangeLockEntry): void {
    const waiting = this.#waiting;
    if (waiting.length === 0) return;
    const granted: RangeLockEntry[] = [];
    for (let i = 0; i < waiting.length;) {
      const w = waiting[i]!;
      const overlaps = w.start < gone.end && gone.start < w.end;
      // FIFO: a waiter goes ahead only if nothing held and nothing queued before it conflicts.
      if (overlaps && !this.#blocked(w, waiting, i)) {
        waiting.splice(i, 1);
        w.granted = true;
        this.#held.push(w);
        granted.push(w);
      } else {
        i++;
      }
    }
    for (const w of granted) w.onGranted();
  }
}
