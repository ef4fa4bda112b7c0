/**
 * One reading of errors from the Kubernetes API, for every controller: the HTTP status as a
 * number (`404`, `409`), whichever client threw it. @kubernetes/client-node throws an
 * `ApiException` with a numeric `code`; the elector's own client throws an `ApiError` with a
 * numeric `code`; a network failure (refused, reset, timed out) has no status at all and is
 * the kind of error retried with backoff.
 */

/** An API answer that was not a success, by HTTP status (0 when no answer came). */
export class ApiError extends Error {
  readonly code: number;
  /** Kubernetes Status reason (`AlreadyExists`, `Conflict`, `NotFound`, ...) or ''. */
  readonly reason: string;
  constructor(message: string, code: number, reason = '') {
    super(message);
    this.name = 'ApiError';
    this.code = code;
    this.reason = reason;
  }
}

/** The HTTP status of an API error, or undefined when the request got no answer. */
export function statusOf(err: unknown): number | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const code = (err as { code?: unknown }).code;
  return typeof code === 'number' && code >= 100 && code <= 599 ? code : undefined;
}

export const isNotFound = (err: unknown): boolean => statusOf(err) === 404;
export const isConflict = (err: unknown): boolean => statusOf(err) === 409;
/** 401 or 403: retrying will not help until someone changes credentials or RBAC. */
export const isForbidden = (err: unknown): boolean => {
  const s = statusOf(err);
  return s === 401 || s === 403;
};
