/**
 * A memory cgroup for one harness process: the container memory limit a kubelet would set,
 * enforced by the kernel (an over-limit process is OOM-killed, as in a pod).
 *
 *   const cg = createMemoryCgroup('elector', 128);       // null where cgroups are read-only
 *   new ManagedProcess({ ..., cgroup: cg ?? undefined });
 *   cg.oomKills(); cg.peakMiB(); cg.remove();
 *
 * Works with cgroup v1 (the `memory` hierarchy) and v2 (the unified one). Groups are made
 * under the root of the hierarchy and named `lifelease-<pid>-<n>-<name>`; a group whose
 * owner died (a SIGKILLed test run) is removed by the next `createMemoryCgroup`.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export interface MemoryCgroup {
  readonly dir: string;
  /** The file a process writes its pid to, to join the group. */
  readonly procsFile: string;
  readonly limitMiB: number;
  /** How many processes the kernel OOM-killed in the group. */
  oomKills(): number;
  /** The highest memory use the kernel charged to the group, in MiB. */
  peakMiB(): number;
  /** Removes the group (its processes must have exited). */
  remove(): void;
}

const V1_ROOT = '/sys/fs/cgroup/memory';
const V2_ROOT = '/sys/fs/cgroup';
let counter = 0;

function hierarchy(): { root: string; version: 1 | 2 } | null {
  if (existsSync(path.join(V1_ROOT, 'memory.limit_in_bytes'))) return { root: V1_ROOT, version: 1 };
  if (existsSync(path.join(V2_ROOT, 'cgroup.controllers'))) {
    const controllers = readFileSync(path.join(V2_ROOT, 'cgroup.subtree_control'), 'utf8');
    if (controllers.split(/\s+/).includes('memory')) return { root: V2_ROOT, version: 2 };
  }
  return null;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes the groups of runs whose owner is gone and that hold no process (a run that ended
 * before its containers were stopped leaves them; every `createMemoryCgroup` sweeps too).
 */
export function sweepMemoryCgroups(): void {
  const h = hierarchy();
  if (h) sweep(h.root);
}

function sweep(root: string): void {
  for (const entry of readdirSync(root)) {
    const m = /^lifelease-(\d+)-/.exec(entry);
    if (!m || alive(Number(m[1]))) continue;
    try {
      rmdirSync(path.join(root, entry));
    } catch {
      // still holds a process, or already gone
    }
  }
}

/**
 * `argv` run inside the group from its first instruction (a shell joins, then execs it: same
 * pid), so all of the program's memory is charged to the group.
 */
export function inCgroup(procsFile: string, argv: readonly string[]): string[] {
  return ['/bin/sh', '-c', 'echo $$ > "$0" && exec "$@"', procsFile, ...argv];
}

function readKey(file: string, key: string): number {
  const m = new RegExp(`^${key} (\\d+)$`, 'm').exec(readFileSync(file, 'utf8'));
  return m ? Number(m[1]) : 0;
}

/**
 * A fresh memory cgroup limited to `limitMiB` (no swap), or null when this machine does not
 * let us make one (no memory controller, or not root): callers then say what they skip.
 */
export function createMemoryCgroup(name: string, limitMiB: number): MemoryCgroup | null {
  const h = hierarchy();
  if (!h) return null;
  const dir = path.join(h.root, `lifelease-${process.pid}-${++counter}-${name}`);
  const bytes = String(limitMiB * 2 ** 20);
  try {
    sweep(h.root);
    mkdirSync(dir);
    if (h.version === 1) {
      writeFileSync(path.join(dir, 'memory.limit_in_bytes'), bytes);
      try {
        writeFileSync(path.join(dir, 'memory.memsw.limit_in_bytes'), bytes);
      } catch {
        // no swap accounting: nothing to limit
      }
    } else {
      writeFileSync(path.join(dir, 'memory.max'), bytes);
      writeFileSync(path.join(dir, 'memory.swap.max'), '0');
    }
  } catch {
    try {
      rmdirSync(dir);
    } catch {
      // never made
    }
    return null;
  }
  return {
    dir,
    procsFile: path.join(dir, 'cgroup.procs'),
    limitMiB,
    oomKills: () =>
      h.version === 1
        ? readKey(path.join(dir, 'memory.oom_control'), 'oom_kill')
        : readKey(path.join(dir, 'memory.events'), 'oom_kill'),
    peakMiB: () => {
      const file = h.version === 1 ? 'memory.max_usage_in_bytes' : 'memory.peak';
      try {
        return Number(readFileSync(path.join(dir, file), 'utf8').trim()) / 2 ** 20;
      } catch {
        return NaN;
      }
    },
    remove: () => {
      try {
        rmdirSync(dir);
      } catch {
        // a process still in it (it dies with the test run; the next sweep removes the group)
      }
    },
  };
}
