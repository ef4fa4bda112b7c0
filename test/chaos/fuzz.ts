/**
 * Webhook fuzzing: AdmissionReview bodies through the webhook's real HTTP layer
 * (`buildServer` + `inject()`, the same app that serves HTTPS; no sockets, so tens of
 * thousands of cases take seconds). Two generators:
 *
 * - structure-aware mutation, property-based (fast-check, shrinking to a minimal case):
 *   real AdmissionReview bodies (captured from kube-apiserver, test/fixtures/admission-reviews)
 *   and reviews of the golden pods are mutated by a list of operations: set a value of
 *   another type or an odd one, delete a field, add keys (opt-in, `/` and `~`, unicode,
 *   prototype names), duplicate array items, flip the opt-in, change kind and operation;
 * - byte-level mutation (seeded): flipped, inserted, deleted bytes, truncation, odd
 *   content types, so the JSON parser and the error paths get their share.
 *
 * The oracle, for every case: a 200 AdmissionReview (`admission.k8s.io/v1`, the request's
 * uid echoed, `allowed` a boolean, a status message when not allowed), or a 4xx with a
 * message; never a 5xx, never an internal error inside the review, never a hang (no answer in 30 s), never over 1 s of CPU for one case;
 * a patch only for a CREATE of a v1 Pod that opted in, and every patch applies to the pod.
 */
import type { FastifyInstance } from 'fastify';
import fc from 'fast-check';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import { createMetrics } from '../../webhook/metrics.ts';
import { applyPatch, type Operation } from '../../webhook/patch.ts';
import { buildServer } from '../../webhook/server.ts';
import { createReview, TEST_CONFIG } from '../support/admission-reviews.ts';
import { Rng } from './rng.ts';

const FIXTURES = path.resolve(import.meta.dirname, '../fixtures');
export const REVIEWS_DIR = path.join(FIXTURES, 'admission-reviews');
const LIMIT = 7 * 1024 * 1024;

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** AdmissionReview bodies to mutate: captured ones first, then the golden pods wrapped. */
export function seedReviews(): Json[] {
  const seeds: Json[] = [];
  if (existsSync(REVIEWS_DIR)) {
    for (const f of readdirSync(REVIEWS_DIR).sort()) {
      if (f.endsWith('.json'))
        seeds.push(JSON.parse(readFileSync(path.join(REVIEWS_DIR, f), 'utf8')) as Json);
    }
  }
  const golden = path.join(FIXTURES, 'golden');
  for (const f of readdirSync(golden).sort()) {
    if (!f.endsWith('.input.json')) continue;
    const input = JSON.parse(readFileSync(path.join(golden, f), 'utf8')) as { pod: unknown };
    seeds.push(JSON.parse(JSON.stringify(createReview(input.pod))) as Json);
  }
  return seeds;
}

/** Every path in a JSON document (arrays and objects included), breadth-limited. */
function paths(doc: Json, limit = 4000): (string | number)[][] {
  const out: (string | number)[][] = [];
  const walk = (v: Json, p: (string | number)[]) => {
    if (out.length >= limit) return;
    out.push(p);
    if (Array.isArray(v)) v.forEach((x, i) => walk(x, [...p, i]));
    else if (isObject(v)) for (const [k, x] of Object.entries(v)) walk(x, [...p, k]);
  };
  walk(doc, []);
  return out;
}

function parentOf(doc: Json, p: (string | number)[]): Json | undefined {
  let cur: Json | undefined = doc;
  for (const k of p.slice(0, -1)) {
    if (Array.isArray(cur) && typeof k === 'number') cur = cur[k];
    else if (isObject(cur) && typeof k === 'string') cur = (cur as Record<string, Json>)[k];
    else return undefined;
  }
  return cur;
}

/** A JSON value's own property set the way JSON.parse would (even `__proto__`). */
function defineKey(obj: Record<string, Json>, key: string, value: Json): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

export type Mutation =
  | { op: 'set'; at: number; value: Json }
  | { op: 'delete'; at: number }
  | { op: 'add-key'; at: number; key: string; value: Json }
  | { op: 'duplicate'; at: number }
  | { op: 'opt-in'; where: 'label' | 'annotation'; value: Json }
  | { op: 'request'; field: 'operation' | 'kind' | 'uid' | 'subResource' | 'namespace'; value: Json };

