/**
 * Fault schedules: pure plans derived from a seed. A plan says what to break, whom
 * (the leader or a follower, resolved when the step runs), for how long and what comes
 * after; runner.ts carries it out on a real control plane. The same seed always gives the
 * same plan, so a failing schedule is replayed with `npm run chaos -- --seed=<seed> --schedules=1`
 * (the plan, not the exact interleaving, which depends on timing).
 */
import { Rng } from './rng.ts';

export type Target = 'leader' | 'follower';
export type DeleteMode = 'graceful' | 'grace0' | 'orphan';

export type Fault =
  /** kube-apiserver SIGKILLed (or SIGTERMed), down for `downMs`, then started again. */
  | { kind: 'apiserver-restart'; kill: boolean; downMs: number }
  /** etcd SIGSTOPped for `pauseMs`, then SIGCONT. */
  | { kind: 'etcd-pause'; pauseMs: number }
  /** The elector process of a pod SIGKILLed; the kubelet restarts it after `restartDelayMs`. */
  | { kind: 'elector-kill'; target: Target; restartDelayMs: number }
  /** A pod cut off from the API server for `durationMs`, then reconnected. */
  | { kind: 'partition'; target: Target; durationMs: number }
  /**
   * The leader cut off from the API server, its pod force-deleted (grace 0) after
   * `deleteAfterMs`; its node comes back (the kubelet kills the container) once the
   * fencing bound has passed.
   */
  | { kind: 'partition-force-delete'; deleteAfterMs: number }
  /**
   * A pod deleted (gracefully, with grace 0, or with `--cascade=orphan` semantics), and
   * `replacements` new pods created right away (concurrent campaigns), one of them reusing
   * the deleted pod's name when `reuseName`.
   */
  | { kind: 'delete'; target: Target; mode: DeleteMode; replacements: number; reuseName: boolean }
  /** The leader's containers stop and its pod is marked Succeeded or Failed (pods/status). */
  | { kind: 'finish'; phase: 'Succeeded' | 'Failed'; replacements: number }
  /**
   * The Lease deleted by an admin while its holder runs: the old leader takes it back unfenced;
   * any other candidate's takeover is fenced (the holder may not have seen the deletion yet).
   */
  | { kind: 'lease-delete' }
  /** The Lease replaced by a client-go style Lease of the same name for `holdMs`: no leader by design. */
  | { kind: 'foreign-lease'; holdMs: number }
  /** Two faults at once. */
  | { kind: 'storm'; faults: [Fault, Fault] };

export interface Step {
  fault: Fault;
  /** Quiet time before the fault, after the previous one healed and the pods agreed. */
  quietMs: number;
}

export interface Schedule {
  seed: number;
  pods: number;
  steps: Step[];
}

export interface PlanOptions {
  minPods: number;
  maxPods: number;
  minFaults: number;
  maxFaults: number;
  /** The electors' self-fencing bound; fault durations are drawn around it. */
  fencingMs: number;
}

export const DEFAULT_PLAN: PlanOptions = {
  minPods: 3,
  maxPods: 10,
  minFaults: 1,
  maxFaults: 4,
  fencingMs: 4000,
};

/** A short label per fault, the key of the per-fault-type report. */
export function faultType(f: Fault): string {
  switch (f.kind) {
    case 'apiserver-restart':
      return f.kill ? 'apiserver-kill' : 'apiserver-term';
    case 'etcd-pause':
      return 'etcd-pause';
    case 'elector-kill':
      return `elector-kill-${f.target}`;
    case 'partition':
      return `partition-${f.target}`;
    case 'partition-force-delete':
      return 'partition-force-delete';
    case 'delete':
      return `delete-${f.mode}-${f.target}${f.reuseName ? '-reuse' : ''}`;
    case 'finish':
      return `finish-${f.phase.toLowerCase()}`;
    case 'lease-delete':
      return 'lease-delete';
    case 'foreign-lease':
      return 'foreign-lease';
    case 'storm':
      return `storm(${faultType(f.faults[0])}+${faultType(f.faults[1])})`;
  }
}

/** The report groups storms under their own kind; single faults under their type. */
export function reportType(f: Fault): string {
  return f.kind === 'storm' ? 'storm' : faultType(f);
}

function single(rng: Rng, o: PlanOptions, inStorm: boolean): Fault {
  const F = o.fencingMs;
  const target = (): Target => (rng.bool(0.65) ? 'leader' : 'follower');
  const kind = rng.weighted<Fault['kind']>([
    ['apiserver-restart', inStorm ? 3 : 2],
    ['etcd-pause', 2],
    ['elector-kill', 3],
    ['partition', 2],
    ['partition-force-delete', inStorm ? 0 : 2],
    ['delete', 5],
    ['finish', 2],
    ['lease-delete', 1],
    ['foreign-lease', inStorm ? 0 : 1],
  ]);
  switch (kind) {
    case 'apiserver-restart':
      // Shorter and longer than the fencing bound.
      return { kind, kill: rng.bool(0.75), downMs: rng.int(200, Math.round(1.6 * F)) };
    case 'etcd-pause':
      return { kind, pauseMs: rng.int(200, Math.round(1.6 * F)) };
    case 'elector-kill':
      return { kind, target: target(), restartDelayMs: rng.int(0, 1000) };
    case 'partition':
      return { kind, target: target(), durationMs: rng.int(300, Math.round(1.6 * F)) };
    case 'partition-force-delete':
      return { kind, deleteAfterMs: rng.int(0, Math.round(F / 2)) };
    case 'delete':
      return {
        kind,
        target: target(),
        mode: rng.weighted<DeleteMode>([
          ['graceful', 2],
          ['grace0', 2],
          ['orphan', 1],
        ]),
        replacements: rng.int(0, 3),
        reuseName: rng.bool(0.3),
      };
    case 'finish':
      return { kind, phase: rng.bool() ? 'Succeeded' : 'Failed', replacements: rng.int(0, 2) };
    case 'lease-delete':
      return { kind };
    case 'foreign-lease':
      return { kind, holdMs: rng.int(500, 2500) };
    case 'storm':
      throw new Error('unreachable');
  }
}

/** The schedule of `seed`. Pure. */
export function planSchedule(seed: number, o: PlanOptions = DEFAULT_PLAN): Schedule {
  const rng = new Rng(seed);
  const pods = rng.int(o.minPods, o.maxPods);
  const count = rng.int(o.minFaults, o.maxFaults);
  const steps: Step[] = [];
  for (let i = 0; i < count; i++) {
    let fault: Fault;
    if (rng.bool(0.12)) {
      const first = single(rng, o, true);
      let second = single(rng, o, true);
      // Two of one kind at once (two restarts of one API server) say nothing more.
      while (second.kind === first.kind) second = single(rng, o, true);
      fault = { kind: 'storm', faults: [first, second] };
    } else {
      fault = single(rng, o, false);
    }
    steps.push({ fault, quietMs: rng.int(0, 1000) });
  }
  return { seed: rng.seed, pods, steps };
}

/** One line per step, for logs and failure reports. */
export function describeSchedule(s: Schedule): string {
  return [
    `seed ${s.seed}: ${s.pods} pods, ${s.steps.length} faults`,
    ...s.steps.map((st, i) => `  ${i + 1}. after ${st.quietMs} ms: ${JSON.stringify(st.fault)}`),
  ].join('\n');
}
