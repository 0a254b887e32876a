import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SleepInterval } from '../../src/completion/sleep-interval.js';

const TURN_NS = 700_000;

/** An interval with an estimate of its own, starting from `overshootMs`. */
function interval(configuredNs: number, overshootMs = 0): SleepInterval {
  return new SleepInterval(configuredNs, TURN_NS, new Float64Array([overshootMs]));
}

test('SleepInterval: a host that wakes 20 µs late gets the interval shortened by that much, no more', () => {
  const s = interval(TURN_NS);
  assert.equal(s.ns, TURN_NS);
  for (let i = 0; i < 10; i++) s.took(s.ns, s.ns + 20_000);
  assert.equal(s.ns, TURN_NS - 20_000);
});

test('SleepInterval: a host slow to wake gets sleeps that, as they really last, fit the turn', () => {
  const s = interval(TURN_NS);
  for (let i = 0; i < 50; i++) {
    const asked = s.ns;
    s.took(asked, asked + 500_000);
    assert.ok(s.ns + 500_000 <= TURN_NS, `asked ${s.ns} ns after a sleep 0.5 ms late`);
  }
  assert.equal(s.ns, 200_000);
  // A few quick wake-ups among slow ones do not give the full interval back.
  s.took(s.ns, s.ns);
  s.took(s.ns, s.ns);
  assert.ok(s.ns < 300_000, `${s.ns} ns after two quick wake-ups`);
});

test('SleepInterval: a short interval is not lengthened, and is kept while the overshoot leaves room for it', () => {
  const s = interval(50_000);
  for (let i = 0; i < 20; i++) s.took(s.ns, s.ns + 300_000);
  assert.equal(s.ns, 50_000);
  // Under the floor of shortened sleeps (1 µs) as configured.
  const tiny = interval(500);
  for (let i = 0; i < 5; i++) tiny.took(tiny.ns, 5_000_000);
  assert.equal(tiny.ns, 500);
});

test('SleepInterval: a host stall shortens the sleeps to the floor, then they grow back', () => {
  const s = interval(TURN_NS);
  s.took(s.ns, 5_000_000);
  assert.equal(s.ns, 1_000, 'the floor: the CPU is still given back between checks');
  assert.ok(s.overshootMs <= 0.7, `${s.overshootMs} ms: capped at the turn`);
  let sleeps = 0;
  while (s.ns < TURN_NS - 20_000 && sleeps < 1000) {
    s.took(s.ns, s.ns + 10_000);
    sleeps++;
  }
  // 0.95 per sleep: from 0.7 ms to 20 µs in ~70 sleeps.
  assert.ok(sleeps > 10 && sleeps < 100, `${sleeps} sleeps to grow back`);
});

test('SleepInterval: a sleep that took less than asked counts as on time', () => {
  const s = interval(TURN_NS);
  s.took(TURN_NS, 0);
  assert.equal(s.ns, TURN_NS);
  assert.equal(s.overshootMs, 0);
});

test('SleepInterval: engines share what they learn of the host; a first estimate is cautious', () => {
  const shared = new Float64Array([0]);
  const a = new SleepInterval(TURN_NS, TURN_NS, shared);
  for (let i = 0; i < 10; i++) a.took(a.ns, a.ns + 400_000);
  const b = new SleepInterval(TURN_NS, TURN_NS, shared);
  assert.equal(b.ns, TURN_NS - 400_000, 'a new engine starts from what the first one learned');
  // The process's estimate: a first sleep at the cap leaves room for a host ~0.3 ms late.
  const fresh = new SleepInterval(TURN_NS, TURN_NS);
  assert.equal(fresh.ns, 400_000);
});
