/**
 * The election's view of the Kubernetes API: the data it works on (the adapter, kube.ts,
 * translates API objects into these), the {@link ElectionStore} it calls, the {@link Clock}
 * it waits on, and {@link ApiError}, the one shape every failure of the API takes. No logic.
 */

// ---------------------------------------------------------------------------------------
// Data the core works on (the adapter translates API objects into these).

/** Who this elector is and which election it takes part in. */
import { ApiError } from '../common/api-error.ts';

export interface Identity {
  election: string;
  namespace: string;
  podName: string;
  podUid: string;
  hostname: string;
}

export interface OwnerRef {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
}

/** The parts of a Lease the election reads. */
export interface LeaseRecord {
  name: string;
  uid: string;
  resourceVersion: string;
  holderIdentity: string | undefined;
  leaseDurationSeconds: number | undefined;
  renewTime: string | undefined;
  owners: OwnerRef[];
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

/** The parts of a Pod the election reads. */
export interface PodRecord {
  name: string;
  uid: string;
  resourceVersion: string;
  phase: string | undefined;
  /** metadata.deletionTimestamp is set: the pod is shutting down. */
  terminating: boolean;
  /**
   * The elector container's state as the kubelet last reported it (a native sidecar's
   * init container status, or a classic container's); undefined when not reported.
   */
  elector: 'running' | 'waiting' | 'terminated' | undefined;
}

/** The Lease a campaign creates, as plain data (the adapter builds the API object). */
export interface LeaseDraft {
  name: string;
  namespace: string;
  holderIdentity: string;
  acquireTimeMs: number;
  owner: OwnerRef;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

export type WatchEvent =
  | { type: 'ADDED' | 'MODIFIED' | 'DELETED'; lease: LeaseRecord }
  | { type: 'BOOKMARK'; resourceVersion: string }
  | { type: 'ERROR'; code: number; reason: string; message: string };

export type PodWatchEvent =
  | { type: 'ADDED' | 'MODIFIED' | 'DELETED'; pod: PodRecord }
  | { type: 'BOOKMARK'; resourceVersion: string }
  | { type: 'ERROR'; code: number; reason: string; message: string };

export type Operation = 'list' | 'watch' | 'create' | 'get-pod' | 'watch-pod' | 'delete';

/** An error from the API, by HTTP status; `code` 0 means no response (network, timeout). */
export { ApiError };

/** Any thrown value as an ApiError (code 0 when it did not come from the API). */
export function asApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  return new ApiError(err instanceof Error ? err.message : String(err), 0);
}

/**
 * The Kubernetes API as the election needs it, for one Lease in one namespace. Every method
 * rejects with an {@link ApiError}. Implemented by kube.ts; faked in unit tests.
 */
export interface ElectionStore {
  /** LIST with `fieldSelector=metadata.name=<election>`: the Lease or null, and the list's resourceVersion. */
  list(signal: AbortSignal): Promise<{ lease: LeaseRecord | null; resourceVersion: string }>;
  /**
   * WATCH the Lease from `resourceVersion`. Calls `onOpen` once the server accepted the
   * watch, `onEvent` per event; resolves when the stream ends, rejects when it fails.
   */
  watch(request: {
    resourceVersion: string;
    timeoutSeconds: number;
    signal: AbortSignal;
    onOpen: () => void;
    onEvent: (event: WatchEvent) => void;
  }): Promise<void>;
  /** CREATE the Lease; rejects with code 409 when it already exists. */
  create(draft: LeaseDraft, signal: AbortSignal): Promise<LeaseRecord>;
  /** GET a Pod in the election's namespace; null when it does not exist (404). */
  getPod(name: string, signal: AbortSignal): Promise<PodRecord | null>;
  /**
   * WATCH one Pod (`fieldSelector=metadata.name=<name>`) from `resourceVersion`: the leader's,
   * so that its last state before deletion (did the kubelet stop its elector?) is known.
   */
  watchPod(request: {
    name: string;
    resourceVersion: string;
    timeoutSeconds: number;
    signal: AbortSignal;
    onOpen: () => void;
    onEvent: (event: PodWatchEvent) => void;
  }): Promise<void>;
  /** DELETE the Lease only if it still has this UID and resourceVersion (409 otherwise). */
  deleteLease(preconditions: { uid: string; resourceVersion: string }, signal: AbortSignal): Promise<void>;
}

/** Time, injected so tests can drive it. */
export interface Clock {
  now(): number;
  /** Calls `fn` once after `ms`, unless cancelled. */
  setTimer(ms: number, fn: () => void): { cancel(): void };
}
