/**
 * The decision behind the 'adaptive' completion strategy, with no I/O and no clock of its own so
 * it can be driven by synthetic traces in unit tests.
 *
 * A *wait* starts whenever requests are in flight and the used rings are empty; it ends at the
 * next completion. For each wait the strategy asks {@link AdaptiveController.startWait} for a
 * spin budget, spins (polls the used rings) up to that long, then arms the call eventfds and
 * blocks. It reports back either a *hit* (the completion was seen while spinning, after `waitNs`)
 * or a *miss* (the budget ran out; all we learn is that the wait was longer than the budget).
 *
 * The budget minimises, over a window of recent waits, the expected cost of a wait:
 *
 *   cost(B) = E[min(wait, B)]                       CPU spent spinning
 *           + P(wait > B) * (blockCpuNs + latencyWeight * wakeCostNs)
 *                                                    a blocked wait: syscalls + the wake-up
 *                                                    latency it adds
 *
 * B = 0 (pure event) costs blockCpuNs + latencyWeight * wakeCostNs. With latencyWeight 1 this is
 * the ski-rental rule (spin at most what blocking would cost). A miss is a censored sample (the
 * wait was longer than the spin): it is imputed from the hits that outlasted the same spin, and a
 * periodic *probe* (one wait spun up to the longest spin) supplies such hits, so short budgets
 * can still learn that a longer one would catch their misses.
 *
 * With several requests in flight a wake-up delays not one completion but every one that lands
 * before the frontend is running again, and the device's interrupts cost the device CPU too: the
 * latency term is counted once per request in flight, up to `depthCap`, and so is the longest
 * spin. Under a deep queue the controller therefore spins like 'poll'; at depth 1 it weighs one
 * wake-up. A change of depth (a load that steps from 1 to 32) triggers a decision at once.
 */

/** Knobs of the adaptive strategy. Defaults were measured on the 2-vCPU KVM guests this ran on. */
export interface AdaptiveOptions {
  /**
   * Never spin longer than this per wait at depth 1 (and never block the event loop for it: it
   * is spread over loop turns); with more requests in flight the limit grows with the blocking
   * cost, up to `depthCap` times this. Default 100 µs.
   */
  maxSpinNs: number;
  /** Latency a blocked wait adds: waking an idle vCPU and the event loop. Default 30 µs (measured: 25-30 µs per wake here). */
  wakeCostNs: number;
  /** CPU a blocked wait costs (arming interrupts, epoll, eventfd read). Default 4 µs. */
  blockCpuNs: number;
  /** How many ns of CPU one ns of added latency is worth. 1 = ski rental. Default 1.5. */
  latencyWeight: number;
  /** Waits considered (a ring of the latest ones). Default 32. */
  window: number;
  /**
   * Re-decide after this many new samples. Default 8. While decisions keep confirming the
   * budget and waits end within it, the interval doubles up to `window` (a steady stream of
   * completions is not re-sorted every few waits); a miss or a probe that beats the decision
   * brings it back.
   */
  updateEvery: number;
  /** A new budget must beat the current one's cost by this fraction (no flapping on noise). Default 0.15. */
  hysteresis: number;
  /** Probe (spin up to maxSpinNs) at least once in this many waits when the budget is below it. Default 16. */
  probeEvery: number;
  /** Probes back off (doubling) up to one in this many waits while the decision holds. Default 256. */
  probeEveryMax: number;
  /** Headroom added to a budget over the sample it was derived from (timing jitter). Default 0.25. */
  margin: number;
  /** Requests in flight whose wake-up latency a blocked wait is charged for, at most (1..64). Default 8. */
  depthCap: number;
}

export const DEFAULT_ADAPTIVE_OPTIONS: Readonly<AdaptiveOptions> = Object.freeze({
  maxSpinNs: 100_000,
  wakeCostNs: 30_000,
  blockCpuNs: 4_000,
  latencyWeight: 1.5,
  window: 32,
  updateEvery: 8,
  hysteresis: 0.15,
  probeEvery: 16,
  probeEveryMax: 256,
  margin: 0.25,
  depthCap: 8,
});

