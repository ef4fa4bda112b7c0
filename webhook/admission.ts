/**
 * AdmissionReview in, AdmissionReview out: the pure handler behind `POST /mutate`, after
 * controller-runtime's `admission` package. Small constructors build every response
 * (`allowed`, `denied`, `errored`, `patched`); each echoes the request's `uid`, and the
 * handler never throws: whatever goes wrong inside becomes an `errored` response.
 *
 * No Kubernetes API call, no I/O, no clock: a `dryRun` request is answered like any other,
 * because answering has no side effects.
 */
import { applyPlan, decide, type InjectionConfig, type RefuseReason, type SkipReason } from './inject.ts';
import { serializePatch, type Operation } from './patch.ts';

export const ADMISSION_API_VERSION = 'admission.k8s.io/v1';
export const ADMISSION_KIND = 'AdmissionReview';

export interface GroupVersionKind {
  group: string;
  version: string;
  kind: string;
}

/** The part of `AdmissionReview.request` we read. */
export interface AdmissionRequest {
  uid: string;
  kind?: GroupVersionKind;
  resource?: { group: string; version: string; resource: string };
  subResource?: string;
  name?: string;
  namespace?: string;
  operation?: string;
  object?: unknown;
  dryRun?: boolean;
}

export interface AdmissionStatus {
  code: number;
  message: string;
  reason?: string;
}

export interface AdmissionResponse {
  uid: string;
  allowed: boolean;
  status?: AdmissionStatus;
  patchType?: 'JSONPatch';
  /** Base64 of the JSON Patch. */
  patch?: string;
  warnings?: string[];
}

export interface AdmissionReviewResponse {
  apiVersion: typeof ADMISSION_API_VERSION;
  kind: typeof ADMISSION_KIND;
  response: AdmissionResponse;
}

function review(response: AdmissionResponse): AdmissionReviewResponse {
  return { apiVersion: ADMISSION_API_VERSION, kind: ADMISSION_KIND, response };
}

function withWarnings(warnings: readonly string[] | undefined): { warnings?: string[] } {
  return warnings && warnings.length > 0 ? { warnings: [...warnings] } : {};
}

/** Allowed, unchanged. */
export function allowed(uid: string, warnings?: readonly string[]): AdmissionReviewResponse {
  return review({ uid, allowed: true, ...withWarnings(warnings) });
}

/** Refused on purpose: the message tells the user what to change. */
export function denied(uid: string, message: string): AdmissionReviewResponse {
  return review({ uid, allowed: false, status: { code: 403, reason: 'Forbidden', message } });
}

/** Could not be handled: a malformed request (4xx) or a fault of ours (500). */
export function errored(uid: string, code: number, message: string): AdmissionReviewResponse {
  return review({ uid, allowed: false, status: { code, message } });
}

/** Allowed with changes; with no operations this is `allowed` (no patch fields at all). */
export function patched(
  uid: string,
  operations: readonly Operation[],
  warnings?: readonly string[],
): AdmissionReviewResponse {
  if (operations.length === 0) return allowed(uid, warnings);
  return review({
    uid,
    allowed: true,
    patchType: 'JSONPatch',
    patch: Buffer.from(serializePatch(operations)).toString('base64'),
    ...withWarnings(warnings),
  });
}

/**
 * The response as JSON text: `JSON.stringify(review)`, the same bytes, written by hand. The
 * patch is base64 (no character JSON escapes), so the largest field is copied, not scanned.
 */
