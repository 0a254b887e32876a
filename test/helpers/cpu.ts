import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** The CPUs this process may run on, as a taskset list (a cpuset may leave out CPU 0). */
export function allowedCpus(): string {
  return /Cpus_allowed_list:\s*(\S+)/.exec(readFileSync('/proc/self/status', 'utf8'))![1]!;
}

/** The first CPU of `allowedCpus()`. */
export function firstAllowedCpu(): string {
  return allowedCpus().split(/[,-]/)[0]!;
}

/** Sets the CPU affinity of every thread of each process in `pids` (this one by default). */
export function setAffinity(cpus: string, pids: readonly number[] = [process.pid]): void {
  for (const pid of pids) {
    execFileSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: 'ignore' });
  }
}
