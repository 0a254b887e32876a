// The table of scripts/garbage.mjs, from its child's JSON lines (also used by bench-report.mjs).

/** A child's JSON lines as a table, and the library's sites below it. */
export function garbageTable(results) {
  const f = (v) => v.toFixed(1);
  const rows = [
    '| config | depth | I/Os | bytes per I/O | the call (its Promise) | a bare Promise | rest of the library | other | the loop on a stand-in | beyond the stand-in |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of results) {
    rows.push(
      `| ${r.name} | ${r.depth} | ${r.ios} | ${f(r.total)} | ${f(r.call)} | ${f(r.promise)} | ${f(r.library)} | ${f(r.other)} | ${f(r.loop ?? NaN)} | ${f(r.beyond ?? NaN)} |`,
    );
  }
  rows.push('');
  for (const r of results) {
    for (const { site, perIo } of r.sites)
      rows.push(`- ${r.name}, depth ${r.depth}: ${f(perIo)} B per I/O in \`${site}\``);
  }
  return rows;
}
