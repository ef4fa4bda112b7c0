/**
 * The flag machinery both commands share: Kubernetes-style flags (`--name=value` or
 * `--name value`), the same settings as environment variables, duration and address
 * syntax, and the `--help` text and README table generated from one option list. Pure.
 *
 * Each command keeps its own option list (the single source of its defaults) and its own
 * validation; this module only reads and renders.
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
  description: string;
}

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
 * `--flag (ENV)`. With `emptyEnvIsUnset`, a variable set to "" falls through to the default
 * (templated manifests often render ""); without it, "" is a value (e.g. "no limit").
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
