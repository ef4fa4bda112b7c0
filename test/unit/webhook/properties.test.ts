/**
 * Property tests (fast-check) over arbitrary pods: the response is always a valid
 * AdmissionReview that echoes the uid, the patch applies, pods that did not opt in are never
 * touched, injection is idempotent, and the user's own env survives.
 */
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import fc from 'fast-check';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  encodeReview,
  handleAdmission,
  parseReview,
  type AdmissionReviewResponse,
} from '../../../webhook/admission.ts';
import type { InjectionConfig } from '../../../webhook/inject.ts';
import { applyPatch } from '../../../webhook/patch.ts';
import { createReview, decodePatch, TEST_CONFIG } from '../../support/admission-reviews.ts';

const NUM_RUNS = Number(process.env['FC_NUM_RUNS'] ?? 400);

const dnsLabel = fc.stringMatching(/^[a-z]([a-z0-9-]{0,12}[a-z0-9])?$/);
const optValue = fc.oneof(
  { arbitrary: fc.constantFrom('true', 'TRUE', ' true'), weight: 6 },
  { arbitrary: fc.constantFrom('false', 'False', 'yes', '', '1'), weight: 1 },
);
const port = fc.oneof(fc.constantFrom(4040, 4041, 5040, 5041, 8080), fc.integer({ min: 1, max: 65535 }));
const envName = fc.constantFrom(
  'ELECTOR_PATH',
  'ELECTOR_GET_URL',
  'ELECTOR_SSE_URL',
  'FOO',
  'BAR',
  'POD_NAME',
);
const envVar = fc.oneof(
  fc.record({ name: envName, value: fc.oneof(fc.string(), fc.constant('localhost:4040')) }),
  fc.record({ name: envName, valueFrom: fc.constant({ fieldRef: { fieldPath: 'metadata.name' } }) }),
);
const containerBody = fc.record(
  {
    image: fc.constantFrom('app:1', 'registry.example/x@sha256:0123'),
    ports: fc.array(fc.record({ containerPort: port, protocol: fc.constantFrom('TCP', 'UDP') }), {
      maxLength: 3,
    }),
    env: fc.uniqueArray(envVar, { selector: (e) => e.name, maxLength: 4 }),
    envFrom: fc.constant([{ configMapRef: { name: 'cfg' } }]),
    volumeMounts: fc.constant([
      {
        name: 'kube-api-access-abcde',
        mountPath: '/var/run/secrets/kubernetes.io/serviceaccount',
        readOnly: true,
      },
    ]),
    restartPolicy: fc.constant('Always'),
  },
  { requiredKeys: ['image'] },
);
const labelKeys = fc.constantFrom(
  'app',
  'app.kubernetes.io/name',
  'tier',
  'lifelease.dev/election',
  'example.com/x',
  'pod-template-hash',
);
const annotationKeys = fc.constantFrom('lifelease.dev/election', 'example.com/a/b', 'note');
const portAnnotation = fc.option(
  fc.oneof(
    { arbitrary: fc.constantFrom('4040', '4041', '5040', '5041', '6000'), weight: 6 },
    { arbitrary: fc.constantFrom('80', 'http', '70000'), weight: 1 },
  ),
  { nil: undefined },
);
const labelValue = fc.oneof(dnsLabel, fc.constantFrom('Web_App', 'x'.repeat(63), '5d8f7c9b6d'));
const annotationValue = fc.oneof(
  labelValue,
  fc.constantFrom('5040', '5041', '80', 'http', 'payments.primary', 'Bad Name'),
);

