/**
 * The flag machinery both commands share: Kubernetes-style flags (`--name=value` or
 * `--name value`), the same settings as environment variables, duration and address
 * syntax, and the `--help` text and README table generated from one option list. Pure.
 *
 * Each command keeps its own option list (the single source of its defaults). Each option
 * declares its kind here ({@link OptionKind}: duration, port, address, bool, quantity, enum,
 * bytes, integer, with bounds), and {@link typedSettings} checks it the same way for both
 * commands; a command's parser keeps only the rules that span several options.
 *
 * Environment variables set to "" are unset (one rule for both commands: templated manifests
 * often render ""); an empty flag (`--x=`) is a value.
 */

/** A TCP address to listen on; port 0 asks the system for a free port. */
export interface ListenAddress {
  host: string;
  port: number;
}

/** One configurable setting: its flag, its env name, its default, what it means. */
export interface OptionSpec<K extends string = string> {
  key: K;
  flag: string;
  env: string;
  /** Default as the user would write it; '' means "none" (see `defaultText`). */
  default: string;
  /** How the default reads in docs when it is not a literal value. */
  defaultText?: string;
  /** A flag that may be given without a value (`--x` means `--x=true`). */
  boolean?: boolean;
  /** What the value must be; read with {@link typedSettings}. Default: any text. */
  kind?: OptionKind;
  description: string;
}

/**
 * The kinds of option values, with their bounds. `optional` kinds accept "" (none).
 * - duration: `500ms`, `2s`, `1.5m`, `1h` or seconds, in minMs..maxMs;
 * - port / integer: a whole number in min..max;
 * - address: `host:port`, `[v6]:port`, `:port`;
 * - bool: true/false/1/0;
 * - quantity: a Kubernetes quantity (`10m`, `0.5`, `64Mi`), "" for none;
 * - enum: one of `values` (case-folded when `lowercase`, `aliases` mapped first);
 * - bytes: `1048576`, `512Ki`, `7Mi`, `1Gi`, at least `min`.
 */
export type OptionKind =
  | { kind: 'duration'; minMs: number; maxMs: number }
  | { kind: 'port'; min: number; max: number; optional?: boolean }
  | { kind: 'integer'; min: number; max: number }
  | { kind: 'address'; optional?: boolean }
  | { kind: 'bool' }
  | { kind: 'quantity' }
  | {
      kind: 'enum';
      values: readonly string[];
      lowercase?: boolean;
      aliases?: Readonly<Record<string, string>>;
    }
  | { kind: 'bytes'; min: number };

/** What a command's config parser returns: a config, the help text, or every problem. */
export type ParseOutcome<C> =
  { kind: 'ok'; config: C } | { kind: 'help'; text: string } | { kind: 'invalid'; problems: string[] };

/** Parses `500ms`, `2s`, `1.5m`, `1h` or a bare number of seconds; undefined when invalid. */
export function parseDuration(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) return undefined;
  const value = Number(m[1]);
  const unit = m[2] ?? 's';
  const factor = unit === 'ms' ? 1 : unit === 's' ? 1000 : unit === 'm' ? 60_000 : 3_600_000;
  return Math.round(value * factor);
}

/** Parses `host:port`, `[v6]:port` or `:port` (all interfaces); a message when invalid. */
export function parseAddress(text: string): ListenAddress | string {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text.trim());
  if (!m) return `"${text}" is not host:port (use [addr]:port for IPv6, :port for all interfaces)`;
  const port = Number(m[3]);
  if (port > 65535) return `port ${port} in "${text}" is out of range`;
  const host = m[1] ?? m[2] ?? '';
  return { host: host === '' ? '0.0.0.0' : host, port };
}

export interface ReadFlagsOptions {
  /** Also accept Go's single-dash form (`-election=x`), as NAIS's elector did. */
  singleDash?: boolean;
}