/** Applies mutations to a copy of `seed`; `at` picks a path modulo the paths that exist. */
export function mutate(seed: Json, mutations: readonly Mutation[]): Json {
  let doc = structuredClone(seed);
  // Values may be shared constants of the generator: never insert them, insert copies.
  for (const original of mutations) {
    const m = 'value' in original ? { ...original, value: structuredClone(original.value) } : original;
    if (m.op === 'opt-in' || m.op === 'request') {
      const request = isObject(doc) ? (doc as Record<string, Json>)['request'] : undefined;
      if (!isObject(request)) continue;
      if (m.op === 'request') {
        defineKey(request, m.field, m.value);
        continue;
      }
      const object = (request as Record<string, Json>)['object'];
      if (!isObject(object)) continue;
      const meta = isObject(object['metadata']) ? (object['metadata'] as Record<string, Json>) : {};
      defineKey(object, 'metadata', meta);
      const key = m.where === 'label' ? 'labels' : 'annotations';
      const map = isObject(meta[key]) ? (meta[key] as Record<string, Json>) : {};
      defineKey(meta, key, map);
      defineKey(map, 'leaderElection', m.value);
      continue;
    }
    const all = paths(doc);
    const p = all[m.at % all.length]!;
    if (p.length === 0) {
      if (m.op === 'set') doc = m.value;
      continue;
    }
    const parent = parentOf(doc, p);
    const last = p[p.length - 1]!;
    if (parent === undefined || parent === null || typeof parent !== 'object') continue;
    switch (m.op) {
      case 'set':
        if (Array.isArray(parent)) parent[last as number] = m.value;
        else defineKey(parent, last as string, m.value);
        break;
      case 'delete':
        if (Array.isArray(parent)) parent.splice(last as number, 1);
        else delete (parent as Record<string, Json>)[last as string];
        break;
      case 'add-key': {
        const target = Array.isArray(parent)
          ? parent[last as number]
          : (parent as Record<string, Json>)[last as string];
        if (isObject(target)) defineKey(target, m.key, m.value);
        else if (Array.isArray(target)) target.push(m.value);
        break;
      }
      case 'duplicate': {
        const target = Array.isArray(parent)
          ? parent[last as number]
          : (parent as Record<string, Json>)[last as string];
        if (Array.isArray(target) && target.length > 0) target.push(structuredClone(target[0]!));
        else if (Array.isArray(parent)) parent.push(structuredClone(parent[last as number]!));
        break;
      }
    }
  }
  return doc;
}

const oddStrings = [
  '',
  ' ',
  'true',
  'TRUE',
  ' true ',
  'false',
  'yes',
  '4040',
  '4041',
  '-1',
  '65536',
  'x'.repeat(300),
  'a/b~c',
  '~1~0',
  '__proto__',
  'constructor',
  'élection',
  '\u0000',
  '\ud800',
  '😀'.repeat(40),
  '$(POD_NAME)',
  '../../etc/passwd',
  'Web_App',
  'a'.repeat(64),
  'a.b.c',
  '-leading',
  'trailing-',
];

const oddValue: fc.Arbitrary<Json> = fc.oneof(
  { arbitrary: fc.constantFrom<Json>(...oddStrings), weight: 4 },
  {
    arbitrary: fc.constantFrom<Json>(
      null,
      true,
      false,
      0,
      -0,
      -1,
      4040,
      4041,
      1e308,
      2 ** 53 + 1,
      0.5,
      [],
      {},
    ),
    weight: 3,
  },
  { arbitrary: fc.jsonValue({ maxDepth: 3 }) as fc.Arbitrary<Json>, weight: 3 },
  {
    arbitrary: fc.constantFrom<Json>(
      [{ name: 'elector', image: 'x' }],
      [{ name: 'app', image: 'x', ports: [{ containerPort: 4040 }] }],
      { containers: [] },
      { containers: [{ name: 'a' }, { name: 'a' }] },
      { hostNetwork: true, containers: [{ name: 'a', image: 'x' }] },
      { 'lifelease.dev/injected': '{"version":"0","hash":"x"}' },
      { 'lifelease.dev/election': 'Not_Valid' },
      { 'lifelease.dev/election-port': '4041' },
    ),
    weight: 2,
  },
);

