#!/usr/bin/env node
// One arm against the mean of one or more base arms, round by round, from the rounds that
// `bench-ab.mjs --raw FILE` kept: the 90% bootstrap interval of the median ratio for each file
// (run), and for all their rounds together: pooled as one sample (the runs' rounds alike, so
// shifts between runs beyond the rounds' own spread are not in that interval), and with the
// runs resampled too (clusteredRatioSummary: runs drawn first, then rounds within them), whose
// interval holds those shifts but is still too narrow at a handful of runs; so also the runs'
// medians as a sample of their own, their mean with a 90% t-interval (runMediansInterval).
//
//   npm run build && node scripts/pool-ratios.mjs [--arm adaptive] [--base poll,control,poll2,poll-control]
//     [--key iops|p50|cpuPerIo|callsPerIo|phase:N] FILE...
// Base names absent from a file are skipped (runs may name their second poll arm differently);
// a file with none of them is an error.
import { readFileSync } from 'node:fs';
import process from 'node:process';
import { distUrl } from './lib/dist.mjs';
import { parseScriptOptions } from './lib/script-options.mjs';

const { options, positionals: files } = parseScriptOptions(process.argv.slice(2), {
  arm: 'adaptive',
  base: 'poll,control,poll2,poll-control',
  key: 'iops',
});
if (files.length === 0) {
  throw new Error('usage: pool-ratios.mjs [--arm A] [--base B1,B2] [--key K] FILE...');
}
const { clusteredRatioSummary, ratioSummary, ratiosToMean, runMediansInterval } = await import(
  distUrl('bench/paired-ratio.js')
);

const phase = /^phase:(\d+)$/.exec(options.key);
const valueOf = (round) => (phase ? round.phases?.[Number(phase[1])] : round[options.key]);
const pct = (x) => `${(x * 100).toFixed(1)}%`;
const line = (label, s) =>
  `| ${label} | ${s.rounds} | ${pct(s.median)} | ${pct(s.low)}–${pct(s.high)} | ${pct(s.min)}–${pct(s.max)} |`;

const perRun = [];
const lines = [];
for (const file of files) {
  const { runs } = JSON.parse(readFileSync(file, 'utf8'));
  const arm = runs[options.arm];
  if (!arm) throw new Error(`${file} has no arm ${options.arm}`);
  const bases = options.base.split(',').filter((name) => runs[name] && name !== options.arm);
  if (bases.length === 0) throw new Error(`${file} has none of the base arms ${options.base}`);
  const ratios = ratiosToMean(
    bases.map((name) => runs[name].map(valueOf)),
    arm.map(valueOf),
  );
  if (ratios.length === 0) throw new Error(`${file}: no round has a finite ${options.key} ratio`);
  perRun.push(ratios);
  lines.push(line(`${file} (÷ mean of ${bases.join(', ')})`, ratioSummary(ratios)));
}
if (files.length > 1) {
  lines.push(line('**pooled**, rounds as one sample', ratioSummary(perRun.flat())));
  const clustered = clusteredRatioSummary(perRun);
  lines.push(line(`**pooled**, ${clustered.runs} runs resampled too`, clustered));
  const t = runMediansInterval(perRun);
  lines.push(
    `| the ${t.runs} runs' medians: mean, t-interval | ${t.runs} runs | ${pct(t.mean)} | ` +
      `${pct(t.low)}–${pct(t.high)} | |`,
  );
}
process.stdout.write(
  `${options.arm} ÷ base, ${options.key}, per round:\n\n` +
    '| run | rounds | median | 90% interval | range |\n|---|---:|---:|---|---|\n' +
    `${lines.join('\n')}\n`,
);