/** Splits argv into flag values; unknown flags and missing values become problems. */
export function readFlags<K extends string>(
  argv: readonly string[],
  options: readonly OptionSpec<K>[],
  problems: string[],
  how: ReadFlagsOptions = {},
): { values: Map<K, string>; help: boolean } {
  const byFlag = new Map(options.map((o) => [o.flag, o]));
  const values = new Map<K, string>();
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    if (arg === '--help' || arg === '-h' || arg === '-help') {
      help = true;
      continue;
    }
    const normalized = how.singleDash && /^-[^-]/.test(arg) ? `-${arg}` : arg;
    const eq = normalized.indexOf('=');
    const name = eq === -1 ? normalized : normalized.slice(0, eq);
    const spec = byFlag.get(name);
    if (!spec) {
      problems.push(arg.startsWith('-') ? `unknown flag ${name}` : `unexpected argument "${arg}"`);
      continue;
    }
    let value: string | undefined;
    if (eq !== -1) {
      value = normalized.slice(eq + 1);
    } else if (spec.boolean) {
      value = 'true';
    } else if (i + 1 < argv.length && !(argv[i + 1] ?? '').startsWith('-')) {
      value = argv[++i];
    }
    if (value === undefined) {
      problems.push(`flag ${name} needs a value`);
      continue;
    }
    values.set(spec.key, value);
  }
  return { values, help };
}

/**
 * Reads a setting: flag, then environment, then default; and names it for messages as
 * `--flag (ENV)`. With `emptyEnvIsUnset` (what both commands use), a variable set to ""
 * falls through to the default (templated manifests often render ""); a flag set to "" is
 * always a value (e.g. "no limit").
 */
export function settingsReader<K extends string>(
  options: readonly OptionSpec<K>[],
  flagValues: ReadonlyMap<K, string>,
  env: Readonly<Record<string, string | undefined>>,
  how: { emptyEnvIsUnset?: boolean } = {},
): { raw: (key: K) => string; nameOf: (key: K) => string } {
  const spec = (key: K): OptionSpec<K> => {
    const found = options.find((o) => o.key === key);
    if (!found) throw new Error(`no option ${key}`);
    return found;
  };
  return {
    raw: (key) => {
      const fromFlag = flagValues.get(key);
      if (fromFlag !== undefined) return fromFlag.trim();
      const fromEnv = env[spec(key).env]?.trim();
      if (fromEnv !== undefined && (fromEnv !== '' || !how.emptyEnvIsUnset)) return fromEnv;
      return spec(key).default;
    },
    nameOf: (key) => `${spec(key).flag} (${spec(key).env})`,
  };
}

/** pino's levels, as both commands accept them (`warning` is read as `warn`). */
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';
export const LOG_LEVELS: readonly LogLevel[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];
/** The kind of both commands' `--log-level`. */
export const LOG_LEVEL_KIND: OptionKind = {
  kind: 'enum',
  values: LOG_LEVELS,
  lowercase: true,
  aliases: { warning: 'warn' },
};

