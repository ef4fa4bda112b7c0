/**
 * The elector's only Kubernetes client: the {@link ElectionStore} the election runs on,
 * for one Lease in one namespace, with exactly the permissions of common/rbac.ts (leases
 * create; get/list/watch/delete by name; pods get).
 *
 * Requests go through @kubernetes/client-node's generated API, each with a deadline. The
 * watch is a small raw request built from the same KubeConfig: the library's `Watch` cannot
 * be aborted before the server answers, so a request to a partitioned server would hang
 * beyond our control; here the caller's signal ends it at any moment.
 */
import {
  ApiException,
  CoordinationV1Api,
  CoreV1Api,
  KubeConfig,
  Observable,
  V1MicroTime,
  type ConfigurationOptions,
  type ObservableMiddleware,
  type V1Lease,
  type V1Pod,
} from '@kubernetes/client-node';
import { request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createInterface } from 'node:readline';
import {
  ApiError,
  type ElectionStore,
  type LeaseDraft,
  type LeaseRecord,
  type PodRecord,
  type WatchEvent,
} from './election.ts';

/** In a pod: the mounted service-account token; elsewhere: `KUBECONFIG` or ~/.kube/config. */
export function loadKubeConfig(): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromDefault();
  return kc;
}

/** The API server URL the KubeConfig points at (for logs). */
export function apiServerUrl(kc: KubeConfig): string {
  return kc.getCurrentCluster()?.server ?? '';
}

export interface KubeStoreOptions {
  kubeConfig: KubeConfig;
  namespace: string;
  election: string;
  /** Deadline of every non-watch request; default 10 s. */
  requestTimeoutMs?: number;
}

/** The parts of a Lease the election reads, from the API object. */
export function leaseRecord(lease: V1Lease): LeaseRecord {
  const meta = lease.metadata ?? {};
  const renew = lease.spec?.renewTime as unknown;
  return {
    name: meta.name ?? '',
    uid: meta.uid ?? '',
    resourceVersion: meta.resourceVersion ?? '',
    holderIdentity: lease.spec?.holderIdentity ?? undefined,
    leaseDurationSeconds: lease.spec?.leaseDurationSeconds ?? undefined,
    renewTime:
      renew === undefined || renew === null
        ? undefined
        : typeof renew === 'string'
          ? renew
          : renew instanceof Date
            ? renew.toISOString()
            : 'set',
    owners: (meta.ownerReferences ?? []).map((o) => ({
      apiVersion: o.apiVersion,
      kind: o.kind,
      name: o.name,
      uid: o.uid,
    })),
    labels: { ...(meta.labels ?? {}) },
    annotations: { ...(meta.annotations ?? {}) },
  };
}

function podRecord(pod: V1Pod): PodRecord {
  return {
    name: pod.metadata?.name ?? '',
    uid: pod.metadata?.uid ?? '',
    phase: pod.status?.phase,
    terminating: pod.metadata?.deletionTimestamp !== undefined && pod.metadata.deletionTimestamp !== null,
  };
}

/** The API object a campaign creates. */
export function leaseObject(draft: LeaseDraft): V1Lease {
  return {
    apiVersion: 'coordination.k8s.io/v1',
    kind: 'Lease',
    metadata: {
      name: draft.name,
      namespace: draft.namespace,
      labels: draft.labels,
      annotations: draft.annotations,
      ownerReferences: [draft.owner],
    },
    spec: {
      holderIdentity: draft.holderIdentity,
      // MicroTime: the API server wants six fractional digits, which V1MicroTime writes.
      acquireTime: new V1MicroTime(draft.acquireTimeMs),
    },
  };
}

interface StatusBody {
  reason?: string;
  message?: string;
  code?: number;
}

function parseStatus(body: unknown): StatusBody {
  if (typeof body === 'string') {
    try {
      return JSON.parse(body) as StatusBody;
    } catch {
      return { message: body.slice(0, 200) };
    }
  }
  return body !== null && typeof body === 'object' ? body : {};
}

/** Maps anything a request throws to an ApiError: by HTTP status, or code 0 without one. */
export function toApiError(err: unknown, what: string): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof ApiException) {
    const status = parseStatus(err.body);
    return new ApiError(
      `${what}: ${err.code} ${status.message ?? status.reason ?? 'error'}`,
      err.code,
      status.reason ?? '',
    );
  }
  const e = err as { name?: string; message?: string; code?: string; type?: string };
  if (e?.name === 'AbortError' || e?.type === 'aborted')
    return new ApiError(`${what}: aborted or timed out`, 0, 'Timeout');
  const detail = e?.code ? `${e.code} ${e.message ?? ''}`.trim() : (e?.message ?? String(err));
  return new ApiError(`${what}: ${detail}`, 0, '');
}

/** Per-request options that attach an AbortSignal (the generated client has no other way). */
function withSignal(signal: AbortSignal): ConfigurationOptions {
  const middleware: ObservableMiddleware = {
    pre: (ctx) => {
      ctx.setSignal(signal);
      return new Observable(Promise.resolve(ctx));
    },
    post: (res) => new Observable(Promise.resolve(res)),
  };
  return { middleware: [middleware], middlewareMergeStrategy: 'append' };
}

