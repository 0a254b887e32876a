#!/usr/bin/env node
// Builds the native addon with node-gyp at install time. When the running Node has its headers
// installed next to it (<prefix>/include/node, as Debian's nodejs and the official tarballs do),
// point node-gyp there so that nothing is downloaded from outside the npm registry.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import process from 'node:process';

const args = ['rebuild'];
const prefix = path.resolve(path.dirname(process.execPath), '..');
if (
  !process.env.npm_config_nodedir &&
  existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))
) {
  args.push(`--nodedir=${prefix}`);
}
// npm tells lifecycle scripts where its bundled node-gyp lives.
const gyp = process.env.npm_config_node_gyp;
const result = gyp
  ? spawnSync(process.execPath, [gyp, ...args], { stdio: 'inherit' })
  : spawnSync('node-gyp', args, { stdio: 'inherit' });
if (result.error) {
  process.stderr.write(`vhost-user: cannot run node-gyp: ${result.error.message}\n`);
  process.exit(1);
}
process.exit(result.status ?? 1);