const oddKey = fc.oneof(
  fc.constantFrom(
    'leaderElection',
    'app',
    'app.kubernetes.io/name',
    'lifelease.dev/election',
    'lifelease.dev/election-port',
    'lifelease.dev/probe-port',
    'lifelease.dev/injected',
    'a/b',
    '~',
    '',
    'constructor',
    'toString',
    'hostNetwork',
    'initContainers',
    'env',
    'ports',
  ),
  fc.string({ maxLength: 12 }),
);

export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('set' as const), at: fc.nat(), value: oddValue }),
  fc.record({ op: fc.constant('delete' as const), at: fc.nat() }),
  fc.record({ op: fc.constant('add-key' as const), at: fc.nat(), key: oddKey, value: oddValue }),
  fc.record({ op: fc.constant('duplicate' as const), at: fc.nat() }),
  fc.record({
    op: fc.constant('opt-in' as const),
    where: fc.constantFrom('label' as const, 'annotation' as const),
    value: fc.oneof(
      fc.constantFrom<Json>('true', 'false', 'TRUE', ' True ', 'yes', '', true, null, 1),
      oddValue,
    ),
  }),
  fc.record({
    op: fc.constant('request' as const),
    field: fc.constantFrom(
      'operation' as const,
      'kind' as const,
      'uid' as const,
      'subResource' as const,
      'namespace' as const,
    ),
    value: fc.oneof(
      fc.constantFrom<Json>(
        'CREATE',
        'UPDATE',
        'DELETE',
        'CONNECT',
        'status',
        'ephemeralcontainers',
        { group: '', version: 'v1', kind: 'Pod' },
        { group: 'apps', version: 'v1', kind: 'Deployment' },
        { group: '', version: 'v1', kind: 'pod' },
        '',
        'kube-system',
      ),
      oddValue,
    ),
  }),
);

export interface FuzzCase {
  headers?: Record<string, string>;
  payload: string;
}

export interface Outcome {
  status: number;
  kind: 'review' | 'error';
  outcome?: 'allowed' | 'patched' | 'denied' | 'errored';
}

/** How long a case may go unanswered before it counts as a hang. */
const HANG_MS = 30_000;

const isTrue = (v: unknown) => typeof v === 'string' && v.trim().toLowerCase() === 'true';

/**
 * Sends one case and checks the oracle; returns a problem description, or the outcome.
 * `parsed` is the body as JSON when it is JSON (what the request claimed).
 */
