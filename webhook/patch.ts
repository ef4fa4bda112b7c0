/**
 * JSON Patch (RFC 6902) helpers. Admission builds its patch from the decisions (apply.ts: adds
 * at known indexes), which costs nothing per byte of the pod; `createPatch` diffs two
 * documents, for tests and tools that compare a pod before and after (another webhook's
 * changes in the reinvocation test). `metadata.managedFields` are left out of the diff: they
 * are the API server's bookkeeping and can be large.
 *
 * Arrays are diffed around their common prefix and suffix, so an insertion (the `ELECTOR_*`
 * env prepended to a container, the elector spliced into the init containers) is a few
 * `add` operations however long the array. A positional diff (fast-json-patch's `compare`)
 * turns a prepend into a `replace` of every following element: 1,830 operations and a
 * 275 KB response for a pod with 600 env entries per container (bench/webhook.ts).
 */
import jsonpatch, { type Operation } from 'fast-json-patch';

export type { Operation };

function withoutManagedFields(obj: unknown): unknown {
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) return obj;
  const meta = (obj as { metadata?: unknown }).metadata;
  if (typeof meta !== 'object' || meta === null || !('managedFields' in meta)) return obj;
  const { managedFields: _ignored, ...rest } = meta as Record<string, unknown>;
  return { ...(obj as Record<string, unknown>), metadata: rest };
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

function isObject(v: Json): v is { [key: string]: Json } {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Deep equality of two JSON values. */
function equal(a: Json, b: Json): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    return a.every((x, i) => equal(x, b[i]!));
  }
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  return keys.every((k) => Object.hasOwn(b, k) && equal(a[k]!, b[k]!));
}

const pointer = (path: string, key: string | number) =>
  `${path}/${String(key).replace(/~/g, '~0').replace(/\//g, '~1')}`;

/** Appends to `ops` the operations that turn `a` into `b` at `path`. */
function diff(a: Json, b: Json, path: string, ops: Operation[]): void {
  if (a === b) return;
  if (isObject(a) && isObject(b)) {
    for (const key of Object.keys(a)) {
      if (!Object.hasOwn(b, key)) ops.push({ op: 'remove', path: pointer(path, key) });
    }
    for (const key of Object.keys(b)) {
      if (!Object.hasOwn(a, key)) ops.push({ op: 'add', path: pointer(path, key), value: b[key] });
      else diff(a[key]!, b[key]!, pointer(path, key), ops);
    }
    return;
  }
  if (Array.isArray(a) && Array.isArray(b)) {
    // Common prefix and suffix stay; the middle is diffed pairwise, then shortened or grown.
    let start = 0;
    while (start < a.length && start < b.length && equal(a[start]!, b[start]!)) start++;
    let endA = a.length;
    let endB = b.length;
    while (endA > start && endB > start && equal(a[endA - 1]!, b[endB - 1]!)) {
      endA--;
      endB--;
    }
    const paired = Math.min(endA - start, endB - start);
    for (let i = start; i < start + paired; i++) diff(a[i]!, b[i]!, pointer(path, i), ops);
    for (let i = start + paired; i < endA; i++)
      ops.push({ op: 'remove', path: pointer(path, start + paired) });
    for (let i = start + paired; i < endB; i++) ops.push({ op: 'add', path: pointer(path, i), value: b[i] });
    return;
  }
  if (!equal(a, b)) ops.push({ op: 'replace', path, value: b });
}

/**
 * The operations that turn `original` into `mutated`. Both are treated as JSON (a value
 * that JSON cannot hold, such as `undefined`, is dropped first, as it would be on the wire).
 */
export function createPatch(original: unknown, mutated: unknown): Operation[] {
  const a = withoutManagedFields(original) as Json;
  const b = JSON.parse(JSON.stringify(withoutManagedFields(mutated))) as Json;
  const ops: Operation[] = [];
  diff(a, b, '', ops);
  return ops;
}

/**
 * Applies a patch to a deep copy of `doc` and returns the copy; throws when it does not apply.
 * The operations' values are copied too: the result shares nothing with them (admission's
 * are frozen and shared between reviews, see render.ts).
 */
export function applyPatch<T>(doc: T, operations: readonly Operation[]): T {
  return jsonpatch.applyPatch(structuredClone(doc), structuredClone([...operations]), true, false)
    .newDocument;
}

/** JSON text of values that never change once made (the rendered elector), by identity. */
const serialized = new WeakMap<object, string>();

/**
 * Registers the JSON text of a value that will not change (the caller freezes it), so
 * {@link serializePatch} copies that text instead of serialising the value for every review.
 */
export function preSerialized<T extends object>(value: T): T {
  serialized.set(value, JSON.stringify(value));
  return value;
}

/** The keys, in order, of an operation whose text {@link serializePatch} writes itself. */
const PLAIN = /^op,path,value$/;

/**
 * `JSON.stringify(operations)`, the same text, with the text of values registered by
 * {@link preSerialized} spliced in: the operations between them are serialised as usual, in
 * one call per run of them.
 */
export function serializePatch(operations: readonly Operation[]): string {
  const parts: string[] = [];
  let start = 0;
  for (let i = 0; i < operations.length; i++) {
    const op = operations[i]!;
    const value: unknown = 'value' in op ? op.value : undefined;
    const text = typeof value === 'object' && value !== null ? serialized.get(value) : undefined;
    if (text === undefined || (op.op !== 'add' && op.op !== 'replace') || !PLAIN.test(Object.keys(op).join()))
      continue;
    if (i > start) parts.push(JSON.stringify(operations.slice(start, i)).slice(1, -1));
    parts.push(`{"op":"${op.op}","path":${JSON.stringify(op.path)},"value":${text}}`);
    start = i + 1;
  }
  if (start === 0) return JSON.stringify(operations);
  if (start < operations.length) parts.push(JSON.stringify(operations.slice(start)).slice(1, -1));
  return `[${parts.join(',')}]`;
}