const pod: fc.Arbitrary<V1Pod> = fc
  .record({
    name: fc.option(dnsLabel, { nil: undefined }),
    generateName: fc.option(
      dnsLabel.map((n) => `${n}-`),
      { nil: undefined },
    ),
    labels: fc.dictionary(labelKeys, labelValue, { maxKeys: 4 }),
    annotations: fc.dictionary(annotationKeys, annotationValue, { maxKeys: 4 }),
    electionPort: portAnnotation,
    probePort: portAnnotation,
    optLabel: fc.option(optValue, { nil: undefined }),
    optAnnotation: fc.option(optValue, { nil: undefined }),
    owner: fc.option(
      fc.record({ kind: fc.constantFrom('ReplicaSet', 'Job', 'StatefulSet', 'DaemonSet'), name: dnsLabel }),
      { nil: undefined },
    ),
    containers: fc.uniqueArray(fc.tuple(dnsLabel, containerBody, fc.boolean()), {
      selector: ([n]) => n,
      minLength: 1,
      maxLength: 5,
    }),
    hostNetwork: fc.constantFrom(undefined, undefined, undefined, undefined, false, true),
    automount: fc.option(fc.boolean(), { nil: undefined }),
    withVolume: fc.boolean(),
    podResources: fc.constantFrom(
      undefined,
      undefined,
      { requests: { cpu: '1', memory: '1Gi' } },
      { requests: { cpu: '500m', memory: '200M' }, limits: { cpu: '2', memory: '2Gi' } },
      { limits: { memory: '1.5Gi', 'hugepages-2Mi': '2Mi' } },
    ),
    runAsUser: fc.constantFrom(undefined, undefined, 0, 1000),
  })
  .filter((p) => p.name !== undefined || p.generateName !== undefined)
  .filter((p) => p.containers.some(([, , init]) => !init))
  .map((p) => {
    const labels: Record<string, string> = { ...p.labels };
    const annotations: Record<string, string> = { ...p.annotations };
    if (p.optLabel !== undefined) labels['leaderElection'] = p.optLabel;
    if (p.optAnnotation !== undefined) annotations['leaderElection'] = p.optAnnotation;
    if (p.electionPort !== undefined) annotations['lifelease.dev/election-port'] = p.electionPort;
    if (p.probePort !== undefined) annotations['lifelease.dev/probe-port'] = p.probePort;
    const toContainer = ([name, body, init]: readonly [string, object, boolean]): V1Container => {
      const c = { name, image: 'x', ...body } as V1Container;
      if (!init) delete c.restartPolicy;
      return c;
    };
    const containers = p.containers.filter(([, , init]) => !init).map(toContainer);
    const initContainers = p.containers.filter(([, , init]) => init).map(toContainer);
    const result: V1Pod = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        ...(p.name !== undefined ? { name: p.name } : {}),
        ...(p.generateName !== undefined ? { generateName: p.generateName } : {}),
        namespace: 'prop',
        labels,
        annotations,
        ...(p.owner
          ? {
              ownerReferences: [
                { apiVersion: 'apps/v1', kind: p.owner.kind, name: p.owner.name, uid: 'u', controller: true },
              ],
            }
          : {}),
      },
      spec: {
        containers,
        ...(initContainers.length > 0 ? { initContainers } : {}),
        ...(p.hostNetwork !== undefined ? { hostNetwork: p.hostNetwork } : {}),
        ...(p.automount !== undefined ? { automountServiceAccountToken: p.automount } : {}),
        ...(p.withVolume ? { volumes: [{ name: 'kube-api-access-abcde', projected: { sources: [] } }] } : {}),
        ...(p.podResources !== undefined ? { resources: p.podResources } : {}),
        ...(p.runAsUser !== undefined ? { securityContext: { runAsUser: p.runAsUser } } : {}),
      },
    };
    // As the API server would send it: plain JSON (fast-check builds null-prototype records).
    return JSON.parse(JSON.stringify(result)) as V1Pod;
  });

function review(p: unknown, config: InjectionConfig = TEST_CONFIG) {
  const body = createReview(p);
  const parsed = parseReview(JSON.parse(JSON.stringify(body)));
  assert.ok(parsed.ok);
  return { uid: body.request.uid, result: handleAdmission(parsed.request, config) };
}

function assertValidReview(r: AdmissionReviewResponse, uid: string): void {
  assert.equal(r.apiVersion, 'admission.k8s.io/v1');
  assert.equal(r.kind, 'AdmissionReview');
  assert.equal(r.response.uid, uid);
  assert.equal(typeof r.response.allowed, 'boolean');
  if (!r.response.allowed) {
    assert.equal(typeof r.response.status?.code, 'number');
    assert.ok((r.response.status?.message ?? '').length > 0);
    assert.equal(r.response.patch, undefined);
  }
  for (const w of r.response.warnings ?? []) assert.ok(w.length <= 256, `warning too long: ${w}`);
  // Survives the wire, written by hand as JSON.stringify would.
  assert.deepEqual(JSON.parse(JSON.stringify(r)), r);
  assert.equal(encodeReview(r), JSON.stringify(r));
  // The patch (pre-serialised parts spliced in) is the operations' plain JSON.
  if (r.response.patch !== undefined) {
    const text = Buffer.from(r.response.patch, 'base64').toString('utf8');
    assert.equal(text, JSON.stringify(JSON.parse(text)));
  }
}

const isTrue = (v: string | undefined) => v?.trim().toLowerCase() === 'true';
const opted = (p: V1Pod) =>
  isTrue(p.metadata?.labels?.['leaderElection']) || isTrue(p.metadata?.annotations?.['leaderElection']);