export function encodeReview(review: AdmissionReviewResponse): string {
  const r = review.response;
  let out = `{"apiVersion":${JSON.stringify(review.apiVersion)},"kind":${JSON.stringify(review.kind)},"response":{"uid":${JSON.stringify(r.uid)},"allowed":${r.allowed}`;
  if (r.status !== undefined) out += `,"status":${JSON.stringify(r.status)}`;
  if (r.patchType !== undefined) out += `,"patchType":${JSON.stringify(r.patchType)}`;
  if (r.patch !== undefined) out += `,"patch":"${r.patch}"`;
  if (r.warnings !== undefined) out += `,"warnings":${JSON.stringify(r.warnings)}`;
  return `${out}}}`;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export type ParsedReview = { ok: true; request: AdmissionRequest } | { ok: false; message: string };

/**
 * Checks that a body is an `admission.k8s.io/v1` AdmissionReview with a request and a uid.
 * Anything else is a bad request (HTTP 400): there is no uid to answer to.
 */
export function parseReview(body: unknown): ParsedReview {
  if (!isRecord(body)) return { ok: false, message: 'the body must be a JSON object (an AdmissionReview)' };
  if (body['apiVersion'] !== ADMISSION_API_VERSION || body['kind'] !== ADMISSION_KIND) {
    return {
      ok: false,
      message: `expected apiVersion "${ADMISSION_API_VERSION}" and kind "${ADMISSION_KIND}", got ${JSON.stringify(body['apiVersion'] ?? null)} and ${JSON.stringify(body['kind'] ?? null)} (set admissionReviewVersions: ["v1"])`,
    };
  }
  const request = body['request'];
  if (!isRecord(request)) return { ok: false, message: 'the AdmissionReview has no request' };
  if (typeof request['uid'] !== 'string' || request['uid'] === '') {
    return { ok: false, message: 'the AdmissionReview request has no uid' };
  }
  // The API server sends these as strings; anything else is not a review we can answer.
  for (const field of ['name', 'namespace', 'operation', 'subResource'] as const) {
    const value = request[field];
    if (value !== undefined && value !== null && typeof value !== 'string') {
      return {
        ok: false,
        message: `the AdmissionReview request's ${field} must be a string, got ${Array.isArray(value) ? 'an array' : typeof value}`,
      };
    }
  }
  return { ok: true, request: request as unknown as AdmissionRequest };
}

/** Outcome of a review, as a metrics label. */
export type Outcome = 'allowed' | 'patched' | 'denied' | 'errored';
/** Why, as a metrics label (a closed set). */
export type Reason =
  | SkipReason
  | RefuseReason
  | 'injected'
  | 'already-injected'
  | 'not-a-pod-create'
  | 'no-object'
  | 'internal-error';

export interface ReviewResult {
  review: AdmissionReviewResponse;
  outcome: Outcome;
  reason: Reason;
  /** For logs: the election, when one was chosen. */
  election?: string;
  /** For logs: what refused or errored. */
  message?: string;
}

/** A short identity of the pod for logs: its name, or its generateName with `*`. */
export function podDisplayName(request: AdmissionRequest): string {
  if (request.name) return request.name;
  const meta = isRecord(request.object) ? request.object['metadata'] : undefined;
  if (isRecord(meta) && typeof meta['name'] === 'string' && meta['name'] !== '') return meta['name'];
  if (isRecord(meta) && typeof meta['generateName'] === 'string') return `${meta['generateName']}*`;
  return '';
}

/**
 * Handles one admission request: CREATE of a Pod gets the policy and, when it says so, the
 * injection as a JSON Patch; anything else is allowed untouched.
 */
export function handleAdmission(request: AdmissionRequest, config: InjectionConfig): ReviewResult {
  const uid = request.uid;
  try {
    const kind = request.kind;
    const isPod = kind?.group === '' && kind.version === 'v1' && kind.kind === 'Pod';
    if (!isPod || request.operation !== 'CREATE' || (request.subResource ?? '') !== '') {
      return { review: allowed(uid), outcome: 'allowed', reason: 'not-a-pod-create' };
    }
    if (!isRecord(request.object)) {
      const message = 'the request has no object to review';
      return { review: errored(uid, 400, message), outcome: 'errored', reason: 'no-object', message };
    }
    const pod = request.object;
    const meta = isRecord(pod['metadata']) ? pod['metadata'] : {};
    const namespace =
      request.namespace || (typeof meta['namespace'] === 'string' ? meta['namespace'] : '') || '';

    const decision = decide(pod, namespace, config);
    switch (decision.kind) {
      case 'skip':
        return { review: allowed(uid), outcome: 'allowed', reason: decision.reason };
      case 'refuse': {
        const message = decision.message;
        if (decision.reason === 'malformed-pod') {
          return { review: errored(uid, 400, message), outcome: 'errored', reason: decision.reason, message };
        }
        return { review: denied(uid, message), outcome: 'denied', reason: decision.reason, message };
      }
      case 'inject': {
        // The patch is built from the decisions, not by diffing a mutated copy (apply.ts).
        const result = applyPlan(pod, decision.plan, config);
        const operations = result.operations;
        return {
          review: patched(uid, operations, result.warnings),
          outcome: operations.length > 0 ? 'patched' : 'allowed',
          reason: operations.length > 0 ? 'injected' : 'already-injected',
          election: decision.plan.election.name,
        };
      }
    }
  } catch (err) {
    // A defect of ours; the message goes to the user and the log, the pod is not admitted.
    const message = `internal error while reviewing the pod: ${err instanceof Error ? err.message : String(err)}`;
    return { review: errored(uid, 500, message), outcome: 'errored', reason: 'internal-error', message };
  }
}
