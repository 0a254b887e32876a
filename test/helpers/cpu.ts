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

/** Two CPUs of `allowedCpus()`, or undefined if it allows only one. */
export function twoAllowedCpus(): [string, string] | undefined {
  const cpus: number[] = [];
  for (const part of allowedCpus().split(',')) {
    const [first, last] = part.split('-').map(Number) as [number, number | undefined];
    for (let cpu = first; cpu <= (last ?? first) && cpus.length < 2; cpu++) cpus.push(cpu);
  }
  return cpus.length === 2 ? [String(cpus[0]), String(cpus[1])] : undefined;
}