export async function judgeCase(
  app: FastifyInstance,
  c: FuzzCase,
): Promise<{ problem?: string; outcome: Outcome }> {
  const started = performance.now();
  const cpuBefore = process.cpuUsage();
  const res = await Promise.race([
    app.inject({
      method: 'POST',
      url: '/mutate',
      headers: { 'content-type': 'application/json', ...c.headers },
      payload: c.payload,
    }),
    // A hang never answers; 30 s tells it from a slow answer on a loaded machine (at a load
    // average of 30 one case took over 2 s, the bound this had, and stopped the run).
    new Promise<'hang'>((resolve) => setTimeout(() => resolve('hang'), HANG_MS).unref()),
  ]);
  const fail = (problem: string, outcome: Outcome = { status: 0, kind: 'error' }) => ({
    problem: `${problem}; payload (${c.payload.length} bytes): ${c.payload.slice(0, 300)}`,
    outcome,
  });
  if (res === 'hang') return fail(`no answer in ${HANG_MS / 1000} s (hang)`);
  const ms = performance.now() - started;
  // The case's cost in CPU time (the server runs in this process): at a load average of 50
  // on 2 cores a 50 ms case takes over a second of wall time, so wall time is not its cost.
  const cpu = process.cpuUsage(cpuBefore);
  const cpuMs = (cpu.user + cpu.system) / 1000;
  let body: unknown;
  try {
    body = JSON.parse(res.body);
  } catch {
    return fail(`status ${res.statusCode} with a body that is not JSON: ${res.body.slice(0, 200)}`);
  }
  if (res.statusCode >= 500) return fail(`status ${res.statusCode}: ${res.body.slice(0, 300)}`);
  if (res.statusCode >= 400) {
    const message = isObject(body) ? body['message'] : undefined;
    if (typeof message !== 'string' || message === '') return fail(`${res.statusCode} without a message`);
    return { outcome: { status: res.statusCode, kind: 'error' } };
  }
  if (res.statusCode !== 200) return fail(`unexpected status ${res.statusCode}`);
  // A 200 is an AdmissionReview answering the request.
  let request: Record<string, unknown> | undefined;
  try {
    const sent = JSON.parse(c.payload) as unknown;
    const r = isObject(sent) ? sent['request'] : undefined;
    request = isObject(r) ? r : undefined;
  } catch {
    return fail('200 for a body that is not JSON');
  }
  if (!request) return fail('200 for a body without a request');
  if (!isObject(body) || body['apiVersion'] !== 'admission.k8s.io/v1' || body['kind'] !== 'AdmissionReview')
    return fail(`200 that is not an AdmissionReview: ${res.body.slice(0, 200)}`);
  const response = body['response'];
  if (!isObject(response)) return fail('AdmissionReview without a response');
  if (response['uid'] !== request['uid']) return fail('the uid is not echoed');
  if (typeof response['allowed'] !== 'boolean') return fail('allowed is not a boolean');
  const status = response['status'];
  let outcome: Outcome['outcome'] = response['allowed'] ? 'allowed' : 'denied';
  if (!response['allowed']) {
    if (!isObject(status) || typeof status['message'] !== 'string' || status['message'] === '')
      return fail('not allowed without a message');
    if (response['patch'] !== undefined) return fail('a patch on a refusal');
    const code = status['code'];
    if (typeof code === 'number' && code >= 500)
      return fail(`an internal error: ${String(status['message'])}`);
    if (typeof code === 'number' && code !== 403) outcome = 'errored';
  }
  if (response['patch'] !== undefined) {
    outcome = 'patched';
    if (response['patchType'] !== 'JSONPatch') return fail('a patch without patchType JSONPatch');
    const kind = request['kind'];
    const isPodCreate =
      isObject(kind) &&
      kind['group'] === '' &&
      kind['version'] === 'v1' &&
      kind['kind'] === 'Pod' &&
      request['operation'] === 'CREATE' &&
      (request['subResource'] ?? '') === '';
    if (!isPodCreate) return fail('a patch for something that is not a pod CREATE');
    const pod = request['object'];
    const meta = isObject(pod) ? pod['metadata'] : undefined;
    const labels = isObject(meta) && isObject(meta['labels']) ? meta['labels'] : {};
    const annotations = isObject(meta) && isObject(meta['annotations']) ? meta['annotations'] : {};
    if (!isTrue(labels['leaderElection']) && !isTrue(annotations['leaderElection']))
      return fail('a patch for a pod that did not opt in');
    let ops: Operation[];
    try {
      ops = JSON.parse(
        Buffer.from(typeof response['patch'] === 'string' ? response['patch'] : '', 'base64').toString(
          'utf8',
        ),
      ) as Operation[];
    } catch {
      return fail('the patch is not base64 JSON');
    }
    try {
      applyPatch(pod, ops);
    } catch (err) {
      return fail(`the patch does not apply: ${(err as Error).message}`);
    }
  }
  if (cpuMs > 1000) return fail(`answered after ${cpuMs.toFixed(0)} ms of CPU (${ms.toFixed(0)} ms)`);
  return { outcome: { status: 200, kind: 'review', outcome } };
}

export function fuzzApp(): FastifyInstance {
  return buildServer({
    logger: pino({ level: 'silent' }),
    injection: TEST_CONFIG,
    metrics: createMetrics({ defaultMetrics: false }),
    maxRequestBytes: LIMIT,
    readiness: () => ({ ready: true }),
  });
}

