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
 * Elector-stated times: an answer may carry `since`, the moment the elector says that
 * answer took effect (its `last_update`, which moves whenever the reported leader changes,
 * so whenever a pod starts or stops claiming). Answers with the same `since` are one state
 * of that elector, which held from `since` until the next state began. Such a claim runs
 * from its `since` to the start of the pod's next state (or, when the pod went silent,
 * to the first unanswered request): the true interval, not the sampled one, so sampling
 * and transport latency neither hide an overlap nor invent one.
 *
 * Liveness: gaps where no pod claims are measured, so each fault type's longest no-leader
 * time can be reported and bounded. Windows where no leader is the designed answer (a
 * foreign Lease, a partitioned leader past its fencing bound, the API server down past it)
 * can be named, and gaps are then also measured outside them.
 */

export interface Observation {
  /** Monotonic milliseconds (performance.now()). */
  t: number;
  pod: string;
  hostname: string;
  /** The answer; undefined when the request failed (counts as "no claim"). */
  answer?: { name?: string; is_leader?: boolean; state?: string; last_update?: string };
  via: 'poll' | 'sse';
  /**
   * Monotonic time at which the elector says this answer took effect (its `last_update`),
   * when the answer has one. See the module comment.
   */
  since?: number;
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
  /** The longest part of any gap outside the designed no-leader windows. */
  longestUndesignedGapMs: number;
}

export function claims(o: Observation): boolean {
  if (!o.answer) return false;
  return o.answer.is_leader === true || (o.answer.name !== undefined && o.answer.name === o.hostname);
}

/** A stated state of a pod's elector: the answers that share one `since`. */
interface State {
  start: number;
  lastSeen: number;
  claims: boolean;
}

/** Claim intervals from stated answers: each claiming state until the pod's next state began. */
function statedIntervals(pod: string, list: Observation[]): Interval[] {
  const byStart = new Map<number, State>();
  for (const o of list) {
    if (!o.answer || o.since === undefined) continue;
    const s = byStart.get(o.since);
    if (s) {
      s.lastSeen = Math.max(s.lastSeen, o.t);
      // One state cannot both claim and not; if it ever did, count it as claiming.
      s.claims ||= claims(o);
    } else {
      byStart.set(o.since, { start: o.since, lastSeen: o.t, claims: claims(o) });
    }
  }
  const states = [...byStart.values()].sort((x, y) => x.start - y.start);
  const unstated = list.filter((o) => !o.answer || o.since === undefined).map((o) => o.t);
  const out: Interval[] = [];
  for (const [i, s] of states.entries()) {
    if (!s.claims) continue;
    // It ends where the next stated state begins, or at the first answer without a
    // stated time (an unanswered request) after it was last seen, whichever is first.
    const next = states[i + 1]?.start ?? Infinity;
    const silent = unstated.filter((t) => t > s.lastSeen).reduce((m, t) => Math.min(m, t), Infinity);
    const end = Math.min(next, silent);
    out.push({ pod, from: s.start, to: end === Infinity ? s.lastSeen : Math.max(s.start, end) });
  }
  return out;
}

/** Claim runs from sampled answers (no `since`): consecutive claims with no non-claim between. */
function sampledIntervals(pod: string, list: Observation[]): Interval[] {
  const out: Interval[] = [];
  let open: Interval | undefined;
  for (const o of list) {
    if (o.answer && o.since !== undefined && claims(o)) continue; // judged by statedIntervals
    if (claims(o)) {
      if (open) open.to = o.t;
      else open = { pod, from: o.t, to: o.t };
    } else if (open) {
      out.push(open);
      open = undefined;
    }
  }
  if (open) out.push(open);
  return out;
}

/** Each pod's claim intervals, merged where they touch. */
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
    const all = [...statedIntervals(pod, list), ...sampledIntervals(pod, list)].sort(
      (x, y) => x.from - y.from,
    );
    const merged: Interval[] = [];
    for (const iv of all) {
      const last = merged.at(-1);
      if (last && iv.from <= last.to) last.to = Math.max(last.to, iv.to);
      else merged.push({ ...iv });
    }
    out.push(...merged);
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
  /** Windows where no leader is the designed answer; gaps are also measured outside them. */
  designed?: { from: number; to: number; reason: string }[];
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
  let longestUndesignedGapMs = 0;
  const designed = [...(options.designed ?? [])].sort((x, y) => x.from - y.from);
  for (const g of gaps) {
    // The parts of the gap not covered by a designed window.
    let cursor = g.from;
    for (const d of designed) {
      if (d.to <= cursor || d.from >= g.to) continue;
      if (d.from > cursor) longestUndesignedGapMs = Math.max(longestUndesignedGapMs, d.from - cursor);
      cursor = Math.max(cursor, d.to);
    }
    if (cursor < g.to) longestUndesignedGapMs = Math.max(longestUndesignedGapMs, g.to - cursor);
  }
  return { violations, intervals, gaps, longestGapMs, longestUndesignedGapMs };
}