/** Kubernetes resource quantities (the forms people write; exponents are rare and refused). */
const QUANTITY = /^(\d+(\.\d+)?|\.\d+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$/;

const QUANTITY_FACTORS: Readonly<Record<string, number>> = {
  m: 1e-3,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};

/** The value of a Kubernetes quantity (`128Mi` is 134217728, `1.5G` 1.5e9); undefined when invalid. */
export function quantityValue(text: string): number | undefined {
  const m = QUANTITY.exec(text);
  if (!m) return undefined;
  return Number(m[1]) * (m[3] ? QUANTITY_FACTORS[m[3]]! : 1);
}

/** Parses a byte size: `1048576`, `512Ki`, `7Mi`, `1Gi`; undefined when invalid. */
export function parseBytes(text: string): number | undefined {
  const trimmed = text.trim();
  return /^\d+(Ki|Mi|Gi)?$/.test(trimmed) ? quantityValue(trimmed) : undefined;
}

/** `90000` as `90s`, `3600000` as `1h`: how bounds read in messages. */
export function formatMs(ms: number): string {
  if (ms === 0) return '0';
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

function formatBytes(n: number): string {
  for (const [unit, f] of [
    ['Gi', 2 ** 30],
    ['Mi', 2 ** 20],
    ['Ki', 2 ** 10],
  ] as const)
    if (n % f === 0) return `${n / f}${unit}`;
  return String(n);
}

/**
 * Each option's value as its declared {@link OptionKind}: every problem (named
 * `--flag (ENV)`) goes to `problems`, and a placeholder is returned so parsing goes on.
 * Asking for a kind an option does not declare is a programming error and throws.
 */
export function typedSettings<K extends string>(
  options: readonly OptionSpec<K>[],
  reader: { raw: (key: K) => string; nameOf: (key: K) => string },
  problems: string[],
) {
  const { raw, nameOf } = reader;
  function kindOf<T extends OptionKind['kind']>(key: K, kind: T): Extract<OptionKind, { kind: T }> {
    const k = options.find((o) => o.key === key)?.kind;
    if (k?.kind !== kind) throw new Error(`option ${key} is not declared as ${kind}`);
    return k as Extract<OptionKind, { kind: T }>;
  }
  const whole = (key: K, min: number, max: number, what: (text: string) => string): number => {
    const text = raw(key);
    const n = /^\d+$/.test(text) ? Number(text) : NaN;
    if (!(n >= min && n <= max)) {
      problems.push(`${nameOf(key)}: ${what(text)}`);
      return 0;
    }
    return n;
  };
  return {
    raw,
    nameOf,
    /** Milliseconds (0 when invalid). */
    duration(key: K): number {
      const { minMs, maxMs } = kindOf(key, 'duration');
      const text = raw(key);
      const ms = parseDuration(text);
      if (ms === undefined) {
        problems.push(`${nameOf(key)}: "${text}" is not a duration (e.g. 500ms, 30s, 2m)`);
        return 0;
      }
      if (ms < minMs || ms > maxMs)
        problems.push(`${nameOf(key)}: ${text} is outside ${formatMs(minMs)}..${formatMs(maxMs)}`);
      return ms;
    },
    /** A port; undefined when optional and empty (0 when invalid). */
    port(key: K): number | undefined {
      const { min, max, optional } = kindOf(key, 'port');
      if (optional && raw(key) === '') return undefined;
      return whole(key, min, max, (text) => `"${text}" is not a port in ${min}..${max}`);
    },
    integer(key: K): number {
      const { min, max } = kindOf(key, 'integer');
      return whole(key, min, max, (text) => `"${text}" is not a whole number from ${min} to ${max}`);
    },
    /** An address; undefined when invalid, or when optional and empty. */
    address(key: K): ListenAddress | undefined {
      const { optional } = kindOf(key, 'address');
      const text = raw(key);
      if (text === '') {
        if (!optional) problems.push(`${nameOf(key)} must not be empty`);
        return undefined;
      }
      const parsed = parseAddress(text);
      if (typeof parsed === 'string') {
        problems.push(`${nameOf(key)}: ${parsed}`);
        return undefined;
      }
      return parsed;
    },
    bool(key: K): boolean {
      kindOf(key, 'bool');
      const text = raw(key).toLowerCase();
      if (text === 'true' || text === '1') return true;
      if (text === 'false' || text === '0') return false;
      problems.push(`${nameOf(key)}: "${raw(key)}" is not true or false`);
      return false;
    },
    /** The quantity as written; "" for none. */
    quantity(key: K): string {
      kindOf(key, 'quantity');
      const text = raw(key);
      if (text !== '' && !QUANTITY.test(text))
        problems.push(`${nameOf(key)}: "${text}" is not a Kubernetes quantity (e.g. 10m, 0.5, 64Mi)`);
      return text;
    },
    /** One of the declared values (as written when invalid, with a problem recorded). */
    choice<T extends string>(key: K): T {
      const { values, lowercase, aliases } = kindOf(key, 'enum');
      const text = lowercase ? raw(key).toLowerCase() : raw(key);
      const value = aliases?.[text] ?? text;
      if (!values.includes(value)) {
        problems.push(`${nameOf(key)}: "${text}" is not one of ${values.join(', ')}`);
      }
      return value as T;
    },
    /** Bytes; undefined when invalid. */
    bytes(key: K): number | undefined {
      const { min } = kindOf(key, 'bytes');
      const text = raw(key);
      const n = parseBytes(text);
      if (n === undefined || n < min) {
        problems.push(
          `${nameOf(key)}: "${text}" must be a byte size of at least ${formatBytes(min)} (e.g. 7Mi)`,
        );
        return undefined;
      }
      return n;
    },
  };
}

/** The flags part of `--help`. */
export function usageLines(options: readonly OptionSpec[]): string[] {
  return options.flatMap((o) => [
    `  ${o.flag}=<value>  (${o.env}, default ${o.defaultText ?? o.default})`,
    `      ${o.description}`,
  ]);
}

/** The README's configuration table (Markdown); `npm run docs` writes it, a test checks it. */
export function optionsTable(options: readonly OptionSpec[]): string {
  const cell = (s: string) => s.replace(/\|/g, '\\|');
  return [
    '| flag | environment | default | meaning |',
    '| --- | --- | --- | --- |',
    ...options.map((o) => {
      const def = o.defaultText ?? (o.default === '' ? '(empty)' : `\`${o.default}\``);
      return `| \`${o.flag}\` | \`${o.env}\` | ${cell(def)} | ${cell(o.description)} |`;
    }),
  ].join('\n');
}
