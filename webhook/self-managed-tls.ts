/**
 * Self-managed TLS, the adapter: keeps a CA and serving certificate in a Secret, keeps the
 * MutatingWebhookConfiguration's caBundle in step, and hands the serving pair to the HTTPS
 * server. Decisions come from `certs.ts`; this file only reads, writes and retries.
 *
 * Several replicas run this at once. Every write to the Secret carries the resourceVersion
 * it was computed from, so when two replicas decide to rotate at the same moment exactly one
 * write lands; the other gets 409, re-reads, finds the fresh certificates and has nothing
 * left to do (no double rotation). The caBundle is computed deterministically from the
 * Secret, so replicas that both patch it write the same bytes.
 *
 * Ready means the caBundle of every webhook in the configuration contains the CA that
 * signed the certificate this replica serves: before that, the API server would refuse us.
 */
import {
  AdmissionregistrationV1Api,
  CoreV1Api,
  type KubeConfig,
  type V1MutatingWebhookConfiguration,
  type V1Secret,
} from '@kubernetes/client-node';
import { X509Certificate } from 'node:crypto';
import { createCertificateAuthority, loadCertificateAuthority, type KeyPairPem } from '../common/pki.ts';
import { DOMAIN } from '../common/constants.ts';
import {
  bundleContains,
  caBundle,
  plan,
  type Plan,
  type RotationPolicy,
  type StoredCertificates,
} from './certs.ts';

const KEY = {
  cert: 'tls.crt',
  key: 'tls.key',
  caCert: 'ca.crt',
  caKey: 'ca.key',
  nextCaCert: 'next-ca.crt',
  nextCaKey: 'next-ca.key',
  previousCaCert: 'previous-ca.crt',
} as const;
const ANNOTATION_NEXT_STAGED_AT = `${DOMAIN}/next-ca-staged-at`;

export interface TlsLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface SelfManagedTlsOptions {
  kubeConfig: KubeConfig;
  namespace: string;
  secretName: string;
  webhookConfigurationName: string;
  policy: RotationPolicy;
  /** Upper bound between checks; a due rotation shortens it. */
  checkIntervalMs: number;
  log: TlsLogger;
  /** Called whenever the pair to serve changes (first call: before `start()` resolves). */
  onCertificate: (pair: { cert: string; key: string }) => void;
  now?: () => Date;
}

export interface SyncResult {
  plan: Plan;
  /** True when the Secret changed under us (409) and the sync should run again. */
  conflict: boolean;
  ready: boolean;
}

const status = (err: unknown): number | undefined => (err as { code?: number }).code;
const b64 = (s: string) => Buffer.from(s).toString('base64');
const unb64 = (s: string | undefined) =>
  s === undefined ? undefined : Buffer.from(s, 'base64').toString('utf8');

/** Parses the Secret; undefined when anything essential is missing or unreadable. */
export function parseSecret(secret: V1Secret | undefined): StoredCertificates | undefined {
  const d = secret?.data ?? {};
  const [certPem, keyPem, caPem, caKeyPem] = [d[KEY.cert], d[KEY.key], d[KEY.caCert], d[KEY.caKey]].map(
    unb64,
  );
  if (!certPem || !keyPem || !caPem || !caKeyPem) return undefined;
  try {
    const ca = new X509Certificate(caPem);
    const serving = new X509Certificate(certPem);
    const dnsNames = (serving.subjectAltName ?? '')
      .split(', ')
      .filter((n) => n.startsWith('DNS:'))
      .map((n) => n.slice(4));
    const stored: StoredCertificates = {
      ca: {
        certPem: caPem,
        keyPem: caKeyPem,
        notBefore: new Date(ca.validFrom),
        notAfter: new Date(ca.validTo),
      },
      serving: {
        certPem,
        keyPem,
        notBefore: new Date(serving.validFrom),
        notAfter: new Date(serving.validTo),
        dnsNames,
        issuedByCa: serving.checkIssued(ca) && serving.verify(ca.publicKey),
      },
    };
    const nextPem = unb64(d[KEY.nextCaCert]);
    const nextKey = unb64(d[KEY.nextCaKey]);
    const stagedAt = secret?.metadata?.annotations?.[ANNOTATION_NEXT_STAGED_AT];
    if (nextPem && nextKey && stagedAt && !Number.isNaN(Date.parse(stagedAt))) {
      stored.next = {
        certPem: nextPem,
        keyPem: nextKey,
        stagedAt: new Date(stagedAt),
        notAfter: new Date(new X509Certificate(nextPem).validTo),
      };
    }
    const previousPem = unb64(d[KEY.previousCaCert]);
    if (previousPem)
      stored.previous = {
        certPem: previousPem,
        notAfter: new Date(new X509Certificate(previousPem).validTo),
      };
    return stored;
  } catch {
    return undefined;
  }
}

