/**
 * Self-managed TLS against the real API server: replicas racing for one Secret, serving
 * renewal without a caBundle change, and the two-phase CA rotation, driven by a shared
 * injected clock so that years pass in milliseconds.
 */
import { AdmissionregistrationV1Api, CoreV1Api, type V1Secret } from '@kubernetes/client-node';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { RotationPolicy } from '../../../webhook/certs.ts';
import { isNotFound } from '../../../common/api-error.ts';
import { SelfManagedTls } from '../../../webhook/self-managed-tls.ts';
import { sharedCluster, type TestCluster } from '@lifelease/harness/shared';
import { eventually } from '@lifelease/harness/wait';

const DAY = 86_400_000;
const quiet = { info() {}, warn() {}, error() {} };

let cluster: TestCluster;
before(async () => {
  cluster = await sharedCluster();
});
after(() => cluster.release());

describe('self-managed TLS', () => {
  test('replicas share one Secret; renewal and CA rotation keep the caBundle trusting what is served', async () => {
    const ns = await cluster.createNamespace('tls');
    const mwcName = `lifelease-tls-test-${ns}`;
    const admission = cluster.kubeConfig.makeApiClient(AdmissionregistrationV1Api);
    const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    const hook = (name: string) => ({
      name,
      admissionReviewVersions: ['v1'],
      sideEffects: 'None',
      clientConfig: { url: 'https://127.0.0.1:1/mutate' },
      // Matches nothing: this configuration only carries a caBundle for the test.
      objectSelector: { matchLabels: { 'never-matches': ns } },
      rules: [{ operations: ['CREATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['pods'] }],
    });
    await admission.createMutatingWebhookConfiguration({
      body: {
        metadata: { name: mwcName },
        webhooks: [hook('a.test.lifelease.dev'), hook('b.test.lifelease.dev')],
      },
    });
    try {
      let clock = new Date('2030-01-01T00:00:00Z');
      const policy: RotationPolicy = {
        caValidityMs: 3650 * DAY,
        servingValidityMs: 365 * DAY,
        renewFraction: 1 / 3,
        caPropagationMs: 5 * 60_000,
        dnsNames: [`lifelease-webhook.${ns}.svc`],
      };
      const served: string[][] = [[], []];
      const replicas = [0, 1].map(
        (i) =>
          new SelfManagedTls({
            kubeConfig: cluster.kubeConfig,
            namespace: ns,
            secretName: 'lifelease-webhook-tls',
            webhookConfigurationName: mwcName,
            policy,
            checkIntervalMs: 3_600_000, // syncs below are driven by hand
            log: quiet,
            onCertificate: (pair) => served[i]!.push(pair.cert),
            now: () => clock,
          }),
      );
      const secret = () => core.readNamespacedSecret({ name: 'lifelease-webhook-tls', namespace: ns });
      const bundle = async () => {
        const cfg = await admission.readMutatingWebhookConfiguration({ name: mwcName });
        const bundles = new Set(cfg.webhooks!.map((w) => w.clientConfig.caBundle));
        assert.equal(bundles.size, 1, 'every webhook gets the same caBundle');
        return Buffer.from([...bundles][0]!, 'base64').toString();
      };
      const caOf = (s: V1Secret) => Buffer.from(s.data!['ca.crt']!, 'base64').toString();
      const certs = (pem: string) =>
        pem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];

      // 1. Both replicas start at once: one Secret, one certificate, served by both.
      await Promise.all(replicas.map((r) => r.start()));
      replicas.forEach((r) => r.stop());
      const s1 = await secret();
      assert.equal(served[0]!.at(-1), served[1]!.at(-1), 'both replicas serve the same certificate');
      assert.deepEqual(certs(await bundle()), certs(caOf(s1)));
      assert.ok(replicas.every((r) => r.ready));
      const leaf = new X509Certificate(served[0]!.at(-1)!);
      assert.ok(leaf.checkIssued(new X509Certificate(caOf(s1))));
      assert.match(leaf.subjectAltName ?? '', new RegExp(`DNS:lifelease-webhook\\.${ns}\\.svc`));

      // 2. Eight months on, both find the serving certificate due at the same moment:
      //    exactly one renewal lands; the caBundle does not change.
      clock = new Date(clock.getTime() + 250 * DAY);
      const results = await Promise.all(replicas.map((r) => r.syncUntilSettled()));
      const s2 = await secret();
      assert.equal(Number(s2.metadata!.resourceVersion) > Number(s1.metadata!.resourceVersion), true);
      assert.deepEqual(
        results.map((r) => r.plan.action).sort(),
        ['none', 'renew-serving'],
        'one replica renews, the other finds it done (no double rotation)',
      );
      assert.equal(caOf(s2), caOf(s1), 'same CA');
      assert.notEqual(served[0]!.at(-1), leaf.toString());
      assert.equal(served[0]!.at(-1), served[1]!.at(-1));

      // 3. Near the CA's end: phase 1 stages a new CA into the bundle, serving unchanged.
      clock = new Date(new Date('2030-01-01T00:00:00Z').getTime() + 2500 * DAY);
      const servingBefore = served[0]!.at(-1);
      await replicas[0]!.syncUntilSettled(); // renews serving (due again) or stages; run until staged
      await replicas[0]!.syncUntilSettled();
      const staged = await secret();
      assert.ok(staged.data!['next-ca.crt'], 'a next CA is staged');
      const stagedBundle = certs(await bundle());
      assert.equal(stagedBundle.length, 2, 'old and staged CA are both trusted');
      assert.ok(served[0]!.length >= 3 && servingBefore !== undefined);
      const servingInPhase1 = new X509Certificate(served[0]!.at(-1)!);
      assert.ok(
        servingInPhase1.checkIssued(new X509Certificate(caOf(staged))),
        'still served from the old CA',
      );

      // 4. After the propagation delay, phase 2 promotes it and serves from the new CA; the
      //    old CA stays trusted (replicas may still serve its certificate until they sync).
      clock = new Date(clock.getTime() + 6 * 60_000);
      await replicas[1]!.syncUntilSettled();
      await replicas[0]!.syncUntilSettled();
      const promoted = await secret();
      const newCa = Buffer.from(staged.data!['next-ca.crt'], 'base64').toString();
      assert.equal(caOf(promoted).trim(), newCa.trim());
      assert.ok(new X509Certificate(served[0]!.at(-1)!).checkIssued(new X509Certificate(newCa)));
      assert.equal(served[0]!.at(-1), served[1]!.at(-1));
      const finalBundle = certs(await bundle());
      assert.equal(finalBundle.length, 2);
      assert.ok(finalBundle.includes(certs(newCa)[0]!) && finalBundle.includes(certs(caOf(s1))[0]!));
      assert.ok(replicas.every((r) => r.ready));

      // 5. The Secret is owned by the configuration: every write kept the reference, and
      //    deleting the configuration (an uninstall) has the garbage collector delete it.
      const mwc = await admission.readMutatingWebhookConfiguration({ name: mwcName });
      assert.deepEqual(
        promoted.metadata?.ownerReferences?.map((r) => [r.apiVersion, r.kind, r.name, r.uid]),
        [['admissionregistration.k8s.io/v1', 'MutatingWebhookConfiguration', mwcName, mwc.metadata!.uid]],
      );
      await admission.deleteMutatingWebhookConfiguration({ name: mwcName });
      await eventually(
        'the garbage collector to delete the Secret',
        async () => {
          try {
            await secret();
            return false;
          } catch (err) {
            if (isNotFound(err)) return true;
            throw err;
          }
        },
        60_000,
      );
    } finally {
      await admission.deleteMutatingWebhookConfiguration({ name: mwcName }).catch((err: unknown) => {
        if (!isNotFound(err)) throw err;
      });
    }
  });
});
