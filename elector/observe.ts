/**
 * What the elector reports about itself: Prometheus metrics (./prometheus.ts) and log lines
 * (common/logger.ts), both derived from the election's {@link Note}s. The election never logs or
 * counts on its own; this adapter is the one place that decides levels, messages and names.
 */
import type { Logger } from '../common/logger.ts';
import { Counter, Gauge, Registry, registerProcessMetrics } from './prometheus.ts';
import type { ElectionStore, Note } from './election.ts';

export interface ElectorMetrics {
  registry: Registry;
  isLeader: Gauge;
  state: Gauge<'state'>;
  leaderTransitions: Counter;
  campaigns: Counter<'result'>;
  electionsWon: Counter;
  electionsLost: Counter;
  reclaims: Counter<'reason' | 'result'>;
  watchRestarts: Counter<'reason'>;
  apiErrors: Counter<'operation' | 'code'>;
  apiRequests: Counter<'operation'>;
  sseDropped: Counter;
  sseRejected: Counter;
}

export interface MetricSources {
  /** Seconds since the API server last confirmed the Lease; undefined before the first time. */
  confirmationAgeSeconds: () => number | undefined;
  /** Open SSE streams. */
  sseClients: () => number;
  /**
   * Labels on every series, e.g. `{ election }`, so that alerts can group the pods of one
   * election ("no pod of election X leads") without guessing it from pod names.
   */
  labels?: Record<string, string>;
}

/** How often the event-loop lag metric samples the loop, in ms. */
export const EVENT_LOOP_SAMPLE_MS = 1000;

/** A fresh registry with the elector's metrics and Node's process metrics. */
export function createMetrics(sources: MetricSources): ElectorMetrics {
  const registry = new Registry();
  if (sources.labels) registry.setDefaultLabels(sources.labels);
  // prom-client samples event-loop lag with a 10 ms timer by default: 100 wakeups a second,
  // half a percent of a core in every idle pod (bench/README.md). Once a second still shows
  // a blocked loop, for 1% of the wakeups.
  registerProcessMetrics(registry, { eventLoopSampleMs: EVENT_LOOP_SAMPLE_MS });
  const add = <M extends Counter<string> | Gauge<string>>(m: M): M => registry.register(m);
  const states = ['leader', 'follower', 'unknown'] as const;
  const metrics: ElectorMetrics = {
    registry,
    isLeader: add(
      new Gauge({
        name: 'elector_is_leader',
        help: '1 while this pod is the leader, else 0.',
      }),
    ),
    state: add(
      new Gauge({
        name: 'elector_state',
        help: 'The reported state: 1 for the current one of leader, follower, unknown.',
        labelNames: ['state'],
      }),
    ),
    leaderTransitions: add(
      new Counter({
        name: 'elector_leader_transitions_total',
        help: 'Times the reported leader changed to another pod.',
      }),
    ),
    campaigns: add(
      new Counter({
        name: 'elector_campaigns_total',
        help: 'Campaigns (Lease CREATE attempts) by result: won, lost, error, skipped.',
        labelNames: ['result'],
      }),
    ),
    electionsWon: add(
      new Counter({
        name: 'elector_elections_won',
        help: "Campaigns won (NAIS elector's name).",
      }),
    ),
    electionsLost: add(
      new Counter({
        name: 'elector_elections_lost',
        help: "Campaigns lost (NAIS elector's name).",
      }),
    ),
    reclaims: add(
      new Counter({
        name: 'elector_reclaims_total',
        help: 'Leases of gone, replaced or finished pods deleted (or attempted), by reason and result.',
        labelNames: ['reason', 'result'],
      }),
    ),
    watchRestarts: add(
      new Counter({
        name: 'elector_watch_restarts_total',
        help: 'Watch restarts by reason: closed (normal timeout), expired (relist), stalled, error.',
        labelNames: ['reason'],
      }),
    ),
    apiErrors: add(
      new Counter({
        name: 'elector_api_errors_total',
        help: 'Failed Kubernetes API requests by operation and HTTP status (0 = no response).',
        labelNames: ['operation', 'code'],
      }),
    ),
    apiRequests: add(
      new Counter({
        name: 'elector_api_requests_total',
        help: 'Kubernetes API requests made, by operation (list, watch, create, get-pod, watch-pod, delete).',
        labelNames: ['operation'],
      }),
    ),
    sseDropped: add(
      new Counter({
        name: 'elector_sse_dropped_total',
        help: 'SSE clients disconnected because they did not read their stream.',
      }),
    ),
    sseRejected: add(
      new Counter({
        name: 'elector_sse_rejected_total',
        help: 'SSE connections refused (503) because --sse-max-clients streams were open.',
      }),
    ),
  };
  const confirmationAge: Gauge = add(
    new Gauge({
      name: 'elector_confirmation_age_seconds',
      help: 'Seconds since the API server last confirmed the Lease (-1 before the first time).',
      collect: () => confirmationAge.set(sources.confirmationAgeSeconds() ?? -1),
    }),
  );
  const sseClients: Gauge = add(
    new Gauge({
      name: 'elector_sse_clients',
      help: 'Open SSE streams.',
      collect: () => sseClients.set(sources.sseClients()),
    }),
  );
  metrics.isLeader.set(0);
  for (const s of states) metrics.state.set({ state: s }, s === 'unknown' ? 1 : 0);
  for (const r of ['won', 'lost', 'error', 'skipped']) metrics.campaigns.inc({ result: r }, 0);
  for (const op of ['list', 'watch', 'create', 'get-pod', 'watch-pod', 'delete'])
    metrics.apiRequests.inc({ operation: op }, 0);
  return metrics;
}

