/**
 * Strict fakes for the webhook's controllers: an in-memory API for self-managed TLS (one
 * Secret, one MutatingWebhookConfiguration, shared by several replicas like a real API
 * server) and a scripted RBAC store with a pod source driven by the test. Both record every
 * call; both fail the test on a call the controller should never make (an unconditional
 * replace, an operation nobody expected).
 */
import type {
  V1EndpointSlice,
  V1MutatingWebhookConfiguration,
  V1NetworkPolicy,
  V1Pod,
  V1Role,
  V1RoleBinding,
  V1Secret,
} from '@kubernetes/client-node';
import assert from 'node:assert/strict';
import { ApiError } from '../../common/api-error.ts';
import type { PodSource, RbacStore } from '../../webhook/rbac-reconciler.ts';
import type { TlsStore } from '../../webhook/self-managed-tls.ts';

const clone = <T>(v: T): T => structuredClone(v);

type TlsOp = keyof TlsStore;

/**
 * The API server as self-managed TLS sees it. Writes check the resourceVersion precondition
 * (409 when stale) and creates check existence (409 AlreadyExists), as the real one does.
 * `before(op, fn)` runs `fn` once just before the next `op` takes effect: the way a test
 * lets another replica win a race. `fail(op, err)` makes the next `op` reject.
 */
export class FakeTlsApi {
  secret: V1Secret | undefined;
  config: V1MutatingWebhookConfiguration | undefined;
  /** Every call, as it was made. */
  readonly calls: { replica: string; op: TlsOp }[] = [];
  /** Writes that took effect. */
  readonly landed: { replica: string; op: TlsOp }[] = [];
  readonly unexpected: string[] = [];
  #rv = 100;
  #before: { op: TlsOp; fn: () => Promise<void> }[] = [];
  #fail: { op: TlsOp; err: Error }[] = [];

