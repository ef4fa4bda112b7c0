/**
 * The JSON Patch (RFC 6902) an admission response carries: computed by diffing the pod as
 * received against the mutated copy, never written by hand, so it always describes exactly
 * the transformation. `metadata.managedFields` are left out of the diff: they are the API
 * server's bookkeeping and can be large.
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

/**
 * The operations that turn `original` into `mutated`. Both are treated as JSON (a value
 * that JSON cannot hold, such as `undefined`, is dropped first, as it would be on the wire).
 */
export function createPatch(original: unknown, mutated: unknown): Operation[] {
  const a = withoutManagedFields(original) as object;
  const b = JSON.parse(JSON.stringify(withoutManagedFields(mutated))) as object;
  return jsonpatch.compare(a, b);
}

/** Applies a patch to a deep copy of `doc` and returns the copy; throws when it does not apply. */
export function applyPatch<T>(doc: T, operations: readonly Operation[]): T {
  return jsonpatch.applyPatch(structuredClone(doc), [...operations], true, false).newDocument;
}