export function createKubeStore(options: KubeStoreOptions): ElectionStore {
  const { kubeConfig: kc, namespace, election } = options;
  const timeoutMs = options.requestTimeoutMs ?? 10_000;
  const leases = kc.makeApiClient(CoordinationV1Api);
  const pods = kc.makeApiClient(CoreV1Api);
  const fieldSelector = `metadata.name=${election}`;
  const deadline = (signal: AbortSignal) =>
    withSignal(AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]));

  return {
    async list(signal) {
      try {
        const list = await leases.listNamespacedLease({ namespace, fieldSelector }, deadline(signal));
        const item = list.items.find((l) => l.metadata?.name === election);
        return {
          lease: item ? leaseRecord(item) : null,
          resourceVersion: list.metadata?.resourceVersion ?? '',
        };
      } catch (err) {
        throw toApiError(err, 'list leases');
      }
    },

    async create(draft, signal) {
      try {
        return leaseRecord(
          await leases.createNamespacedLease({ namespace, body: leaseObject(draft) }, deadline(signal)),
        );
      } catch (err) {
        throw toApiError(err, 'create lease');
      }
    },

    async getPod(name, signal) {
      try {
        return podRecord(await pods.readNamespacedPod({ name, namespace }, deadline(signal)));
      } catch (err) {
        if (err instanceof ApiException && err.code === 404) return null;
        throw toApiError(err, `get pod ${name}`);
      }
    },

    async deleteLease(preconditions, signal) {
      try {
        await leases.deleteNamespacedLease(
          { name: election, namespace, body: { preconditions, propagationPolicy: 'Background' } },
          deadline(signal),
        );
      } catch (err) {
        throw toApiError(err, 'delete lease');
      }
    },

    watch(request) {
      return watchLeases(kc, namespace, fieldSelector, request, timeoutMs);
    },
  };
}

interface RawWatchEvent {
  type?: string;
  object?: {
    kind?: string;
    code?: number;
    reason?: string;
    message?: string;
    metadata?: { resourceVersion?: string };
  };
}

/** One watch request on the Lease; see {@link ElectionStore.watch}. */
async function watchLeases(
  kc: KubeConfig,
  namespace: string,
  fieldSelector: string,
  req: Parameters<ElectionStore['watch']>[0],
  connectTimeoutMs: number,
): Promise<void> {
  const server = kc.getCurrentCluster()?.server;
  if (!server) throw new ApiError('watch: the kubeconfig has no current cluster', 0);
  const url = new URL(
    `${server.replace(/\/$/, '')}/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases`,
  );
  url.searchParams.set('watch', 'true');
  url.searchParams.set('fieldSelector', fieldSelector);
  url.searchParams.set('resourceVersion', req.resourceVersion);
  url.searchParams.set('allowWatchBookmarks', 'true');
  url.searchParams.set('timeoutSeconds', String(req.timeoutSeconds));

  const opts: RequestOptions & { headers: Record<string, string> } = { method: 'GET', headers: {} };
  await kc.applyToHTTPSOptions(opts);
  opts.headers['Accept'] = 'application/json';
  if (req.signal.aborted) return;

  return new Promise<void>((resolve, reject) => {
    let settled = false;
    // Until the server answers, a stuck connection is ours to end.
    const connectTimer = setTimeout(
      () => clientRequest.destroy(new ApiError('watch leases: no response in time', 0, 'Timeout')),
      connectTimeoutMs,
    );
    const settle = (err?: ApiError) => {
      if (settled) return;
      settled = true;
      clearTimeout(connectTimer);
      req.signal.removeEventListener('abort', onAbort);
      if (err) reject(err);
      else resolve();
    };
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const clientRequest = send(url, opts, (res: IncomingMessage) => {
      clearTimeout(connectTimer);
      if (res.statusCode !== 200) {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          if (body.length < 4096) body += chunk;
        });
        res.on('end', () => {
          const status = parseStatus(body);
          settle(
            new ApiError(
              `watch leases: ${res.statusCode} ${status.message ?? status.reason ?? ''}`.trim(),
              res.statusCode ?? 0,
              status.reason ?? '',
            ),
          );
        });
        res.on('error', (err) => settle(toApiError(err, 'watch leases')));
        return;
      }
      req.onOpen();
      const lines = createInterface({ input: res, crlfDelay: Infinity });
      lines.on('line', (line) => {
        if (settled || line.trim() === '') return;
        let raw: RawWatchEvent;
        try {
          raw = JSON.parse(line) as RawWatchEvent;
        } catch {
          return; // a torn line can only come with a broken stream, which ends below
        }
        const event = watchEvent(raw);
        if (event) req.onEvent(event);
      });
      res.on('error', (err) => settle(toApiError(err, 'watch leases')));
      // readline re-emits its input's errors; they are handled on `res` above.
      lines.on('error', () => {});
      res.on('aborted', () => settle(new ApiError('watch leases: stream aborted', 0)));
      res.on('close', () => settle(res.complete ? undefined : new ApiError('watch leases: stream cut', 0)));
    });
    const onAbort = () => {
      clientRequest.destroy();
      settle();
    };
    req.signal.addEventListener('abort', onAbort, { once: true });
    clientRequest.on('error', (err) => settle(toApiError(err, 'watch leases')));
    clientRequest.end();
  });
}

function watchEvent(raw: RawWatchEvent): WatchEvent | undefined {
  const obj = raw.object;
  switch (raw.type) {
    case 'ADDED':
    case 'MODIFIED':
    case 'DELETED':
      return obj ? { type: raw.type, lease: leaseRecord(obj) } : undefined;
    case 'BOOKMARK':
      return { type: 'BOOKMARK', resourceVersion: obj?.metadata?.resourceVersion ?? '' };
    case 'ERROR':
      return { type: 'ERROR', code: obj?.code ?? 0, reason: obj?.reason ?? '', message: obj?.message ?? '' };
    default:
      return undefined;
  }
}
