/**
 * One logger for both commands: JSON lines with the fields pino writes (`level` as a label,
 * `time` as ISO 8601, the base fields, the child bindings, the call's fields, `msg`), or
 * `time LEVEL message key=value` lines for a terminal. Child loggers carry bindings and may
 * have their own level.
 *
 * Why not pino: the elector is a sidecar in every opted-in pod, and importing pino costs a
 * Node 24 process ~9 MiB of RSS (README "Measured figures"); what the commands need from it
 * is this file. It implements the part of pino's interface fastify asks of a
 * `loggerInstance` (trace, debug, info, warn, error, fatal, child, level), so the webhook can
 * hand it to fastify too.
 *
 * Writes are synchronous `stream.write(line)` calls, one per line: give a stream that does
 * not block if the reader may lag (the webhook does).
 */

/** Levels, lowest first; `silent` logs nothing. */
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';

const LEVELS: Record<LogLevel, number> = {
  trace: 10,
  debug: 20,
  info: 30,
  warn: 40,
  error: 50,
  fatal: 60,
  silent: Infinity,
};

/** Where lines go: `process.stdout`, a file stream, or a test's collector. */
export interface LogStream {
  write(line: string): unknown;
}

export interface LoggerOptions {
  level: LogLevel;
  stream: LogStream;
  /** `json` (default): one JSON object per line. `text`: `time LEVEL message key=value ...`. */
  format?: 'json' | 'text';
  /** Fields on every line, after `level` and `time` (pino's `base`). */
  base?: Record<string, unknown>;
  /** Fields computed for every line (pino's `mixin`), e.g. the current leader. */
  mixin?: () => Record<string, unknown>;
  /** Clock for `time`; default `Date.now`. */
  now?: () => number;
}

type LogFn = {
  (fields: object | Error, message?: string): void;
  (message: string): void;
};

/** pino's logging interface, as far as the commands and fastify use it. */
export interface Logger {
  level: LogLevel;
  trace: LogFn;
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
  fatal: LogFn;
  /** Only `level` of pino's child options is honoured. */
  child(bindings: Record<string, unknown>, options?: { level?: string }): Logger;
  isLevelEnabled(level: LogLevel): boolean;
  /** Does nothing (pino's `silent` method, which fastify may call). */
  silent: LogFn;
}

/** The parts of an Error worth a log line, as pino's `err` serializer writes them. */
function serializeError(err: Error, seen = new WeakSet<object>()): Record<string, unknown> {
  seen.add(err);
  const out: Record<string, unknown> = { type: err.constructor?.name ?? 'Error', message: err.message };
  out['stack'] = err.stack;
  for (const [key, value] of Object.entries(err)) {
    if (key in out) continue;
    out[key] = value instanceof Error && !seen.has(value) ? serializeError(value, seen) : value;
  }
  if (err.cause instanceof Error && !seen.has(err.cause)) out['cause'] = serializeError(err.cause, seen);
  else if (err.cause !== undefined && !('cause' in out)) out['cause'] = err.cause;
  return out;
}

const replacer = (_key: string, value: unknown) => (value instanceof Error ? serializeError(value) : value);

/** True when no field is an object: then the replacer has nothing to do (a review's line). */
function flat(record: Record<string, unknown>): boolean {
  for (const key in record) {
    const value = record[key];
    if (typeof value === 'object' && value !== null) return false;
  }
  return true;
}

function encode(record: Record<string, unknown>): string {
  try {
    // The same text: a replacer makes JSON.stringify call back for every field.
    return flat(record) ? JSON.stringify(record) : JSON.stringify(record, replacer);
  } catch {
    // A cycle or a BigInt: write what can be written rather than lose the line.
    const seen = new WeakSet<object>();
    return JSON.stringify(record, (key, value: unknown) => {
      if (typeof value === 'bigint') return value.toString();
      if (value instanceof Error) return serializeError(value);
      if (typeof value === 'object' && value !== null) {
        if (seen.has(value)) return '[Circular]';
        seen.add(value);
      }
      return replacer(key, value);
    });
  }
}

/** `time LEVEL message key=value ...`, from the record a JSON line would carry. */
function textLine(record: Record<string, unknown>): string {
  const { time, level, msg, ...rest } = record;
  const fields = Object.entries(rest)
    .map(([k, v]) => {
      const value = v instanceof Error ? serializeError(v) : v;
      return `${k}=${typeof value === 'string' && !/\s|"/.test(value) ? value : encode({ v: value }).slice(5, -1)}`;
    })
    .join(' ');
  return `${String(time)} ${String(level).toUpperCase()} ${String(msg)}${fields ? ` ${fields}` : ''}`;
}

function isLevel(level: string): level is LogLevel {
  return Object.hasOwn(LEVELS, level);
}

/** A root logger. */
export function createLogger(options: LoggerOptions): Logger {
  const now = options.now ?? Date.now;
  const format = options.format ?? 'json';
  const make = (bindings: Record<string, unknown>, initial: LogLevel): Logger => {
    let threshold = LEVELS[initial];
    let current = initial;
    const emit =
      (level: Exclude<LogLevel, 'silent'>): LogFn =>
      (first: object | Error | string, message?: string) => {
        if (LEVELS[level] < threshold) return;
        const record: Record<string, unknown> = { level, time: new Date(now()).toISOString() };
        Object.assign(record, options.base, options.mixin?.(), bindings);
        let msg: string | undefined;
        if (typeof first === 'string') msg = first;
        else if (first instanceof Error) {
          record['err'] = first;
          msg = message ?? first.message;
        } else {
          Object.assign(record, first);
          msg = message ?? (typeof record['msg'] === 'string' ? record['msg'] : undefined);
        }
        if (msg !== undefined) record['msg'] = msg;
        options.stream.write(`${format === 'text' ? textLine(record) : encode(record)}\n`);
      };
    return {
      get level() {
        return current;
      },
      set level(value: LogLevel) {
        if (!isLevel(value)) throw new Error(`unknown log level ${JSON.stringify(value)}`);
        current = value;
        threshold = LEVELS[value];
      },
      trace: emit('trace'),
      debug: emit('debug'),
      info: emit('info'),
      warn: emit('warn'),
      error: emit('error'),
      fatal: emit('fatal'),
      silent: () => undefined,
      isLevelEnabled: (level) => LEVELS[level] >= threshold && level !== 'silent',
      child(more, childOptions) {
        const level = childOptions?.level;
        return make({ ...bindings, ...more }, level !== undefined && isLevel(level) ? level : current);
      },
    };
  };
  return make({}, options.level);
}