/** Validates and fills in options (throws RangeError on nonsense). */
export function adaptiveOptions(partial: Partial<AdaptiveOptions> = {}): AdaptiveOptions {
  const o: AdaptiveOptions = { ...DEFAULT_ADAPTIVE_OPTIONS, ...partial };
  const nonNegative: (keyof AdaptiveOptions)[] = [
    'maxSpinNs',
    'wakeCostNs',
    'blockCpuNs',
    'latencyWeight',
    'hysteresis',
    'margin',
  ];
  for (const key of nonNegative) {
    const v = o[key];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
      throw new RangeError(`adaptive.${key} must be a finite number >= 0, got ${String(v)}`);
    }
  }
  // Spreading a spin over loop turns keeps the loop responsive, but a budget this long is a bug.
  if (o.maxSpinNs > 10_000_000) {
    throw new RangeError(`adaptive.maxSpinNs must be at most 10 ms, got ${o.maxSpinNs}`);
  }
  for (const key of ['window', 'updateEvery', 'probeEvery', 'probeEveryMax', 'depthCap'] as const) {
    const v = o[key];
    if (!Number.isInteger(v) || v < 1 || v > 1 << 16) {
      throw new RangeError(`adaptive.${key} must be an integer in 1..65536, got ${String(v)}`);
    }
  }
  if (o.depthCap > 64) {
    throw new RangeError(`adaptive.depthCap must be at most 64, got ${o.depthCap}`);
  }
  if (o.maxSpinNs * o.depthCap > 10_000_000) {
    throw new RangeError('adaptive.maxSpinNs * adaptive.depthCap must be at most 10 ms');
  }
  if (o.probeEveryMax < o.probeEvery) {
    throw new RangeError('adaptive.probeEveryMax must be >= adaptive.probeEvery');
  }
  return o;
}

export class AdaptiveController {
  readonly options: AdaptiveOptions;
  /** Sample values: a hit's wait (>= 0), or a miss as -(budget + 1) (censored). */
  readonly #samples: Float64Array;
  #count = 0;
  #next = 0;
  #sinceUpdate = 0;
  #budget: number;
  #waitsSinceProbe = 0;
  #probeEvery: number;
  #updateInterval: number;
  #decisions = 0;
  readonly #sorted: Float64Array;
  /** Requests in flight at the start of recent waits (moving average), and at the last decision. */
  #depth = 1;
  #decidedDepth = 1;

  constructor(options: Partial<AdaptiveOptions> = {}) {
    this.options = adaptiveOptions(options);
    this.#samples = new Float64Array(this.options.window);
    this.#sorted = new Float64Array(this.options.window);
    // Optimistic start: the first waits are spun in full, so they are uncensored samples.
    this.#budget = this.options.maxSpinNs;
    this.#probeEvery = this.options.probeEvery;
    this.#updateInterval = this.options.updateEvery;
  }

  /** How many times the budget was re-decided (sort + scan of the window), for tests and diagnostics. */
  get decisions(): number {
    return this.#decisions;
  }

  /** Current number of waits between probes (when the budget is below maxSpinNs). */
  get probeInterval(): number {
    return this.#probeEvery;
  }

  /** The budget the controller has settled on (0 = block at once), probes aside. */
  get budgetNs(): number {
    return this.#budget;
  }

  /** True while the settled budget is above zero. */
  get spinning(): boolean {
    return this.#budget > 0;
  }

