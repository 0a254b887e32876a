import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SleepInterval } from '../../src/completion/sleep-interval.js';

const TURN_NS = 700_000;

test('SleepInterval: a host that wakes on time gets the configured interval', () => {
  const s = new SleepInterval(TURN_NS, TURN_NS);
  assert.equal(s.ns, TURN_NS);
  for (let i = 0; i < 10; i++) s.took(s.ns, s.ns + 20_000);
  // 20 µs late: shortened by that much, no more.
  assert.equal(s.ns, TURN_NS - 20_000);
});

test('SleepInterval: a host slow to wake gets sleeps that, as they really last, fit the turn', () => {
  const s = new SleepInterval(TURN_NS, TURN_NS);
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
  const s = new SleepInterval(50_000, TURN_NS);
  for (let i = 0; i < 20; i++) s.took(s.ns, s.ns + 300_000);
  assert.equal(s.ns, 50_000);
});

test('SleepInterval: a host stall shortens the sleeps to the floor, then they grow back', () => {
  const s = new SleepInterval(TURN_NS, TURN_NS);
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

test('SleepInterval: a sleep that took less than asked (a clock step) counts as on time', () => {
  const s = new SleepInterval(TURN_NS, TURN_NS);
  s.took(TURN_NS, 0);
  assert.equal(s.ns, TURN_NS);
  assert.equal(s.overshootMs, 0);
});