function toSecretData(s: StoredCertificates): {
  data: Record<string, string>;
  annotations: Record<string, string>;
} {
  const data: Record<string, string> = {
    [KEY.cert]: b64(s.serving.certPem),
    [KEY.key]: b64(s.serving.keyPem),
    [KEY.caCert]: b64(s.ca.certPem),
    [KEY.caKey]: b64(s.ca.keyPem),
  };
  const annotations: Record<string, string> = {};
  if (s.next) {
    data[KEY.nextCaCert] = b64(s.next.certPem);
    data[KEY.nextCaKey] = b64(s.next.keyPem);
    annotations[ANNOTATION_NEXT_STAGED_AT] = s.next.stagedAt.toISOString();
  }
  if (s.previous) data[KEY.previousCaCert] = b64(s.previous.certPem);
  return { data, annotations };
}

export class SelfManagedTls {
  private readonly options: SelfManagedTlsOptions;
  private readonly core: CoreV1Api;
  private readonly admission: AdmissionregistrationV1Api;
  private readonly now: () => Date;
  private served: string | undefined;
  private readyFlag = false;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(options: SelfManagedTlsOptions) {
    this.options = options;
    this.core = options.kubeConfig.makeApiClient(CoreV1Api);
    this.admission = options.kubeConfig.makeApiClient(AdmissionregistrationV1Api);
    this.now = options.now ?? (() => new Date());
  }

  /** True once the caBundle trusts the certificate this replica serves. */
  get ready(): boolean {
    return this.readyFlag;
  }