  /**
   * A wait starts with `inFlight` requests outstanding: how long to spin before blocking.
   * Sometimes a probe (maxSpinNs).
   */
  startWait(inFlight = 1): number {
    const o = this.options;
    const depth = Math.min(Math.max(1, inFlight), o.depthCap);
    // A slow average: batches (N requests in flight, then N-1, ... 1) must not look like a
    // change of load; a step from depth 1 to 32 moves it within a few waits.
    this.#depth += (depth - this.#depth) / 16;
    if (Math.abs(this.#depth - this.#decidedDepth) > this.#decidedDepth * 0.5 + 0.5) {
      // The load changed shape since the last decision: decide again at the next sample, and
      // make this wait a probe (a blocked controller gets samples from probes only).
      this.#decidedDepth = this.#depth;
      this.#sinceUpdate = this.#updateInterval;
      if (this.#budget < this.maxSpinNs) {
        this.#waitsSinceProbe = 0;
        return this.maxSpinNs;
      }
    }
    const max = this.maxSpinNs;
    if (this.#budget >= max) return max;
    if (++this.#waitsSinceProbe >= this.#probeEvery) {
      this.#waitsSinceProbe = 0;
      return max;
    }
    return this.#budget;
  }

  /** The wait ended while spinning, `waitNs` after it started. */
  hit(waitNs: number): void {
    const budget = this.#budget;
    // Only a probe can hit beyond the budget.
    if (waitNs > budget) {
      const o = this.options;
      if (budget > 0) {
        // Spinning too short: the decision may be stale, so probe (and decide) more often.
        this.#probeEvery = o.probeEvery;
        this.#updateInterval = o.updateEvery;
      } else if (waitNs < this.blockCostNs * (1 - o.hysteresis)) {
        // Blocking, and this wait would clearly have been cheaper to spin for: look closer.
        this.#probeEvery = Math.max(o.probeEvery, this.#probeEvery >> 1);
        this.#updateInterval = o.updateEvery;
      } else {
        // Blocking, and spinning for this wait would have cost more than blocking: the
        // decision holds, probe less (a slow device's waits often end within maxSpinNs).
        this.#probeEvery = Math.min(o.probeEveryMax, this.#probeEvery * 2);
      }
    }
    this.#add(waitNs > 0 ? waitNs : 0);
  }

  /**
   * The wait outlasted a spin of `spunNs` (> 0) and ended by an interrupt. A wait with a zero
   * budget teaches nothing and is not reported.
   */
  miss(spunNs: number): void {
    if (spunNs <= 0) return;
    // A miss while spinning (not a probe from a blocked state): re-decide at the usual pace.
    if (this.#budget > 0) this.#updateInterval = this.options.updateEvery;
    this.#add(-(spunNs + 1));
  }

  /** The longest spin per wait at the current depth. */
  get maxSpinNs(): number {
    return this.options.maxSpinNs * this.#decidedDepth;
  }

  /** What a blocked wait costs at the current depth: its CPU, and the latency it adds to requests. */
  get blockCostNs(): number {
    const o = this.options;
    return o.blockCpuNs + o.latencyWeight * o.wakeCostNs * this.#decidedDepth;
  }

  /** The cost model (ns per wait) of budget `b` over the current window. */
  costOf(b: number): number {
    const n = this.#effectiveSamples();
    return costAt(this.#sorted.subarray(0, n), b, this.blockCostNs);
  }

  /**
   * The window, sorted (misses first), with each miss replaced by what the complete samples say
   * a wait that outlasted its spin lasts: the median of the hits longer than that spin. Without
   * this, a short budget would only ever see its own misses, count them as misses for every
   * longer budget too, and never learn that a slightly longer spin catches them. A miss that no
   * hit outlasts stays a miss (pessimistic: probes supply the long samples). Returns the count.
   */
  #effectiveSamples(): number {
    const n = this.#count;
    const sorted = this.#sorted.subarray(0, n);
    sorted.set(this.#samples.subarray(0, n));
    sorted.sort();
    let misses = 0;
    while (misses < n && sorted[misses]! < 0) misses++;
    if (misses === 0 || misses === n) return n;
    let imputed = false;
    for (let k = 0; k < misses; k++) {
      const spun = -sorted[k]! - 1;
      // First hit longer than the spin (hits are sorted ascending after the misses).
      let lo = misses;
      let hi = n;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (sorted[mid]! > spun) hi = mid;
        else lo = mid + 1;
      }
      if (lo < n) {
        sorted[k] = sorted[lo + ((n - lo) >> 1)]!;
        imputed = true;
      }
    }
    if (imputed) sorted.sort();
    return n;
  }

  #add(value: number): void {
    this.#samples[this.#next] = value;
    this.#next = (this.#next + 1) % this.#samples.length;
    if (this.#count < this.#samples.length) this.#count++;
    if (++this.#sinceUpdate >= this.#updateInterval) {
      this.#sinceUpdate = 0;
      this.#update();
    }
  }

  #update(): void {
    const o = this.options;
    const n = this.#count;
    this.#decisions++;
    this.#decidedDepth = this.#depth;
    // Candidates: block at once, or spin just long enough to catch each observed hit.
    this.#effectiveSamples();
    const sorted = this.#sorted.subarray(0, n);
    const blockCost = this.blockCostNs;
    const maxSpin = this.maxSpinNs;
    let bestBudget = 0;
    let bestCost = blockCost;
    // With samples sorted, hits (>= 0) come last in ascending order; misses (< 0) first.
    let misses = 0;
    while (misses < n && sorted[misses]! < 0) misses++;
    let hitSum = 0;
    for (let i = misses; i < n; i++) {
      const t = sorted[i]!;
      if (t > maxSpin) break;
      hitSum += t;
      const b = Math.min(maxSpin, quantise(t * (1 + o.margin)));
      // Samples above index i (and every miss) are treated as misses at budget b.
      const hitsBelow = i - misses + 1;
      const cost = (hitSum + (n - hitsBelow) * (b + blockCost)) / n;
      // Strictly less: among equal costs the smallest budget wins (all hits cost the same).
      if (cost < bestCost) {
        bestCost = cost;
        bestBudget = b;
      }
    }
    const current = this.#budget;
    let next = current;
    if (current === 0) {
      // Blocking: start spinning only if that is clearly cheaper.
      if (bestBudget > 0 && bestCost < blockCost * (1 - o.hysteresis)) next = bestBudget;
    } else if (bestBudget === 0) {
      // Spinning: stop only if blocking is clearly cheaper.
      if (blockCost < costAt(sorted, current, blockCost) * (1 - o.hysteresis)) next = 0;
    } else {
      // Spinning either way: take the (quantised) best budget.
      next = bestBudget;
    }
    const changed = next > 0 !== current > 0;
    this.#budget = next;
    // Probes and decisions back off while they keep confirming the decision, and come back
    // when it changes.
    if (changed) {
      this.#probeEvery = o.probeEvery;
      this.#updateInterval = o.updateEvery;
    } else {
      this.#probeEvery = Math.min(o.probeEveryMax, this.#probeEvery * 2);
      if (next === current) {
        this.#updateInterval = Math.min(
          Math.max(o.updateEvery, o.window),
          this.#updateInterval * 2,
        );
      } else {
        this.#updateInterval = o.updateEvery;
      }
    }
  }
}

/** The mean cost of budget `b` over `samples` (hits >= 0, misses < 0). */
function costAt(samples: Float64Array, b: number, blockCost: number): number {
  let total = 0;
  for (let i = 0; i < samples.length; i++) {
    const s = samples[i]!;
    total += s >= 0 && s <= b ? s : b + blockCost;
  }
  return samples.length === 0 ? 0 : total / samples.length;
}

/** Budgets move in steps of 2^(1/4) (~19%), so jitter in the waits does not move them. */
function quantise(ns: number): number {
  if (ns <= 0) return 0;
  return Math.round(2 ** (Math.ceil(4 * Math.log2(ns)) / 4));
}
