/**
 * A FIFO that can also take an item at its front, kept in a ring buffer: once it has grown to
 * the largest backlog, adding and taking allocate nothing. (An array used as a queue does:
 * `splice(0, 1)` returns a new array and trims the backing store from the front, which the next
 * `push` grows again; at depth 32 that was ~165 bytes of garbage per request.)
 */
export class RunQueue<T> {
  #items: (T | undefined)[] = new Array<T | undefined>(8).fill(undefined);
  #head = 0;
  #length = 0;

  get length(): number {
    return this.#length;
  }

  /** The item `index` places from the front (0 ≤ index < length). */
  at(index: number): T {
    return this.#items[(this.#head + index) & (this.#items.length - 1)]!;
  }

  push(item: T): void {
    if (this.#length === this.#items.length) this.#grow();
    this.#items[(this.#head + this.#length) & (this.#items.length - 1)] = item;
    this.#length++;
  }

  unshift(item: T): void {
    if (this.#length === this.#items.length) this.#grow();
    this.#head = (this.#head - 1) & (this.#items.length - 1);
    this.#items[this.#head] = item;
    this.#length++;
  }

  /** Removes the item `index` places from the front; the ones behind it move up, in order. */
  removeAt(index: number): void {
    if (!(index >= 0 && index < this.#length)) {
      throw new RangeError(`index ${index} is outside the queue (length ${this.#length})`);
    }
    const items = this.#items;
    const mask = items.length - 1;
    if (index === 0) {
      items[this.#head] = undefined;
      this.#head = (this.#head + 1) & mask;
    } else {
      for (let i = index; i < this.#length - 1; i++) {
        items[(this.#head + i) & mask] = items[(this.#head + i + 1) & mask];
      }
      items[(this.#head + this.#length - 1) & mask] = undefined;
    }
    this.#length--;
  }

  indexOf(item: T): number {
    for (let i = 0; i < this.#length; i++) if (this.at(i) === item) return i;
    return -1;
  }

  /** Empties the queue; returns what it held, front first. */
  clear(): T[] {
    const held = Array.from({ length: this.#length }, (_, i) => this.at(i));
    this.#items.fill(undefined);
    this.#head = 0;
    this.#length = 0;
    return held;
  }

  /** Doubles the capacity (a power of two, so that indices wrap with a mask). */
  #grow(): void {
    const grown = new Array<T | undefined>(this.#items.length * 2).fill(undefined);
    for (let i = 0; i < this.#length; i++) grown[i] = this.at(i);
    this.#items = grown;
    this.#head = 0;
  }
}