/** Byte-level mutation of a serialized body (seeded). */
export function mutateBytes(rng: Rng, text: string): FuzzCase {
  let buf = Buffer.from(text, 'utf8');
  const n = rng.int(1, 8);
  for (let i = 0; i < n; i++) {
    const at = rng.int(0, Math.max(0, buf.length - 1));
    switch (rng.int(0, 5)) {
      case 0: // flip a bit
        if (buf.length > 0) buf[at] = buf[at]! ^ (1 << rng.int(0, 7));
        break;
      case 1: // insert a structural or odd byte
        buf = Buffer.concat([
          buf.subarray(0, at),
          Buffer.from([rng.pick([0x22, 0x7b, 0x7d, 0x5b, 0x5d, 0x2c, 0x3a, 0x5c, 0x00, 0xff, 0xc3])]),
          buf.subarray(at),
        ]);
        break;
      case 2: // delete a run
        buf = Buffer.concat([buf.subarray(0, at), buf.subarray(at + rng.int(1, 16))]);
        break;
      case 3: // truncate
        buf = buf.subarray(0, at);
        break;
      case 4: // duplicate a run
        buf = Buffer.concat([buf.subarray(0, at + 32), buf.subarray(at)]);
        break;
      default: // replace a digit or a letter
        if (buf.length > 0) buf[at] = rng.pick([0x30, 0x39, 0x41, 0x7a, 0x2d, 0x2e]);
    }
  }
  const headers = rng.weighted<Record<string, string>>([
    [{}, 10],
    [{ 'content-type': 'application/json; charset=utf-8' }, 2],
    [{ 'content-type': 'application/json; charset=latin1' }, 1],
    [{ 'content-type': 'text/plain' }, 1],
    [{ 'content-type': 'application/x-www-form-urlencoded' }, 1],
    [{ 'content-encoding': 'gzip' }, 1],
  ]);
  return { headers, payload: buf.toString('latin1') };
}

export interface FuzzResult {
  cases: number;
  failures: string[];
  outcomes: Record<string, number>;
}

/**
 * Runs `cases` fuzz cases: about two thirds property-based structure mutations, one third
 * byte mutations. Stops collecting after 20 failures.
 */
export async function runWebhookFuzz(options: {
  cases: number;
  seed: number;
  log?: (m: string) => void;
}): Promise<FuzzResult> {
  const app = fuzzApp();
  await app.ready();
  const seeds = seedReviews();
  const failures: string[] = [];
  const outcomes: Record<string, number> = {};
  const count = (o: Outcome) => {
    const key = o.kind === 'error' ? `http ${o.status}` : (o.outcome ?? 'review');
    outcomes[key] = (outcomes[key] ?? 0) + 1;
  };
  let cases = 0;
  try {
    const structural = Math.round((options.cases * 2) / 3);
    const property = fc.asyncProperty(
      fc.nat({ max: seeds.length - 1 }),
      fc.array(mutationArb, { minLength: 1, maxLength: 6 }),
      async (i, mutations) => {
        cases++;
        const doc = mutate(seeds[i]!, mutations);
        const r = await judgeCase(app, { payload: JSON.stringify(doc) });
        count(r.outcome);
        if (r.problem) throw new Error(r.problem);
      },
    );
    const details = await fc.check(property, { numRuns: structural, seed: options.seed | 0 });
    if (details.failed) {
      failures.push(
        `property failed after ${details.numRuns} runs (fast-check seed ${details.seed}, path ${details.counterexamplePath}): ` +
          `${details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance)}; ` +
          `minimal case: ${JSON.stringify(details.counterexample).slice(0, 600)}`,
      );
    }
    options.log?.(`  structure mutations: ${details.numRuns} runs${details.failed ? ' (failed)' : ''}`);

    const rng = new Rng(options.seed);
    const bytes = options.cases - structural;
    for (let k = 0; k < bytes && failures.length < 20; k++) {
      cases++;
      const seed = rng.pick(seeds);
      const base = rng.bool(0.5) ? seed : mutate(seed, [{ op: 'opt-in', where: 'label', value: 'true' }]);
      const r = await judgeCase(app, mutateBytes(rng, JSON.stringify(base)));
      count(r.outcome);
      if (r.problem) failures.push(`bytes case ${k} (seed ${options.seed}): ${r.problem}`);
    }
    options.log?.(`  byte mutations: ${bytes} runs; outcomes ${JSON.stringify(outcomes)}`);
  } finally {
    await app.close();
  }
  return { cases, failures, outcomes };
}