  constructor(webhooks = ['a.test.lifelease.dev', 'b.test.lifelease.dev']) {
    this.config = {
      metadata: { name: 'lifelease-webhook', resourceVersion: String(this.#rv++) },
      webhooks: webhooks.map((name) => ({
        name,
        admissionReviewVersions: ['v1'],
        sideEffects: 'None',
        clientConfig: { url: 'https://127.0.0.1:1/mutate' },
      })),
    };
  }

  before(op: TlsOp, fn: () => Promise<void>): this {
    this.#before.push({ op, fn });
    return this;
  }

  fail(op: TlsOp, err: Error): this {
    this.#fail.push({ op, err });
    return this;
  }

  /** The caBundle of every webhook (asserting they agree), decoded. */
  get bundle(): string {
    const bundles = new Set((this.config?.webhooks ?? []).map((w) => w.clientConfig.caBundle ?? ''));
    assert.equal(bundles.size, 1, 'every webhook gets the same caBundle');
    return Buffer.from([...bundles][0]!, 'base64').toString();
  }

  /** Writes of `op` that took effect. */
  count(op: TlsOp): number {
    return this.landed.filter((c) => c.op === op).length;
  }

  /** Calls of `op`, whether or not they succeeded. */
  attempts(op: TlsOp): number {
    return this.calls.filter((c) => c.op === op).length;
  }

  assertNoSurprises(): void {
    assert.deepEqual(this.unexpected, [], 'unexpected calls');
  }

  async #enter(replica: string, op: TlsOp): Promise<void> {
    const hook = this.#before.findIndex((h) => h.op === op);
    if (hook >= 0) {
      const [h] = this.#before.splice(hook, 1);
      await h!.fn();
    }
    const failure = this.#fail.findIndex((f) => f.op === op);
    if (failure >= 0) {
      const [f] = this.#fail.splice(failure, 1);
      throw f!.err;
    }
    this.calls.push({ replica, op });
  }

  /** The store one replica uses. */
  store(replica: string): TlsStore {
    return {
      readSecret: async () => {
        await this.#enter(replica, 'readSecret');
        if (!this.secret) throw new ApiError('secrets "lifelease-webhook-tls" not found', 404, 'NotFound');
        return clone(this.secret);
      },
      createSecret: async (body) => {
        await this.#enter(replica, 'createSecret');
        if (body.metadata?.resourceVersion) this.unexpected.push(`${replica}: create with a resourceVersion`);
        if (this.secret)
          throw new ApiError('secrets "lifelease-webhook-tls" already exists', 409, 'AlreadyExists');
        this.secret = { ...clone(body), metadata: { ...body.metadata, resourceVersion: String(this.#rv++) } };
        this.landed.push({ replica, op: 'createSecret' });
      },
      replaceSecret: async (body) => {
        await this.#enter(replica, 'replaceSecret');
        const rv = body.metadata?.resourceVersion;
        if (!rv) this.unexpected.push(`${replica}: replaceSecret without a resourceVersion precondition`);
        if (!this.secret) throw new ApiError('not found', 404, 'NotFound');
        if (rv !== this.secret.metadata?.resourceVersion)
          throw new ApiError('the object has been modified', 409, 'Conflict');
        this.secret = { ...clone(body), metadata: { ...body.metadata, resourceVersion: String(this.#rv++) } };
        this.landed.push({ replica, op: 'replaceSecret' });
      },
      readWebhookConfiguration: async () => {
        await this.#enter(replica, 'readWebhookConfiguration');
        if (!this.config) throw new ApiError('not found', 404, 'NotFound');
        return clone(this.config);
      },
      replaceWebhookConfiguration: async (body) => {
        await this.#enter(replica, 'replaceWebhookConfiguration');
        const rv = body.metadata?.resourceVersion;
        if (!rv) this.unexpected.push(`${replica}: replaceWebhookConfiguration without a resourceVersion`);
        if (!this.config) throw new ApiError('not found', 404, 'NotFound');
        if (rv !== this.config.metadata?.resourceVersion)
          throw new ApiError('the object has been modified', 409, 'Conflict');
        this.config = { ...clone(body), metadata: { ...body.metadata, resourceVersion: String(this.#rv++) } };
        this.landed.push({ replica, op: 'replaceWebhookConfiguration' });
      },
    };
  }

  /** Someone else edits the configuration (bumping its resourceVersion). */
  touchConfig(): void {
    assert.ok(this.config);
    this.config = {
      ...this.config,
      metadata: { ...this.config.metadata, resourceVersion: String(this.#rv++), labels: { touched: 'yes' } },
    };
  }
}

type Answer<T> = T | Promise<T>;
type RbacHandlers = {
  [K in keyof RbacStore]: (...args: Parameters<RbacStore[K]>) => Answer<Awaited<ReturnType<RbacStore[K]>>>;
};
type RbacOp = keyof RbacStore;
type AnyHandler = (...args: unknown[]) => unknown;

/**
 * An RBAC store that answers only what the test expects: `expect(op, handler)` queues a
 * one-shot answer, `allow(op, handler)` a standing one. Any other call is recorded in
 * `unexpected` (checked by `assertNoSurprises`) and rejected.
 */
export class FakeRbacStore implements RbacStore {
  readonly calls: { op: RbacOp; args: unknown[] }[] = [];
  readonly unexpected: string[] = [];
  #once = new Map<RbacOp, AnyHandler[]>();
  #always = new Map<RbacOp, AnyHandler>();

  expect<K extends RbacOp>(op: K, handler: RbacHandlers[K]): this {
    const queue = this.#once.get(op) ?? [];
    queue.push(handler as AnyHandler);
    this.#once.set(op, queue);
    return this;
  }

  allow<K extends RbacOp>(op: K, handler: RbacHandlers[K]): this {
    this.#always.set(op, handler as AnyHandler);
    return this;
  }

  /** The arguments of each call of `op`, in order. */
  callsOf(op: RbacOp): unknown[][] {
    return this.calls.filter((c) => c.op === op).map((c) => c.args);
  }

  /** Names of the operations called, in order. */
  get ops(): RbacOp[] {
    return this.calls.map((c) => c.op);
  }

  assertNoSurprises(): void {
    assert.deepEqual(this.unexpected, [], 'unexpected calls');
    const left = [...this.#once].filter(([, q]) => q.length > 0).map(([op]) => op);
    assert.deepEqual(left, [], 'expected calls that never came');
  }

  async #call(op: RbacOp, args: unknown[]): Promise<never> {
    this.calls.push({ op, args });
    const handler = this.#once.get(op)?.shift() ?? this.#always.get(op);
    if (!handler) {
      this.unexpected.push(`${op}(${JSON.stringify(args).slice(0, 200)})`);
      throw new Error(`unexpected ${op}`);
    }
    return (await handler(...args)) as never;
  }

  applyRole = (role: V1Role): Promise<void> => this.#call('applyRole', [role]);
  applyRoleBinding = (binding: V1RoleBinding): Promise<void> => this.#call('applyRoleBinding', [binding]);
  applyNetworkPolicy = (policy: V1NetworkPolicy): Promise<void> => this.#call('applyNetworkPolicy', [policy]);
  deleteRoleBinding = (namespace: string, name: string): Promise<void> =>
    this.#call('deleteRoleBinding', [namespace, name]);
  deleteRole = (namespace: string, name: string): Promise<void> =>
    this.#call('deleteRole', [namespace, name]);
  deleteNetworkPolicy = (namespace: string, name: string): Promise<void> =>
    this.#call('deleteNetworkPolicy', [namespace, name]);
  listRoles = (namespace: string | undefined, labelSelector: string): Promise<V1Role[]> =>
    this.#call('listRoles', [namespace, labelSelector]);
  listNetworkPolicies = (namespace: string | undefined, labelSelector?: string): Promise<V1NetworkPolicy[]> =>
    this.#call('listNetworkPolicies', [namespace, labelSelector]);
  readApiServerEndpointSlice = (): Promise<V1EndpointSlice> => this.#call('readApiServerEndpointSlice', []);
}

/** The pod informer, driven by the test: `add`/`update`/`remove` change the cache and notify. */
export class FakePods implements PodSource {
  readonly #pods = new Map<string, V1Pod>();
  #onChange: ((pod: V1Pod, kind: 'add' | 'update' | 'delete') => void) | undefined;
  #onError: ((err: unknown) => void) | undefined;
  started = 0;
  stopped = 0;
  /** What the next `start()` does; default: succeed. */
  startWith: (() => Promise<void>) | undefined;

  list(namespace?: string): readonly V1Pod[] {
    return [...this.#pods.values()].filter(
      (p) => namespace === undefined || p.metadata?.namespace === namespace,
    );
  }

  onChange(fn: (pod: V1Pod, kind: 'add' | 'update' | 'delete') => void): void {
    assert.equal(this.#onChange, undefined, 'one change handler');
    this.#onChange = fn;
  }

  onError(fn: (err: unknown) => void): void {
    this.#onError = fn;
  }

  async start(): Promise<void> {
    this.started += 1;
    const next = this.startWith;
    this.startWith = undefined;
    await next?.();
  }

  stop(): Promise<void> {
    this.stopped += 1;
    return Promise.resolve();
  }

  /** Puts pods in the cache without events (what a list finds). */
  seed(...pods: V1Pod[]): this {
    for (const p of pods) this.#pods.set(key(p), p);
    return this;
  }

  add(pod: V1Pod): void {
    this.#pods.set(key(pod), pod);
    this.#onChange?.(pod, 'add');
  }

  update(pod: V1Pod): void {
    this.#pods.set(key(pod), pod);
    this.#onChange?.(pod, 'update');
  }

  remove(pod: V1Pod): void {
    this.#pods.delete(key(pod));
    this.#onChange?.(pod, 'delete');
  }

  /** The watch fails (as the informer reports it). */
  error(err: unknown): void {
    this.#onError?.(err);
  }
}

const key = (p: V1Pod) => `${p.metadata?.namespace ?? ''}/${p.metadata?.name ?? ''}`;
