/** Aggregates schedule results into the per-fault-type figures the fault suite reports. */
import type { ScheduleResult } from './runner.ts';

export interface TypeStats {
  type: string;
  count: number;
  /** Longest time no pod claimed, from injection until all agreed again. */
  longestGapMs: number;
  /** The same, outside the windows where no leader was the designed answer. */
  longestUndesignedGapMs: number;
  /** From the heal until every candidate agreed: median and maximum. */
  recoveryP50Ms: number;
  recoveryMaxMs: number;
  /** Leader deleted -> another pod claims: median and maximum (deletions of the leader only). */
  takeoverP50Ms: number;
  takeoverMaxMs: number;
}

export function statsByType(
  results: ScheduleResult[],
  key: 'type' | 'reportType' = 'reportType',
): TypeStats[] {
  const by = new Map<string, ScheduleResult['faults']>();
  for (const r of results) {
    for (const f of r.faults) {
      const list = by.get(f[key]) ?? [];
      list.push(f);
      by.set(f[key], list);
    }
  }
  return [...by.entries()]
    .map(([type, faults]) => {
      const recoveries = faults
        .filter((f) => f.agreedAt !== undefined)
        .map((f) => f.agreedAt! - f.healedAt)
        .sort((a, b) => a - b);
      const takeovers = faults
        .map((f) => f.takeoverMs)
        .filter((ms): ms is number => ms !== undefined)
        .sort((a, b) => a - b);
      return {
        takeoverP50Ms: takeovers[Math.floor(takeovers.length / 2)] ?? NaN,
        takeoverMaxMs: takeovers.at(-1) ?? NaN,
        type,
        count: faults.length,
        longestGapMs: Math.max(0, ...faults.map((f) => f.longestGapMs ?? 0)),
        longestUndesignedGapMs: Math.max(0, ...faults.map((f) => f.longestUndesignedGapMs ?? 0)),
        recoveryP50Ms: recoveries[Math.floor(recoveries.length / 2)] ?? NaN,
        recoveryMaxMs: recoveries.at(-1) ?? NaN,
      };
    })
    .sort((a, b) => a.type.localeCompare(b.type));
}

const s = (ms: number) => (Number.isNaN(ms) ? '-' : `${(ms / 1000).toFixed(2)} s`);

/** A Markdown table of the per-type figures. */
export function statsTable(stats: TypeStats[]): string {
  const rows = stats.map(
    (t) =>
      `| ${t.type} | ${t.count} | ${s(t.longestGapMs)} | ${s(t.longestUndesignedGapMs)} | ${s(t.recoveryP50Ms)} | ${s(t.recoveryMaxMs)} | ${s(t.takeoverP50Ms)} / ${s(t.takeoverMaxMs)} |`,
  );
  return [
    '| fault type | injected | longest no-leader gap | outside designed windows | heal → agreed (p50) | heal → agreed (max) | leader deleted → next claim (p50 / max) |',
    '|---|---:|---:|---:|---:|---:|---:|',
    ...rows,
  ].join('\n');
}
