/**
 * Self-managed TLS, the controller: keeps a CA and serving certificate in a Secret, keeps
 * the MutatingWebhookConfiguration's caBundle in step, and hands the serving pair to the
 * HTTPS server. Decisions come from `certs.ts` (`plan`, `caBundle`), the Secret's layout and
 * the issuing from `tls-secret.ts`; this file only reads, writes and retries, through a
 * {@link TlsStore} (the Kubernetes one is in kube.ts; unit tests use a strict fake) and on an
 * injected clock.
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
import type { KubeConfig, V1MutatingWebhookConfiguration, V1Secret } from '@kubernetes/client-node';
import { isConflict, isNotFound } from '../common/api-error.ts';
import { retry } from '../common/backoff.ts';
import { MAX_TIMER_MS, systemClock, type Clock } from '../common/clock.ts';
import { bundleContains, caBundle, plan, type Plan, type RotationPolicy } from './certs.ts';
import { kubeTlsStore } from './kube.ts';
import { carryOut, ownerReferencesFor, parseSecret, secretFor } from './tls-secret.ts';

export { parseSecret } from './tls-secret.ts';

/**
 * The API objects self-managed TLS reads and writes: one Secret and one
 * MutatingWebhookConfiguration, both named when the store is made. Methods reject with the
 * API's error (read by `common/api-error.ts`): 404 when absent, 409 when a write's
 * resourceVersion is stale.
 */
export interface TlsStore {
  readSecret(): Promise<V1Secret>;
  createSecret(body: V1Secret): Promise<void>;
  /** Replaces the Secret; `body.metadata.resourceVersion` is the precondition. */
  replaceSecret(body: V1Secret): Promise<void>;
  readWebhookConfiguration(): Promise<V1MutatingWebhookConfiguration>;
  /** Replaces the configuration; its resourceVersion is the precondition. */
  replaceWebhookConfiguration(body: V1MutatingWebhookConfiguration): Promise<void>;
}

export interface TlsLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface SelfManagedTlsOptions {
  /** The API objects; or `kubeConfig` to use the Kubernetes API. */
  store?: TlsStore;
  kubeConfig?: KubeConfig;
  namespace: string;
  secretName: string;
  webhookConfigurationName: string;
  policy: RotationPolicy;
  /** Upper bound between checks; a due rotation shortens it. */
  checkIntervalMs: number;
  log: TlsLogger;
  /** Called whenever the pair to serve changes (first call: before `start()` resolves). */
  onCertificate: (pair: { cert: string; key: string }) => void;
  /** Timers and, unless `now` is given, the time; default the system clock. */
  clock?: Clock;
  now?: () => Date;
}

export interface SyncResult {
  plan: Plan;
  /** True when the Secret changed under us (409) and the sync should run again. */
  conflict: boolean;
  ready: boolean;
}

/** Retries of `start()` until the first certificate is served. */
const START_BACKOFF = { initialMs: 200, maxMs: 10_000 };
/** A failed background sync is tried again after at most this. */
const RETRY_AFTER_FAILURE_MS = 5000;
/** While not ready (the caBundle may still be propagating), check at least this often. */
const RECHECK_NOT_READY_MS = 1000;
/** Syncs in a row that may meet a 409 before `syncUntilSettled` gives up for this round. */
const MAX_CONFLICTS = 5;

const b64 = (s: string) => Buffer.from(s).toString('base64');

export class SelfManagedTls {
  private readonly options: SelfManagedTlsOptions;
  private readonly store: TlsStore;
  private readonly clock: Clock;
  private readonly now: () => Date;
  private served: string | undefined;
  private readyFlag = false;
  private timer: { cancel(): void } | undefined;
  private readonly stopping = new AbortController();

  constructor(options: SelfManagedTlsOptions) {
    this.options = options;
    if (options.store) this.store = options.store;
    else if (options.kubeConfig) this.store = kubeTlsStore(options.kubeConfig, options);
    else throw new Error('SelfManagedTls needs a store or a kubeConfig');
    this.clock = options.clock ?? systemClock;
    const clock = this.clock;
    this.now = options.now ?? (() => new Date(clock.now()));
  }

  /** True once the caBundle trusts the certificate this replica serves. */
  get ready(): boolean {
    return this.readyFlag;
  }

  /**
   * Syncs until a certificate is served (retrying API errors with backoff), then keeps
   * syncing in the background until `stop()`. Rejects when `signal` aborts or `stop()` is
   * called first.
   */
  async start(signal?: AbortSignal): Promise<void> {
    const abort = signal ? AbortSignal.any([signal, this.stopping.signal]) : this.stopping.signal;
    try {
      await retry(
        async () => {
          await this.syncUntilSettled();
          if (this.served === undefined) throw new Error('the Secret kept changing under us');
        },
        {
          policy: START_BACKOFF,
          clock: this.clock,
          signal: abort,
          onRetry: (err, retryInMs) =>
            this.options.log.warn({ err, retryInMs }, 'self-managed TLS: sync failed, retrying'),
        },
      );
    } catch (err) {
      if (abort.aborted) throw new Error('stopped before a certificate was available', { cause: err });
      throw err;
    }
    this.schedule(this.options.checkIntervalMs);
  }

  /** Stops the background checks (and a `start()` still waiting); leaves no timer behind. */
  stop(): void {
    this.stopping.abort();
    this.timer?.cancel();
    this.timer = undefined;
  }

