/**
 * Self-managed TLS against a strict in-memory API (test/support/webhook-fakes.ts) and a
 * fake clock: the 409 races between replicas, the two-phase CA rotation, the caBundle's own
 * conflicts, and the timers (backoff at start, the next check, nothing left after stop).
 * The same story runs against the real API server in test/integration/webhook.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { describe, test } from 'node:test';
import { ApiError } from '../../../common/api-error.ts';
import type { RotationPolicy } from '../../../webhook/certs.ts';
import { parseSecret, SelfManagedTls } from '../../../webhook/self-managed-tls.ts';
import { FakeClock, flush, until } from '../../support/clock.ts';
import { FakeTlsApi } from '../../support/webhook-fakes.ts';

const DAY = 86_400_000;
const policy: RotationPolicy = {
  caValidityMs: 3650 * DAY,
  servingValidityMs: 365 * DAY,
  renewFraction: 1 / 3,
  caPropagationMs: 5 * 60_000,
  dnsNames: ['lifelease-webhook.ns.svc'],
};
const quiet = { info() {}, warn() {}, error() {} };
const certs = (pem: string) => pem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
const issuedBy = (leaf: string, ca: string) => new X509Certificate(leaf).checkIssued(new X509Certificate(ca));

function replicas(api: FakeTlsApi, clock: FakeClock, n = 2, checkIntervalMs = 3_600_000) {
  const served: string[][] = Array.from({ length: n }, () => []);
  const tls = served.map(
    (log, i) =>
      new SelfManagedTls({
        store: api.store(`r${i}`),
        namespace: 'ns',
        secretName: 'lifelease-webhook-tls',
        webhookConfigurationName: 'lifelease-webhook',
        policy,
        checkIntervalMs,
        log: quiet,
        onCertificate: (pair) => log.push(pair.cert),
        clock,
      }),
  );
  return { tls, served };
}

const stored = (api: FakeTlsApi) => {
  const s = parseSecret(api.secret);
  assert.ok(s, 'the Secret holds certificates');
  return s;
};

describe('self-managed TLS against a strict fake API', () => {
  test('two replicas create at once: one Secret (the loser gets 409 AlreadyExists and serves the winner’s)', async () => {
    const api = new FakeTlsApi();
    const clock = new FakeClock();
    const { tls, served } = replicas(api, clock);
    // r1 runs a whole sync between r0's read (nothing there) and r0's create.
    api.before('createSecret', async () => void (await tls[1]!.sync()));
    const r0 = await tls[0]!.sync();
    assert.equal(r0.conflict, true, 'r0 lost the race');
    assert.equal(api.attempts('createSecret'), 2, 'both tried to create');
    assert.equal(api.count('createSecret'), 1, 'exactly one create landed');
    const again = await tls[0]!.syncUntilSettled();
    assert.equal(again.plan.action, 'none', 'after re-reading there is nothing left to do');
    assert.equal(served[0]!.at(-1), served[1]!.at(-1), 'both serve the one certificate');
    assert.ok(tls.every((t) => t.ready));
    assert.deepEqual(certs(api.bundle), certs(stored(api).ca.certPem));
    api.assertNoSurprises();
  });

  test('both due at once: exactly one renewal lands (409 on the stale resourceVersion), no double rotation', async () => {
    const api = new FakeTlsApi();
    const clock = new FakeClock();
    const { tls, served } = replicas(api, clock);
    await tls[0]!.syncUntilSettled();
    await tls[1]!.syncUntilSettled();
    const first = stored(api);
    const bundleBefore = api.bundle;
    const writesBefore = api.count('replaceWebhookConfiguration');

    await clock.advance(250 * DAY);
    api.before('replaceSecret', async () => void (await tls[1]!.sync()));
    const results = [await tls[0]!.syncUntilSettled()];
    results.push(await tls[1]!.syncUntilSettled());
    assert.equal(api.attempts('replaceSecret'), 2, 'both tried to renew');
    assert.equal(api.count('replaceSecret'), 1, 'one renewal written');
    assert.deepEqual(
      results.map((r) => r.plan.action),
      ['none', 'none'],
      'r0 finds the renewal done after its 409; r1 has nothing left',
    );
    const renewed = stored(api);
    assert.equal(renewed.ca.certPem, first.ca.certPem, 'same CA');
    assert.notEqual(renewed.serving.certPem, first.serving.certPem);
    assert.equal(served[0]!.at(-1), renewed.serving.certPem);
    assert.equal(served[1]!.at(-1), renewed.serving.certPem);
    assert.equal(api.bundle, bundleBefore, 'a serving renewal does not touch the caBundle');
    assert.equal(api.count('replaceWebhookConfiguration'), writesBefore);
    api.assertNoSurprises();
  });

  test('CA rotation in two phases: the bundle trusts what every replica serves at every step', async () => {
    const api = new FakeTlsApi();
    const clock = new FakeClock();
    const { tls, served } = replicas(api, clock);
    await tls[0]!.syncUntilSettled();
    await tls[1]!.syncUntilSettled();
    const oldCa = stored(api).ca.certPem;
    /** Every replica's current certificate is issued by a CA in the bundle. */
    const trusted = () => {
      const bundle = certs(api.bundle);
      for (const s of served)
        assert.ok(
          bundle.some((ca) => issuedBy(s.at(-1)!, ca)),
          'served cert is trusted',
        );
    };

    // Near the CA's end (less than a third left): phase 1 stages a new CA. The serving
    // certificate has expired too; the next pass renews it, still from the old CA.
    await clock.advance(2500 * DAY);
    const stage = await tls[0]!.syncUntilSettled();
    assert.equal(stage.plan.action, 'stage-ca');
    const staged = stored(api);
    assert.ok(staged.next, 'a next CA is staged');
    assert.equal(staged.ca.certPem, oldCa, 'phase 1 keeps the old CA current');
    assert.deepEqual(certs(api.bundle), [...certs(oldCa), ...certs(staged.next.certPem)], 'old + staged');
    trusted();
    assert.equal((await tls[1]!.syncUntilSettled()).plan.action, 'renew-serving');
    assert.ok(issuedBy(served[1]!.at(-1)!, oldCa), 'phase 1 serves from the old CA');
    await tls[0]!.syncUntilSettled();
    assert.equal(served[0]!.at(-1), served[1]!.at(-1));
    trusted();

    // Before the propagation delay is over, nobody promotes.
    await clock.advance(policy.caPropagationMs - 1);
    assert.equal((await tls[1]!.syncUntilSettled()).plan.action, 'none');
    assert.equal(stored(api).ca.certPem, oldCa);

    // Phase 2: both replicas find it due at once; one promotes, the other gets 409.
    await clock.advance(1);
    api.before('replaceSecret', async () => void (await tls[0]!.sync()));
    const loser = await tls[1]!.sync();
    assert.equal(loser.plan.action, 'promote-ca');
    assert.equal(loser.conflict, true);
    trusted(); // r1 still serves the old CA's certificate: the bundle keeps it as `previous`
    await tls[1]!.syncUntilSettled();
    const promoted = stored(api);
    assert.equal(promoted.ca.certPem, staged.next.certPem, 'the staged CA is current');
    assert.equal(promoted.previous?.certPem, oldCa);
    assert.equal(promoted.next, undefined);
    assert.ok(issuedBy(served[0]!.at(-1)!, staged.next.certPem), 'served from the new CA');
    assert.equal(served[0]!.at(-1), served[1]!.at(-1));
    assert.deepEqual(certs(api.bundle), [...certs(staged.next.certPem), ...certs(oldCa)], 'new + previous');
    trusted();
    assert.ok(tls.every((t) => t.ready));
    assert.equal(api.count('replaceSecret'), 3, 'stage, renew, promote: one write each');
    api.assertNoSurprises();
  });

  test('a caBundle write that meets 409 is redone from a fresh read, keeping the other writer’s change', async () => {
    const api = new FakeTlsApi();
    const clock = new FakeClock();
    const { tls } = replicas(api, clock, 1);
    api.before('replaceWebhookConfiguration', () => Promise.resolve(api.touchConfig()));
    const r = await tls[0]!.syncUntilSettled();
    assert.equal(r.ready, true);
    assert.equal(api.attempts('replaceWebhookConfiguration'), 2, 'the 409 was followed by one more write');
    assert.equal(api.count('replaceWebhookConfiguration'), 1);
    assert.equal(api.config?.metadata?.labels?.['touched'], 'yes');
    assert.deepEqual(certs(api.bundle), certs(stored(api).ca.certPem));
    api.assertNoSurprises();
  });

  test('no MutatingWebhookConfiguration: serving but not ready, re-checked every second until it appears', async () => {
    const api = new FakeTlsApi();
    const saved = api.config;
    api.config = undefined;
    const clock = new FakeClock();
    const { tls, served } = replicas(api, clock, 1, 60_000);
    await tls[0]!.start();
    assert.equal(served[0]!.length, 1, 'a certificate is served');
    assert.equal(tls[0]!.ready, false);
    assert.deepEqual(clock.pendingDelays, [60_000], 'first background check at the interval');
    await clock.advance(60_000);
    assert.deepEqual(clock.pendingDelays, [1000], 'not ready: look again in a second');
    api.config = saved;
    await clock.advance(1000);
    assert.equal(tls[0]!.ready, true);
    assert.deepEqual(clock.pendingDelays, [60_000]);
    tls[0]!.stop();
    assert.equal(clock.pendingTimers, 0, 'stop leaves no timer');
    api.assertNoSurprises();
  });

  test('start retries API errors with growing delays on the clock; stop() ends a waiting start', async () => {
    const api = new FakeTlsApi();
    const clock = new FakeClock();
    const { tls } = replicas(api, clock, 1);
    api.fail('readSecret', new Error('connect ECONNREFUSED')).fail('readSecret', new ApiError('etcd', 503));
    const started = tls[0]!.start();
    await flush();
    assert.deepEqual(clock.pendingDelays, [200]);
    await clock.advance(200);
    assert.deepEqual(clock.pendingDelays, [400], 'the delay doubles');
    await clock.advance(400);
    await started;
    assert.equal(tls[0]!.ready, true);
    tls[0]!.stop();
    assert.equal(clock.pendingTimers, 0);

    const api2 = new FakeTlsApi();
    const { tls: tls2 } = replicas(api2, clock, 1);
    for (let i = 0; i < 3; i++) api2.fail('readSecret', new Error('connect ECONNREFUSED'));
    const waiting = tls2[0]!.start();
    const outcome = assert.rejects(waiting, /stopped before a certificate was available/);
    await flush();
    assert.equal(clock.pendingTimers, 1);
    tls2[0]!.stop();
    await outcome;
    assert.equal(clock.pendingTimers, 0, 'the backoff timer was cancelled');
  });

  test('the background check runs when the plan says, not only at the interval', async () => {
    const api = new FakeTlsApi();
    const clock = new FakeClock();
    const { tls } = replicas(api, clock, 1, 100 * DAY);
    await tls[0]!.start();
    // Checks at 100 and 200 days find nothing due; the serving certificate is due at two
    // thirds of 365 days (~243 days), before the third interval ends: the check comes then.
    await clock.advance(243 * DAY);
    assert.equal(api.count('replaceSecret'), 0);
    await clock.advance(1 * DAY);
    await until(() => api.count('replaceSecret') === 1, 'renewed at the due time, not at 300 days');
    tls[0]!.stop();
    assert.equal(clock.pendingTimers, 0);
    api.assertNoSurprises();
  });

  describe('the Secret is owned by the MutatingWebhookConfiguration (deleted with it)', () => {
    const refs = (api: FakeTlsApi) =>
      (api.secret?.metadata?.ownerReferences ?? []).map(
        (r) => `${r.apiVersion} ${r.kind} ${r.name} ${r.uid}`,
      );
    const OWNER = 'admissionregistration.k8s.io/v1 MutatingWebhookConfiguration lifelease-webhook';

    test('made with the owner reference when the configuration exists', async () => {
      const api = new FakeTlsApi();
      api.config!.metadata!.uid = 'uid-1';
      const { tls } = replicas(api, new FakeClock(), 1);
      await tls[0]!.syncUntilSettled();
      assert.deepEqual(refs(api), [`${OWNER} uid-1`]);
      assert.equal(api.count('createSecret'), 1);
      assert.equal(api.count('replaceSecret'), 0, 'one write');
      api.assertNoSurprises();
    });

    test('made before the configuration existed: adopted once it appears, certificates unchanged', async () => {
      const api = new FakeTlsApi();
      const saved = api.config;
      api.config = undefined;
      const { tls } = replicas(api, new FakeClock(), 1);
      await tls[0]!.syncUntilSettled();
      assert.deepEqual(refs(api), [], 'no owner to name');
      const data = api.secret?.data;
      api.config = saved;
      api.config!.metadata!.uid = 'uid-1';
      const r = await tls[0]!.syncUntilSettled();
      assert.equal(r.plan.action, 'none');
      assert.deepEqual(refs(api), [`${OWNER} uid-1`]);
      assert.deepEqual(api.secret?.data, data, 'the same certificates');
      assert.equal(tls[0]!.ready, true);
      // Nothing more to do on the next pass.
      await tls[0]!.syncUntilSettled();
      assert.equal(api.count('replaceSecret'), 1);
      api.assertNoSurprises();
    });

    test('a recreated configuration (new uid) replaces the reference; other owners are kept', async () => {
      const api = new FakeTlsApi();
      api.config!.metadata!.uid = 'uid-1';
      const { tls } = replicas(api, new FakeClock(), 1);
      await tls[0]!.syncUntilSettled();
      api.secret!.metadata!.ownerReferences!.push({
        apiVersion: 'v1',
        kind: 'ConfigMap',
        name: 'keep',
        uid: 'cm',
      });
      api.config!.metadata!.uid = 'uid-2';
      await tls[0]!.syncUntilSettled();
      assert.deepEqual(refs(api), ['v1 ConfigMap keep cm', `${OWNER} uid-2`]);
      api.assertNoSurprises();
    });

    test('two replicas adopt at once: one write lands, the other meets 409 and finds it done', async () => {
      const api = new FakeTlsApi();
      const saved = api.config;
      api.config = undefined;
      const { tls } = replicas(api, new FakeClock());
      await tls[0]!.syncUntilSettled();
      api.config = saved;
      api.config!.metadata!.uid = 'uid-1';
      api.before('replaceSecret', async () => void (await tls[1]!.sync()));
      const r = await tls[0]!.syncUntilSettled();
      assert.equal(api.attempts('replaceSecret'), 2);
      assert.equal(api.count('replaceSecret'), 1);
      assert.equal(r.conflict, false);
      assert.deepEqual(refs(api), [`${OWNER} uid-1`]);
      api.assertNoSurprises();
    });
  });
});
