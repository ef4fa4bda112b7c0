/**
 * The webhook's Prometheus metrics, in a registry of its own (no global state, so tests and
 * several servers in one process do not collide). Labels are closed sets: outcome and
 * reason come from `admission.ts`, never from user input.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

/**
 * Admission latency buckets, in seconds (the Prometheus unit) but at millisecond resolution:
 * a review takes well under a millisecond, so buckets from 0.25 ms to 1 s (Istio's smallest
 * bucket, 100 ms, says nothing about a webhook).
 */
export const LATENCY_BUCKETS = [0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1];

export interface WebhookMetrics {
  registry: Registry;
  reviews: Counter<'outcome' | 'reason'>;
  duration: Histogram<'outcome'>;
  rejectedRequests: Counter<'reason'>;
  certificateExpiry: Gauge;
  certificateReloads: Counter<'result'>;
  rbacReconciles: Counter<'result'>;
  rbacElections: Gauge;
}

export function createMetrics(options: { defaultMetrics?: boolean } = {}): WebhookMetrics {
  const registry = new Registry();
  if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry });
  return {
    registry,
    reviews: new Counter({
      name: 'lifelease_webhook_admission_reviews_total',
      help: 'AdmissionReviews answered, by outcome (allowed, patched, denied, errored) and reason.',
      labelNames: ['outcome', 'reason'],
      registers: [registry],
    }),
    duration: new Histogram({
      name: 'lifelease_webhook_admission_duration_seconds',
      help: 'Time from receiving an AdmissionReview request to sending the response (body parsing included).',
      labelNames: ['outcome'],
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    rejectedRequests: new Counter({
      name: 'lifelease_webhook_rejected_requests_total',
      help: 'Requests to /mutate refused before review: unsupported-media-type (415), too-large (413), invalid-json and invalid-review (400).',
      labelNames: ['reason'],
      registers: [registry],
    }),
    certificateExpiry: new Gauge({
      name: 'lifelease_webhook_certificate_expiry_timestamp_seconds',
      help: 'notAfter of the serving certificate in use, as a Unix time.',
      registers: [registry],
    }),
    certificateReloads: new Counter({
      name: 'lifelease_webhook_certificate_reloads_total',
      help: 'Serving certificate changes found on disk, by result (reloaded, failed).',
      labelNames: ['result'],
      registers: [registry],
    }),
    rbacReconciles: new Counter({
      name: 'lifelease_webhook_rbac_reconciles_total',
      help: "Reconciliations of an election's Role and RoleBinding, by result (applied, deleted, unchanged, error).",
      labelNames: ['result'],
      registers: [registry],
    }),
    rbacElections: new Gauge({
      name: 'lifelease_webhook_rbac_elections',
      help: 'Elections with at least one running pod, whose Role and RoleBinding the reconciler maintains.',
      registers: [registry],
    }),
  };
}