  private schedule(ms: number): void {
    if (this.stopping.signal.aborted) return;
    this.timer?.cancel();
    // Node fires a timer longer than 2^31-1 ms (24.8 days) after 1 ms: look earlier instead
    // (a check that finds nothing due schedules the next one).
    this.timer = this.clock.setTimer(Math.min(ms, MAX_TIMER_MS), () => {
      this.timer = undefined;
      this.syncUntilSettled().then(
        (r) => this.schedule(this.nextCheckIn(r)),
        (err: unknown) => {
          this.options.log.warn({ err }, 'self-managed TLS: sync failed, retrying');
          this.schedule(Math.min(this.options.checkIntervalMs, RETRY_AFTER_FAILURE_MS));
        },
      );
    });
  }

  /** When to look again after a sync: at the plan's next due time, sooner while not ready. */
  private nextCheckIn(r: SyncResult): number {
    const interval = r.ready
      ? this.options.checkIntervalMs
      : Math.min(this.options.checkIntervalMs, RECHECK_NOT_READY_MS);
    const next = r.plan.action === 'none' ? r.plan.nextCheckAt.getTime() - this.now().getTime() : 0;
    return Math.max(100, Math.min(interval, next > 0 ? next : interval));
  }

  /** Runs `sync` again while it reports a write conflict (bounded). */
  async syncUntilSettled(): Promise<SyncResult> {
    for (let i = 0; ; i++) {
      const r = await this.sync();
      if (!r.conflict || i >= MAX_CONFLICTS) return r;
    }
  }

  /** One pass: read, plan, write (with preconditions), update the caBundle, serve. */
  async sync(): Promise<SyncResult> {
    const { namespace, secretName: name, policy, log } = this.options;
    // 1. Read what is stored, and the configuration that owns it (absent: no owner yet).
    let secret: V1Secret | undefined;
    try {
      secret = await this.store.readSecret();
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    const config = await this.readConfig();
    const uid = config?.metadata?.uid;
    const owner = uid ? { name: this.options.webhookConfigurationName, uid } : undefined;
    let stored = parseSecret(secret);
    const now = this.now();
    const p = plan(stored, policy, now);

    // 2. Carry out the plan, if any, and write it back from the version we read; or give a
    //    Secret that lacks its owner (made before the configuration existed, or by an older
    //    version) the owner reference alone.
    const { ownerReferences, adds } = ownerReferencesFor(secret, owner);
    const adopt = p.action === 'none' && secret !== undefined && adds;
    if (p.action !== 'none' || adopt) {
      const next = p.action === 'none' ? stored : await carryOut(p, stored, policy, now);
      if (!next) throw new Error('no certificates to write');
      const resourceVersion = secret?.metadata?.resourceVersion;
      const body = secretFor(next, { name, namespace, resourceVersion, ownerReferences });
      try {
        if (secret) await this.store.replaceSecret(body);
        else await this.store.createSecret(body);
      } catch (err) {
        // 409 on replace (stale resourceVersion) or on create (AlreadyExists): another
        // replica wrote first; the next pass reads what it wrote.
        if (isConflict(err)) {
          log.info({ action: p.action }, 'self-managed TLS: another replica changed the certificates first');
          return { plan: p, conflict: true, ready: this.readyFlag };
        }
        throw err;
      }
      if (p.action === 'none')
        log.info({ owner: owner!.name }, 'self-managed TLS: Secret owned by the configuration');
      else log.info({ action: p.action, reason: p.reason }, 'self-managed TLS: certificates updated');
      stored = next;
    }
    if (!stored) throw new Error('no certificates after sync');

    // 3. The caBundle, then the serving pair: the bundle must trust a CA before we serve from it.
    const bundleOk = await this.syncCaBundle(caBundle(stored, now), stored.ca.certPem, config);
    if (this.served !== stored.serving.certPem) {
      this.options.onCertificate({ cert: stored.serving.certPem, key: stored.serving.keyPem });
      this.served = stored.serving.certPem;
    }
    this.readyFlag = bundleOk;
    return { plan: p, conflict: false, ready: bundleOk };
  }

  /** The MutatingWebhookConfiguration; undefined when it does not exist. */
  private async readConfig(): Promise<V1MutatingWebhookConfiguration | undefined> {
    try {
      return await this.store.readWebhookConfiguration();
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /**
   * Sets every webhook's caBundle to `bundle`; true when all of them trust `servingCa`.
   * `read` is the configuration as this pass read it; a conflict reads it again.
   */
  private async syncCaBundle(
    bundle: string,
    servingCa: string,
    read: V1MutatingWebhookConfiguration | undefined,
  ): Promise<boolean> {
    const name = this.options.webhookConfigurationName;
    for (let attempt = 0; attempt < MAX_CONFLICTS; attempt++) {
      const config = attempt === 0 ? read : await this.readConfig();
      if (!config) {
        this.options.log.warn(
          { name },
          'self-managed TLS: MutatingWebhookConfiguration not found; not ready',
        );
        return false;
      }
      const webhooks = config.webhooks ?? [];
      const want = b64(bundle);
      if (webhooks.every((w) => w.clientConfig.caBundle === want)) return bundleContains(bundle, servingCa);
      for (const w of webhooks) w.clientConfig.caBundle = want;
      try {
        await this.store.replaceWebhookConfiguration(config);
        this.options.log.info({ name, webhooks: webhooks.length }, 'self-managed TLS: caBundle updated');
        return bundleContains(bundle, servingCa);
      } catch (err) {
        if (!isConflict(err)) throw err;
      }
    }
    return false;
  }
}
