/** What this process holds, for tests that check a device leaves nothing behind. */
import { readdirSync, readFileSync } from 'node:fs';

/** The process's open file descriptors. */
export function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

/** Lines of /proc/self/maps naming one of our memfds. */
export function memfdMappings(): number {
  return readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((line) => line.includes('memfd:vhost-user-')).length;
}