const configs = fc.constantFrom<InjectionConfig>(TEST_CONFIG, { ...TEST_CONFIG, mode: 'container' });

describe('properties', () => {
  test('any pod: a valid AdmissionReview echoing the uid, and a patch that applies', () => {
    fc.assert(
      fc.property(pod, configs, (p, config) => {
        const { uid, result } = review(p, config);
        assertValidReview(result.review, uid);
        const ops = decodePatch(result.review);
        applyPatch(p, ops); // throws when it does not apply
      }),
      { numRuns: NUM_RUNS },
    );
  });

  test('pods that did not opt in are never modified or refused', () => {
    fc.assert(
      fc.property(
        pod.filter((p) => !opted(p)),
        configs,
        (p, config) => {
          const { result } = review(p, config);
          const invalidOptIn = result.reason === 'invalid-opt-in';
          if (!invalidOptIn)
            assert.deepEqual(result.review.response, { uid: result.review.response.uid, allowed: true });
        },
      ),
      { numRuns: NUM_RUNS },
    );
  });

  test('injection is idempotent, and keeps one elector, the env once per container, and the user env', () => {
    let injectedCount = 0;
    fc.assert(
      fc.property(pod, configs, (p, config) => {
        const { result } = review(p, config);
        if (result.outcome !== 'patched') return;
        injectedCount += 1;
        const out = applyPatch(p, decodePatch(result.review));

        const again = review(out, config).result;
        assert.equal(again.review.response.allowed, true);
        assert.deepEqual(decodePatch(again.review), [], 'second review changed the pod');

        const all = [...(out.spec?.initContainers ?? []), ...(out.spec?.containers ?? [])];
        assert.equal(all.filter((c) => c.name === 'elector').length, 1);
        for (const c of out.spec?.containers ?? []) {
          if (c.name === 'elector') continue;
          for (const n of ['ELECTOR_PATH', 'ELECTOR_GET_URL', 'ELECTOR_SSE_URL']) {
            assert.equal(c.env?.filter((e) => e.name === n).length, 1, `${c.name} ${n}`);
          }
          const before = p.spec?.containers.find((x) => x.name === c.name);
          for (const e of before?.env ?? [])
            assert.deepEqual(
              c.env?.find((x) => x.name === e.name),
              e,
            );
        }
        assert.match(
          out.metadata?.labels?.['lifelease.dev/election'] ?? '',
          /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/,
        );
      }),
      { numRuns: NUM_RUNS },
    );
    assert.ok(
      injectedCount > NUM_RUNS / 20,
      `too few injected cases (${injectedCount}): the generator is off`,
    );
  });

  test('the patch says what was added: one add for the elector, adds of env, never a rewrite of a user container', () => {
    fc.assert(
      fc.property(pod, configs, (p, config) => {
        const { result } = review(p, config);
        if (result.outcome !== 'patched') return;
        const ops = decodePatch(result.review);
        const users = [...(p.spec?.initContainers ?? []), ...(p.spec?.containers ?? [])].length;
        // label + annotation, the elector, its volume, 3 env entries per user container, and
        // pod-level requests and limits of CPU and memory: nothing else.
        const bound = 2 + 1 + 1 + 3 * users + 4;
        assert.ok(
          ops.length <= bound,
          `${ops.length} operations > ${bound}: ${JSON.stringify(ops.map((o) => `${o.op} ${o.path}`))}`,
        );
        const field = /^\/spec\/(initContainers|containers)\/(\d+)(\/.*)?$/;
        const elector = ops.filter(
          (o) => o.op === 'add' && field.exec(o.path)?.[3] === undefined && field.test(o.path),
        );
        assert.ok(elector.length <= 1, JSON.stringify(elector));
        for (const op of ops) {
          const m = field.exec(op.path);
          if (!m || m[3] === undefined) continue;
          // Inside a user container: only the env is added to, never replaced or removed.
          assert.equal(op.op, 'add', `${op.op} ${op.path}`);
          assert.match(m[3], /^\/env(\/\d+)?$/, op.path);
        }
      }),
      { numRuns: NUM_RUNS },
    );
  });

  test('arbitrary JSON as the object or the whole body never throws', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        const parsed = parseReview(v);
        if (parsed.ok) handleAdmission(parsed.request, TEST_CONFIG);
        const { uid, result } = review(v);
        assertValidReview(result.review, uid);
      }),
      { numRuns: NUM_RUNS },
    );
  });
});
