/**
 * A history of what every elector told its app, and the checker that judges it.
 *
 * Observations come from polling `GET /` and from `/sse` events, each stamped with the
 * monotonic time the answer arrived. A pod *claims* leadership in an observation when the
 * answer would make its app lead, by either client pattern: `is_leader: true`, or (NAIS's
 * documented pattern) `name` equal to the pod's own hostname.
 *
 * Safety: at no moment may two pods claim. Claims are samples, so a pod's claim interval
 * runs from its first claim to its last claim with no non-claim answer between. Two pods'
 * intervals may overlap only where the checker was told one of them was cut off from the
 * API server (`partitioned`): such a pod may go on claiming for at most `fencingBoundMs`
 * (plus `slackMs` for polling) after the cut, which is the documented self-fencing bound.
 *
 * Liveness: gaps where no pod claims are measured, so each fault type's longest no-leader
 * time can be reported and bounded.
 */

export interface Observation {
  /** Monotonic milliseconds (performance.now()). */
  t: number;
  pod: string;
  hostname: string;
  /** The answer; undefined when the request failed (counts as "no claim"). */
  answer?: { name?: string; is_leader?: boolean; state?: string };
  via: 'poll' | 'sse';
}

export interface Partition {
  pod: string;
  /** When the pod was cut off from the API server. */
  from: number;
  /** When it was reconnected (or its process ended); Infinity if never. */
  to: number;
}

export interface Interval {
  pod: string;
  from: number;
  to: number;
}

export interface Violation {
  a: Interval;
  b: Interval;
  overlapMs: number;
  reason: string;
}

export interface Verdict {
  violations: Violation[];
  intervals: Interval[];
  /** Time ranges in [start, end] where no pod claimed. */
  gaps: { from: number; to: number }[];
  longestGapMs: number;
}

export function claims(o: Observation): boolean {
  if (!o.answer) return false;
  return o.answer.is_leader === true || (o.answer.name !== undefined && o.answer.name === o.hostname);
}

/** Each pod's maximal runs of consecutive claiming observations. */
export function claimIntervals(history: Observation[]): Interval[] {
  const byPod = new Map<string, Observation[]>();
  for (const o of history) {
    const list = byPod.get(o.pod) ?? [];
    list.push(o);
    byPod.set(o.pod, list);
  }
  const out: Interval[] = [];
  for (const [pod, list] of byPod) {
    list.sort((x, y) => x.t - y.t);
    let open: Interval | undefined;
    for (const o of list) {
      if (claims(o)) {
        if (open) open.to = o.t;
        else open = { pod, from: o.t, to: o.t };
      } else if (open) {
        out.push(open);
        open = undefined;
      }
    }
    if (open) out.push(open);
  }
  return out.sort((x, y) => x.from - y.from);
}

export interface CheckOptions {
  partitions?: Partition[];
  /** The elector's documented self-fencing bound. */
  fencingBoundMs?: number;
  /** Allowance for sampling: answers are observed up to this late. */
  slackMs?: number;
  /** The window over which gaps are measured; defaults to the history's span. */
  window?: { from: number; to: number };
}

/** Is `pod` allowed to be claiming at time `t` alongside another pod? */
function excused(pod: string, from: number, to: number, options: CheckOptions): boolean {
  const bound = (options.fencingBoundMs ?? 0) + (options.slackMs ?? 0);
  return (options.partitions ?? []).some((p) => p.pod === pod && from >= p.from && to <= p.from + bound);
}

export function check(history: Observation[], options: CheckOptions = {}): Verdict {
  const intervals = claimIntervals(history);
  const violations: Violation[] = [];
  for (let i = 0; i < intervals.length; i++) {
    for (let j = i + 1; j < intervals.length; j++) {
      const a = intervals[i]!;
      const b = intervals[j]!;
      if (a.pod === b.pod) continue;
      const from = Math.max(a.from, b.from);
      const to = Math.min(a.to, b.to);
      if (from > to) continue;
      if (excused(a.pod, from, to, options) || excused(b.pod, from, to, options)) continue;
      violations.push({
        a,
        b,
        overlapMs: to - from,
        reason: `${a.pod} and ${b.pod} both claimed leadership between t=${from.toFixed(0)} and t=${to.toFixed(0)} ms`,
      });
    }
  }

  const start = options.window?.from ?? Math.min(...history.map((o) => o.t));
  const end = options.window?.to ?? Math.max(...history.map((o) => o.t));
  const gaps: { from: number; to: number }[] = [];
  let cursor = start;
  for (const iv of [...intervals].sort((x, y) => x.from - y.from)) {
    if (iv.from > cursor) gaps.push({ from: cursor, to: Math.min(iv.from, end) });
    cursor = Math.max(cursor, iv.to);
  }
  if (cursor < end) gaps.push({ from: cursor, to: end });
  const longestGapMs = gaps.reduce((m, g) => Math.max(m, g.to - g.from), 0);
  return { violations, intervals, gaps, longestGapMs };
}