  /**
   * Syncs until a certificate is served (retrying API errors with backoff), then keeps
   * syncing in the background until `stop()`.
   */
  async start(signal?: AbortSignal): Promise<void> {
    let delay = 200;
    while (this.served === undefined) {
      if (signal?.aborted || this.stopped) throw new Error('stopped before a certificate was available');
      try {
        await this.syncUntilSettled();
      } catch (err) {
        this.options.log.warn({ err }, 'self-managed TLS: sync failed, retrying');
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 10_000);
      }
    }
    this.schedule(this.options.checkIntervalMs);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.syncUntilSettled().then(
        (r) => {
          const next = r.plan.action === 'none' ? r.plan.nextCheckAt.getTime() - this.now().getTime() : 0;
          // Re-check soon while not ready (the caBundle may still be propagating).
          const interval = r.ready
            ? this.options.checkIntervalMs
            : Math.min(this.options.checkIntervalMs, 1000);
          this.schedule(Math.max(100, Math.min(interval, next > 0 ? next : interval)));
        },
        (err: unknown) => {
          this.options.log.warn({ err }, 'self-managed TLS: sync failed, retrying');
          this.schedule(Math.min(this.options.checkIntervalMs, 5000));
        },
      );
    }, ms);
    this.timer.unref();
  }

  /** Runs `sync` again while it reports a write conflict (bounded). */
  async syncUntilSettled(): Promise<SyncResult> {
    for (let i = 0; ; i++) {
      const r = await this.sync();
      if (!r.conflict || i >= 5) return r;
    }
  }

  /** One pass: read, plan, write (with preconditions), update the caBundle, serve. */
  async sync(): Promise<SyncResult> {
    const { namespace, secretName: name, policy, log } = this.options;
    // 1. Read what is stored.
    let secret: V1Secret | undefined;
    try {
      secret = await this.core.readNamespacedSecret({ name, namespace });
    } catch (err) {
      if (status(err) !== 404) throw err;
    }
    let stored = parseSecret(secret);
    const now = this.now();
    const p = plan(stored, policy, now);

    // 2. Carry out the plan, if any, and write it back from the version we read.
    if (p.action !== 'none') {
      const next = await this.execute(p, stored, now);
      const { data, annotations } = toSecretData(next);
      const body: V1Secret = {
        metadata: {
          name,
          namespace,
          labels: { 'app.kubernetes.io/managed-by': 'lifelease' },
          annotations,
          ...(secret?.metadata?.resourceVersion ? { resourceVersion: secret.metadata.resourceVersion } : {}),
        },
        type: 'kubernetes.io/tls',
        data,
      };
      try {
        if (secret) await this.core.replaceNamespacedSecret({ name, namespace, body });
        else await this.core.createNamespacedSecret({ namespace, body });
      } catch (err) {
        if (status(err) === 409) {
          log.info({ action: p.action }, 'self-managed TLS: another replica changed the certificates first');
          return { plan: p, conflict: true, ready: this.readyFlag };
        }
        throw err;
      }
      log.info({ action: p.action, reason: p.reason }, 'self-managed TLS: certificates updated');
      stored = next;
    }
    if (!stored) throw new Error('no certificates after sync');

    // 3. The caBundle, then the serving pair: the bundle must trust a CA before we serve from it.
    const bundleOk = await this.syncCaBundle(caBundle(stored, now), stored.ca.certPem);
    if (this.served !== stored.serving.certPem) {
      this.options.onCertificate({ cert: stored.serving.certPem, key: stored.serving.keyPem });
      this.served = stored.serving.certPem;
    }
    this.readyFlag = bundleOk;
    return { plan: p, conflict: false, ready: bundleOk };
  }

  private async execute(
    p: Exclude<Plan, { action: 'none' }>,
    stored: StoredCertificates | undefined,
    now: Date,
  ) {
    const { policy } = this.options;
    const issueServing = async (caCert: string, caKey: string): Promise<KeyPairPem> => {
      const ca = await loadCertificateAuthority(caCert, caKey, policy.servingValidityMs);
      return ca.issue({
        commonName: policy.dnsNames[0] ?? 'webhook',
        altNames: policy.dnsNames,
        usage: 'server',
        now,
      });
    };
    const newCa = () =>
      createCertificateAuthority(`lifelease webhook CA ${now.toISOString()}`, {
        validityMs: policy.caValidityMs,
        now,
      });
    const serving = (pair: KeyPairPem) => ({
      certPem: pair.certPem,
      keyPem: pair.keyPem,
      notBefore: pair.notBefore,
      notAfter: pair.notAfter,
      dnsNames: policy.dnsNames,
      issuedByCa: true,
    });

    if (p.action === 'create' || !stored) {
      const ca = await newCa();
      return {
        ca: { certPem: ca.certPem, keyPem: ca.keyPem, notBefore: ca.notBefore, notAfter: ca.notAfter },
        serving: serving(await issueServing(ca.certPem, ca.keyPem)),
      } satisfies StoredCertificates;
    }
    if (p.action === 'renew-serving') {
      return { ...stored, serving: serving(await issueServing(stored.ca.certPem, stored.ca.keyPem)) };
    }
    if (p.action === 'stage-ca') {
      const ca = await newCa();
      return {
        ...stored,
        next: { certPem: ca.certPem, keyPem: ca.keyPem, stagedAt: now, notAfter: ca.notAfter },
      };
    }
    // promote-ca
    const next = stored.next!;
    const promoted: StoredCertificates = {
      ca: {
        certPem: next.certPem,
        keyPem: next.keyPem,
        notBefore: new Date(new X509Certificate(next.certPem).validFrom),
        notAfter: next.notAfter,
      },
      serving: serving(await issueServing(next.certPem, next.keyPem)),
      previous: { certPem: stored.ca.certPem, notAfter: stored.ca.notAfter },
    };
    return promoted;
  }

  /** Sets every webhook's caBundle to `bundle`; true when all of them trust `servingCa`. */
  private async syncCaBundle(bundle: string, servingCa: string): Promise<boolean> {
    const name = this.options.webhookConfigurationName;
    for (let attempt = 0; attempt < 5; attempt++) {
      let config: V1MutatingWebhookConfiguration;
      try {
        config = await this.admission.readMutatingWebhookConfiguration({ name });
      } catch (err) {
        if (status(err) === 404) {
          this.options.log.warn(
            { name },
            'self-managed TLS: MutatingWebhookConfiguration not found; not ready',
          );
          return false;
        }
        throw err;
      }
      const webhooks = config.webhooks ?? [];
      const want = b64(bundle);
      if (webhooks.every((w) => w.clientConfig.caBundle === want)) return bundleContains(bundle, servingCa);
      for (const w of webhooks) w.clientConfig.caBundle = want;
      try {
        await this.admission.replaceMutatingWebhookConfiguration({ name, body: config });
        this.options.log.info({ name, webhooks: webhooks.length }, 'self-managed TLS: caBundle updated');
        return bundleContains(bundle, servingCa);
      } catch (err) {
        if (status(err) !== 409) throw err;
      }
    }
    return false;
  }
}