/** The store, counting every request it is asked to make (for the request-rate figures). */
export function countingStore(store: ElectionStore, counter: Counter<'operation'>): ElectionStore {
  return {
    list: (signal) => (counter.inc({ operation: 'list' }), store.list(signal)),
    watch: (request) => (counter.inc({ operation: 'watch' }), store.watch(request)),
    create: (draft, signal) => (counter.inc({ operation: 'create' }), store.create(draft, signal)),
    getPod: (name, signal) => (counter.inc({ operation: 'get-pod' }), store.getPod(name, signal)),
    watchPod: (request) => (counter.inc({ operation: 'watch-pod' }), store.watchPod(request)),
    deleteLease: (pre, signal) => (counter.inc({ operation: 'delete' }), store.deleteLease(pre, signal)),
  };
}

/** Counts a note in the metrics. */
export function recordNote(m: ElectorMetrics, note: Note): void {
  switch (note.type) {
    case 'campaign':
      m.campaigns.inc({ result: note.result });
      if (note.result === 'won') m.electionsWon.inc();
      if (note.result === 'lost') m.electionsLost.inc();
      return;
    case 'reclaim':
      m.reclaims.inc({ reason: note.reason, result: note.result });
      return;
    case 'watch-restart':
      m.watchRestarts.inc({ reason: note.reason });
      return;
    case 'api-error':
      m.apiErrors.inc({ operation: note.operation, code: String(note.error.code) });
      return;
    case 'verdict': {
      const { verdict, previous } = note;
      m.isLeader.set(verdict.state === 'leader' ? 1 : 0);
      for (const s of ['leader', 'follower', 'unknown'] as const)
        m.state.set({ state: s }, s === verdict.state ? 1 : 0);
      if (verdict.name !== '' && (verdict.name !== previous.name || verdict.uid !== previous.uid)) {
        m.leaderTransitions.inc();
      }
      return;
    }
    default:
      return;
  }
}

/** Writes a note to the log, at the level it deserves. */
export function logNote(log: Logger, note: Note): void {
  switch (note.type) {
    case 'listed':
      log.debug({ lease: note.lease?.uid ?? null }, 'lease listed');
      return;
    case 'lease-changed': {
      const { lease, holder } = note;
      if (lease === null || holder === undefined) {
        log.info('no lease: campaigning');
      } else if (holder.kind === 'foreign') {
        log.error(
          { lease: lease.uid, holderIdentity: lease.holderIdentity ?? null, reason: holder.reason },
          'the lease of this election is not an election lease: state unknown until it is removed; another program uses this name, so choose another election name or delete that Lease',
        );
      } else {
        log.info(
          {
            lease: lease.uid,
            holder: holder.name,
            holderPod: holder.kind === 'held' ? null : holder.podName,
            holderUid: holder.kind === 'held' ? null : (holder.podUid ?? null),
            kind: holder.kind === 'pod' ? holder.format : holder.kind,
          },
          'lease observed',
        );
      }
      return;
    }
    case 'watch-restart':
      if (note.reason === 'closed') log.debug('watch ended, resuming');
      else if (note.reason === 'expired') log.info('watch expired, listing again');
      else log.warn({ reason: note.reason }, 'watch restarted');
      return;
    case 'api-error': {
      const { operation, error, retryInMs } = note;
      const fields = {
        operation,
        code: error.code,
        reason: error.reason,
        retryInMs: retryInMs ?? null,
        err: error.message,
      };
      if (error.code === 401 || error.code === 403) {
        log.error(
          fields,
          'api request refused: check the elector service account and its Role (common/rbac.ts)',
        );
      } else {
        log.warn(fields, 'api request failed, retrying');
      }
      return;
    }
    case 'campaign':
      if (note.result === 'error') log.warn({ detail: note.detail }, 'campaign failed, retrying');
      else log.info({ result: note.result, detail: note.detail }, `campaign ${note.result}`);
      return;
    case 'reclaim':
      if (note.result === 'error')
        log.warn({ reason: note.reason, detail: note.detail, lease: note.lease }, 'reclaim failed');
      else
        log.info(
          { result: note.result, reason: note.reason, detail: note.detail, lease: note.lease },
          'lease reclaimed',
        );
      return;
    case 'owner-checked':
      log.debug({ pod: note.podName, alive: note.alive }, 'leader pod checked');
      return;
    case 'verdict': {
      const { verdict, previous } = note;
      const fields = {
        state: verdict.state,
        leader: verdict.name,
        leaderPod: verdict.pod,
        reason: verdict.reason,
        previousState: previous.state,
        previousLeader: previous.name,
      };
      if (verdict.state === 'unknown' && previous.state !== 'unknown' && verdict.reason === 'unconfirmed') {
        log.warn(fields, 'lease unconfirmed for too long: claiming no leader until the api server answers');
      } else if (verdict.name !== previous.name || verdict.state !== previous.state) {
        log.info(fields, verdict.state === 'leader' ? 'this pod is the leader' : 'leader changed');
      } else {
        log.debug(fields, 'verdict changed');
      }
      return;
    }
  }
}
