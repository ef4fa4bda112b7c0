/**
 * The elector's only Kubernetes client: the {@link ElectionStore} the election runs on,
 * for one Lease in one namespace, with exactly the permissions of common/rbac.ts (leases
 * create; get/list/watch/delete by name; pods get and watch).
 *
 * Credentials come from a {@link KubeAccess} (credentials.ts: the in-cluster service account
 * or a kubeconfig, client-node only for the rare kubeconfig that needs it). The requests are
 * plain HTTP on node:https: one request path with an AbortSignal and a deadline covers
 * everything, including the watch (client-node's `Watch` cannot be aborted before the server
 * answers, so a request to a partitioned server would hang beyond our control), and the
 * library's generated API classes stay out of the sidecar (README: its memory).
 */
import type { V1Lease, V1LeaseList, V1Pod } from '@kubernetes/client-node';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createInterface } from 'node:readline';
import {
  ApiError,
  electorContainerState,
  type ElectionStore,
  type LeaseDraft,
  type LeaseRecord,
  type PodRecord,
  type WatchEvent,
} from './election.ts';
import type { HeaderedOptions, KubeAccess } from './credentials.ts';

export interface KubeStoreOptions {
  access: KubeAccess;
  namespace: string;
  election: string;
  /** Deadline of every request, and of a watch until the server answers; default 10 s. */
  requestTimeoutMs?: number;
}

/** The parts of a Lease the election reads, from the API object (JSON). */
export function leaseRecord(lease: V1Lease): LeaseRecord {
  const meta = lease.metadata ?? {};
  const renew = lease.spec?.renewTime as unknown;
  return {
    name: meta.name ?? '',
    uid: meta.uid ?? '',
    resourceVersion: meta.resourceVersion ?? '',
    holderIdentity: lease.spec?.holderIdentity ?? undefined,
    leaseDurationSeconds: lease.spec?.leaseDurationSeconds ?? undefined,
    renewTime: renew === undefined || renew === null ? undefined : typeof renew === 'string' ? renew : 'set',
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

/** The parts of a Pod the election reads, from the API object (JSON). */
export function podRecord(pod: V1Pod): PodRecord {
  const deletion = pod.metadata?.deletionTimestamp as unknown;
  return {
    name: pod.metadata?.name ?? '',
    uid: pod.metadata?.uid ?? '',
    resourceVersion: pod.metadata?.resourceVersion ?? '',
    phase: pod.status?.phase,
    terminating: deletion !== undefined && deletion !== null,
    elector: electorContainerState([
      ...(pod.status?.initContainerStatuses ?? []),
      ...(pod.status?.containerStatuses ?? []),
    ]),
  };
}

/** MicroTime: RFC 3339 with exactly six fractional digits, as the API server requires. */
export function microTime(ms: number): string {
  return new Date(ms).toISOString().replace(/Z$/, '000Z');
}

/** The API object a campaign creates (as JSON). */
export function leaseObject(draft: LeaseDraft): Record<string, unknown> {
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
    spec: { holderIdentity: draft.holderIdentity, acquireTime: microTime(draft.acquireTimeMs) },
  };
}

interface StatusBody {
  reason?: string;
  message?: string;
  code?: number;
}

function parseStatus(body: string): StatusBody {
  try {
    const parsed = JSON.parse(body) as unknown;
    return parsed !== null && typeof parsed === 'object' ? parsed : {};
  } catch {
    return { message: body.slice(0, 200) };
  }
}

/** Maps anything a request throws to an ApiError: code 0 when there was no HTTP answer. */
export function toApiError(err: unknown, what: string): ApiError {
  if (err instanceof ApiError) return err;
  const e = err as { name?: string; message?: string; code?: string };
  if (e?.name === 'AbortError') return new ApiError(`${what}: aborted or timed out`, 0, 'Timeout');
  const detail = e?.code ? `${e.code} ${e.message ?? ''}`.trim() : (e?.message ?? String(err));
  return new ApiError(`${what}: ${detail}`, 0, '');
}

interface Exchange {
  method: 'GET' | 'POST' | 'DELETE';
  path: string;
  query?: Record<string, string>;
  body?: unknown;
  signal: AbortSignal;
  /** What the request does, for error messages. */
  what: string;
}

/** Where a request goes and with which credentials. */
async function requestOptions(
  access: KubeAccess,
  ex: Pick<Exchange, 'method' | 'path' | 'query'>,
): Promise<{ url: URL; options: HeaderedOptions }> {
  const url = new URL(`${access.server}${ex.path}`);
  for (const [k, v] of Object.entries(ex.query ?? {})) url.searchParams.set(k, v);
  const options: HeaderedOptions = { method: ex.method, headers: {} };
  await access.apply(options);
  options.headers['Accept'] = 'application/json';
  return { url, options };
}

/** One request with a JSON answer: resolves with the body on 2xx, rejects with an ApiError otherwise. */
async function exchange<T>(access: KubeAccess, ex: Exchange, timeoutMs: number): Promise<T> {
  const { url, options } = await requestOptions(access, ex);
  const payload = ex.body === undefined ? undefined : JSON.stringify(ex.body);
  if (payload !== undefined) {
    options.headers['Content-Type'] = 'application/json';
    // Node sends a DELETE body neither chunked nor sized unless told its length.
    options.headers['Content-Length'] = String(Buffer.byteLength(payload));
  }
  const signal = AbortSignal.any([ex.signal, AbortSignal.timeout(timeoutMs)]);
  return new Promise<T>((resolve, reject) => {
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const req = send(url, { ...options, signal }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('error', (err) => reject(toApiError(err, ex.what)));
      res.on('end', () => {
        const code = res.statusCode ?? 0;
        if (code >= 200 && code < 300) {
          try {
            resolve(JSON.parse(text) as T);
          } catch (err) {
            reject(toApiError(err, ex.what));
          }
          return;
        }
        const status = parseStatus(text);
        reject(
          new ApiError(
            `${ex.what}: ${code} ${status.message ?? status.reason ?? ''}`.trim(),
            code,
            status.reason ?? '',
          ),
        );
      });
    });
    req.on('error', (err) => reject(toApiError(err, ex.what)));
    req.end(payload);
  });
}

