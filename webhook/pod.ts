/**
 * Reading a pod as the API server sent it: plain JSON that mutating admission sees before
 * validation, so any field may be missing or of the wrong type. Pure helpers shared by the
 * policy, the rendering and the applying layers.
 */
import type { V1Container } from '@kubernetes/client-node';
import { createHash } from 'node:crypto';

/** True for a JSON object (not null, not an array). */
export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The string-valued entries of a map (labels, annotations); {} when it is not one. */
export function stringMap(v: unknown): Record<string, string> {
  if (!isRecord(v)) return {};
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v)) if (typeof val === 'string') out[k] = val;
  return out;
}

/**
 * The string value of one key of a map (labels, annotations), or undefined: what
 * `stringMap(v)[key]` answers, without copying the map (this runs several times per review).
 */
export function stringAt(v: unknown, key: string): string | undefined {
  if (!isRecord(v) || !Object.hasOwn(v, key)) return undefined;
  const value = v[key];
  return typeof value === 'string' ? value : undefined;
}

/** The container objects of a list; [] when it is not one. */
export function containersOf(list: unknown): V1Container[] {
  return Array.isArray(list) ? list.filter(isRecord).map((c) => c as unknown as V1Container) : [];
}

/** The first `length` hex digits of the SHA-256 of `text`. */
export function shortHash(text: string, length = 6): string {
  return createHash('sha256').update(text).digest('hex').slice(0, length);
}

/**
 * A value quoted for a warning, cut to 40 characters so warnings stay short. Takes anything:
 * mutating admission runs before validation, so a pod may come with a container without a
 * name (or with a number for one), and the API server refuses it only after us.
 */
export function clip(value: unknown): string {
  const text = typeof value === 'string' ? value : String(JSON.stringify(value) ?? value);
  return JSON.stringify(text.length > 40 ? `${text.slice(0, 39)}…` : text);
}

/**
 * Stable JSON (keys sorted at every level) for hashing: the same text whatever order the keys
 * were written in. JSON.stringify with a replacer that re-keys each object in order: several
 * times faster than concatenating by hand (this runs on every injection).
 */
export function canonical(v: unknown): string {
  return (
    JSON.stringify(v, (_key, value: unknown) => {
      if (!isRecord(value)) return value;
      const sorted: Record<string, unknown> = {};
      for (const k of Object.keys(value).sort()) sorted[k] = value[k];
      return sorted;
    }) ?? 'null'
  );
}
