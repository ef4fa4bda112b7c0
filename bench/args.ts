/**
 * Checked numeric arguments for the bench scripts (`node:util` parseArgs, as the chaos
 * runner reads its own): each number by name (`--seconds=5`) or, as the scripts always took
 * them, by position (`5`); anything that is not a positive whole number, an unknown flag or
 * one positional too many stops the script with a usage line instead of running with NaN.
 */
import { parseArgs } from 'node:util';

export interface NumberArg {
  name: string;
  default: number;
  /** Smallest accepted value; default 1. */
  min?: number;
}

/** The values of `spec`, by name, from `argv` (default `process.argv.slice(2)`). */
export function numberArgs<const S extends readonly NumberArg[]>(
  script: string,
  spec: S,
  argv: readonly string[] = process.argv.slice(2),
): Record<S[number]['name'], number> {
  const usage = `usage: node bench/${script.replace(/^(\S+)/, '$1.ts')} ${spec.map((s) => `[--${s.name}=N | N]`).join(' ')} (defaults: ${spec.map((s) => `${s.name} ${s.default}`).join(', ')})`;
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      options: Object.fromEntries(spec.map((s) => [s.name, { type: 'string' as const }])),
    });
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${usage}`, { cause: err });
  }
  if (parsed.positionals.length > spec.length)
    throw new Error(`too many arguments: ${parsed.positionals.join(' ')}\n${usage}`);
  const out: Record<string, number> = {};
  spec.forEach((s, i) => {
    const text = parsed.values[s.name] ?? parsed.positionals[i];
    if (text === undefined) {
      out[s.name] = s.default;
      return;
    }
    const n = /^\d+$/.test(text) ? Number(text) : NaN;
    if (!(n >= (s.min ?? 1)))
      throw new Error(`${s.name}: "${text}" is not a whole number >= ${s.min ?? 1}\n${usage}`);
    out[s.name] = n;
  });
  return out;
}