export function createKubeStore(options: KubeStoreOptions): ElectionStore {
  const { access: kc, namespace, election } = options;
  const timeoutMs = options.requestTimeoutMs ?? 10_000;
  const leases = `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(namespace)}/leases`;
  const fieldSelector = `metadata.name=${election}`;

  return {
    async list(signal) {
      const list = await exchange<V1LeaseList>(
        kc,
        { method: 'GET', path: leases, query: { fieldSelector }, signal, what: 'list leases' },
        timeoutMs,
      );
      const item = (list.items ?? []).find((l) => l.metadata?.name === election);
      return {
        lease: item ? leaseRecord(item) : null,
        resourceVersion: list.metadata?.resourceVersion ?? '',
      };
    },

    async create(draft, signal) {
      const lease = await exchange<V1Lease>(
        kc,
        { method: 'POST', path: leases, body: leaseObject(draft), signal, what: 'create lease' },
        timeoutMs,
      );
      return leaseRecord(lease);
    },

    async getPod(name, signal) {
      try {
        const pod = await exchange<V1Pod>(
          kc,
          {
            method: 'GET',
            path: `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}`,
            signal,
            what: `get pod ${name}`,
          },
          timeoutMs,
        );
        return podRecord(pod);
      } catch (err) {
        if (err instanceof ApiError && err.code === 404) return null;
        throw err;
      }
    },

    async deleteLease(preconditions, signal) {
      await exchange<unknown>(
        kc,
        {
          method: 'DELETE',
          path: `${leases}/${encodeURIComponent(election)}`,
          body: { kind: 'DeleteOptions', apiVersion: 'v1', preconditions, propagationPolicy: 'Background' },
          signal,
          what: 'delete lease',
        },
        timeoutMs,
      );
    },

    watch(request) {
      return watchOne(kc, leases, fieldSelector, request, timeoutMs, 'watch leases', (raw) =>
        watchEvent(raw, (obj) => ({ lease: leaseRecord(obj) })),
      );
    },

    watchPod(request) {
      return watchOne(
        kc,
        `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods`,
        `metadata.name=${request.name}`,
        request,
        timeoutMs,
        `watch pod ${request.name}`,
        (raw) => watchEvent(raw, (obj) => ({ pod: podRecord(obj as V1Pod) })),
      );
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

/** One watch request on one object (by name); see {@link ElectionStore.watch}. */
async function watchOne<E>(
  kc: KubeAccess,
  collection: string,
  fieldSelector: string,
  req: {
    resourceVersion: string;
    timeoutSeconds: number;
    signal: AbortSignal;
    onOpen: () => void;
    onEvent: (event: E) => void;
  },
  connectTimeoutMs: number,
  what: string,
  toEvent: (raw: RawWatchEvent) => E | undefined,
): Promise<void> {
  const { url, options } = await requestOptions(kc, {
    method: 'GET',
    path: collection,
    query: {
      watch: 'true',
      fieldSelector,
      resourceVersion: req.resourceVersion,
      allowWatchBookmarks: 'true',
      timeoutSeconds: String(req.timeoutSeconds),
    },
  });
  if (req.signal.aborted) return;

  return new Promise<void>((resolve, reject) => {
    let settled = false;
    // Until the server answers, a stuck connection is ours to end.
    const connectTimer = setTimeout(
      () => clientRequest.destroy(new ApiError(`${what}: no response in time`, 0, 'Timeout')),
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
    const clientRequest = send(url, options, (res: IncomingMessage) => {
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
              `${what}: ${res.statusCode} ${status.message ?? status.reason ?? ''}`.trim(),
              res.statusCode ?? 0,
              status.reason ?? '',
            ),
          );
        });
        res.on('error', (err) => settle(toApiError(err, what)));
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
        const event = toEvent(raw);
        if (event) req.onEvent(event);
      });
      res.on('error', (err) => settle(toApiError(err, what)));
      // readline re-emits its input's errors; they are handled on `res` above.
      lines.on('error', () => {});
      res.on('aborted', () => settle(new ApiError(`${what}: stream aborted`, 0)));
      res.on('close', () => settle(res.complete ? undefined : new ApiError(`${what}: stream cut`, 0)));
    });
    const onAbort = () => {
      clientRequest.destroy();
      settle();
    };
    req.signal.addEventListener('abort', onAbort, { once: true });
    clientRequest.on('error', (err) => settle(toApiError(err, what)));
    clientRequest.end();
  });
}

function watchEvent<T extends object>(
  raw: RawWatchEvent,
  body: (obj: V1Lease) => T,
): ({ type: 'ADDED' | 'MODIFIED' | 'DELETED' } & T) | Exclude<WatchEvent, { lease: unknown }> | undefined {
  const obj = raw.object;
  switch (raw.type) {
    case 'ADDED':
    case 'MODIFIED':
    case 'DELETED':
      return obj ? { type: raw.type, ...body(obj) } : undefined;
    case 'BOOKMARK':
      return { type: 'BOOKMARK', resourceVersion: obj?.metadata?.resourceVersion ?? '' };
    case 'ERROR':
      return { type: 'ERROR', code: obj?.code ?? 0, reason: obj?.reason ?? '', message: obj?.message ?? '' };
    default:
      return undefined;
  }
}
