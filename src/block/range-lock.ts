/**
 * Block-range locks that keep concurrent writes from losing each other's bytes: an unaligned
 * write reads its edge blocks, merges, and writes them back, so nothing else may write those
 * blocks in between. Unaligned writes lock exclusively; aligned writes lock shared (they may run
 * together, as the device would let them). Grants are FIFO among conflicting requests, so a
 * stream of writes cannot starve a waiting one.
 */
export class RangeLockEntry {
  granted = false;
  constructor(
    readonly start: number,
    readonly end: number,
    readonly exclusive: boolean,
    readonly onGranted: () => void,
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
    const entry = new RangeLockEntry(start, end, exclusive, onGranted);
    if (!this.#blocked(entry, this.#waiting)) {
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
    this.#grant();
  }

  #blocked(entry: RangeLockEntry, ahead: readonly RangeLockEntry[]): boolean {
    for (const h of this.#held) if (h.conflictsWith(entry)) return true;
    for (const w of ahead) if (w.conflictsWith(entry)) return true;
    return false;
  }

  #grant(): void {
    const granted: RangeLockEntry[] = [];
    const still: RangeLockEntry[] = [];
    for (const w of this.#waiting) {
      // FIFO: a waiter goes ahead only if nothing held and nothing still queued before it conflicts.
      if (this.#blocked(w, still)) {
        still.push(w);
      } else {
        w.granted = true;
        this.#held.push(w);
        granted.push(w);
      }
    }
    this.#waiting = still;
    for (const w of granted) w.onGranted();
  }
}
