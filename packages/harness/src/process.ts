/**
 * A child process the harness owns: output goes to a log file, it dies with its parent
 * (Linux parent-death signal via util-linux `setpriv`, so even a SIGKILLed test run leaves
 * nothing behind), and `stop()` escalates from SIGTERM to SIGKILL.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createWriteStream, readFileSync } from 'node:fs';
import { inCgroup } from './memcg.ts';

let setprivPath: string | null | undefined;
function setpriv(): string | null {
  if (setprivPath === undefined) {
    const probe = spawnSync('setpriv', ['--help'], { encoding: 'utf8' });
    setprivPath = probe.status === 0 && probe.stdout.includes('--pdeathsig') ? 'setpriv' : null;
  }
  return setprivPath;
}

/** Every live child of every harness in this process, for the synchronous exit hook. */
const live = new Set<ChildProcess>();
let hooked = false;
function killAllSync(): void {
  for (const child of live) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  live.clear();
}
function installExitHook(): void {
  if (hooked) return;
  hooked = true;
  process.once('exit', killAllSync);
}

export interface ManagedProcessOptions {
  name: string;
  command: string;
  args: string[];
  logFile: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** A memory cgroup (harness/memcg.ts) the process runs in from its first instruction. */
  cgroup?: { procsFile: string };
}

export class ManagedProcess {
  readonly name: string;
  readonly logFile: string;
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private exitedFlag = false;

  constructor(options: ManagedProcessOptions) {
    installExitHook();
    this.name = options.name;
    this.logFile = options.logFile;
    const log = createWriteStream(options.logFile, { flags: 'a' });
    const wrapper = setpriv();
    // Joining the cgroup before exec charges all the program's memory to it.
    const argv = options.cgroup
      ? inCgroup(options.cgroup.procsFile, [options.command, ...options.args])
      : [options.command, ...options.args];
    const [cmd, args] = wrapper
      ? [wrapper, ['--pdeathsig', 'SIGKILL', '--', ...argv]]
      : [argv[0]!, argv.slice(1)];
    this.child = spawn(cmd, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: options.env ?? process.env,
      cwd: options.cwd,
    });
    this.child.stdout?.pipe(log, { end: false });
    this.child.stderr?.pipe(log, { end: false });
    live.add(this.child);
    this.exited = new Promise((resolve) => {
      this.child.once('close', (code, signal) => {
        this.exitedFlag = true;
        live.delete(this.child);
        log.end();
        resolve({ code, signal });
      });
      this.child.once('error', (err) => {
        log.write(`spawn error: ${err.message}\n`);
      });
    });
  }

  get running(): boolean {
    return !this.exitedFlag;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Sends a signal without waiting (SIGSTOP/SIGCONT for fault tests). */
  signal(sig: NodeJS.Signals): void {
    if (this.running) this.child.kill(sig);
  }

  /** SIGTERM, then SIGKILL after `graceMs`. Resolves once the process is gone. */
  async stop(graceMs = 5000): Promise<void> {
    if (!this.running) return;
    this.child.kill('SIGCONT'); // a paused process cannot act on SIGTERM
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    try {
      await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /** The last `lines` lines of the log, for error messages. */
  tail(lines = 30): string {
    try {
      return readFileSync(this.logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }
}

/** Resolves when the process exits, so waits can race it: a crashed binary fails fast. */
export async function exitedEarly(proc: ManagedProcess): Promise<never> {
  const { code, signal } = await proc.exited;
  throw new Error(
    `${proc.name} exited (code ${code}, signal ${signal}) before it was ready:\n${proc.tail()}`,
  );
}

/** CPU time (user + system) a live process has used so far, in ms; undefined once it is gone. */
export function cpuTimeMs(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // After "pid (comm) ", fields start at 3 (state); utime and stime are fields 14 and 15,
    // in clock ticks of 10 ms (USER_HZ is 100 on Linux).
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return undefined;
  }
}

/**
 * A bound on how long a process may take to get somewhere (listening, ready), for a machine
 * that other work shares: a budget of the process's OWN CPU time, plus a wall-clock bound only
 * for a process that hangs without running. At a load average of 20 on 2 cores a starting
 * Node.js process gets about a tenth of a core, so a wall-clock bound that holds on a quiet
 * machine (10 electors started at once did not listen within 20 s there) says nothing about
 * the process; one that has burnt its CPU budget without getting there is broken at any load.
 */
export function startBudget(
  proc: ManagedProcess,
  budget: { cpuMs: number; wallMs: number },
): { exceeded(): string | undefined } {
  const started = performance.now();
  return {
    exceeded() {
      const wall = performance.now() - started;
      const cpu = proc.pid === undefined ? undefined : cpuTimeMs(proc.pid);
      if (cpu !== undefined && cpu > budget.cpuMs)
        return `it used ${(cpu / 1000).toFixed(1)} s of CPU (budget ${budget.cpuMs / 1000} s) in ${(wall / 1000).toFixed(1)} s`;
      if (wall > budget.wallMs)
        return `${(wall / 1000).toFixed(1)} s passed (bound ${budget.wallMs / 1000} s) and it used ${((cpu ?? 0) / 1000).toFixed(1)} s of CPU`;
      return undefined;
    },
  };
}
