// What the benchmark scripts report of a device's polling turns (DeviceStats, or the
// device_stats of `vhost-user bench --json`): the longest hold (ms; NaN without polling, as for
// 'event'), and the turns of 1 ms or more, held by their own spin or sleep and on the clock.
export function pollingTurnStats(stats) {
  return {
    holdMaxMs: stats.pollingTurns > 0 ? stats.longestPollingHoldNs / 1e6 : NaN,
    holdsOver1ms: stats.pollingHoldsOver1ms,
    stretchedOver1ms: stats.pollingTurnsOver1ms,
  };
}
