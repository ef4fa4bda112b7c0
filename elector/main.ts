/**
 * The `elector` command: the composition root. The only place that reads argv and the
 * environment, creates the root logger, wires the parts together, installs shutdown and
 * picks exit codes: 0 after SIGTERM/SIGINT, 1 on a fatal error, 2 on invalid configuration.
 *
 *   node elector/main.ts --election=my-app      (or dist/elector.js after `npm run build`)
 */
import closeWithGrace from 'close-with-grace';
import { hostname } from 'node:os';
import { pino, stdTimeFunctions, type DestinationStream, type Logger } from 'pino';
import { parseConfig, type ElectorConfig } from './config.ts';
import { Election, timingFor, type Clock } from './election.ts';
import { loadKubeAccess, type KubeAccess } from './credentials.ts';
import { createKubeStore } from './kube.ts';
import { LeaderBoard } from './leader.ts';
import { countingStore, createMetrics, logNote, recordNote } from './observe.ts';
import { buildElectionApi, buildMetricsApi, buildProbeApi, listenAll, type Listening } from './server.ts';

/** How long shutdown may take before close-with-grace gives up and exits 1. */
const SHUTDOWN_DELAY_MS = 2000;

const systemClock: Clock = {
  now: () => Date.now(),
  setTimer(ms, fn) {
    const timer = setTimeout(fn, ms);
    return { cancel: () => clearTimeout(timer) };
  },
};

/** `time LEVEL message key=value ...` lines for people reading a terminal. */
function textDestination(): DestinationStream {
  return {
    write(line: string) {
      let rec: Record<string, unknown>;
      try {
        rec = JSON.parse(line) as Record<string, unknown>;
      } catch {
        process.stdout.write(line);
        return;
      }
      const { time, level, msg, ...rest } = rec;
      const fields = Object.entries(rest)
        .map(([k, v]) => `${k}=${typeof v === 'string' && !/\s|"/.test(v) ? v : JSON.stringify(v)}`)
        .join(' ');
      process.stdout.write(
        `${String(time)} ${String(level).toUpperCase()} ${String(msg)}${fields ? ` ${fields}` : ''}\n`,
      );
    },
  };
}

function createLogger(config: ElectorConfig, board: LeaderBoard): Logger {
  const options = {
    level: config.logLevel,
    base: { election: config.election, namespace: config.namespace, pod: config.identity.podName },
    timestamp: stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
    // Every line says who leads, as this elector reports it.
    mixin: () => ({ leader: board.snapshot().result.name }),
  };
  return config.logFormat === 'text' ? pino(options, textDestination()) : pino(options);
}

async function main(): Promise<void> {
  const parsed = parseConfig({ argv: process.argv.slice(2), env: process.env, systemHostname: hostname() });
  if (parsed.kind === 'help') {
    process.stdout.write(`${parsed.text}\n`);
    return;
  }
  if (parsed.kind === 'invalid') {
    process.stderr.write(
      `elector: invalid configuration:\n${parsed.problems.map((p) => `  - ${p}\n`).join('')}Run \`elector --help\` for the flags.\n`,
    );
    process.exitCode = 2;
    return;
  }
  const config = parsed.config;
  const board = new LeaderBoard();
  const log = createLogger(config, board);
  const { identity } = config;

  let access: KubeAccess;
  try {
    access = await loadKubeAccess();
  } catch (err) {
    log.fatal({ err }, 'cannot load Kubernetes credentials (in-cluster service account or KUBECONFIG)');
    process.exitCode = 1;
    return;
  }
  const timing = timingFor(config);

  let alive = true;
  const metrics = createMetrics({
    labels: { election: config.election },
    confirmationAgeSeconds: () => {
      const ms = election.confirmationAgeMs();
      return ms === undefined ? undefined : ms / 1000;
    },
    sseClients: () => board.subscriberCount,
  });
  const store = countingStore(
    createKubeStore({ access, namespace: config.namespace, election: config.election }),
    metrics.apiRequests,
  );
  const election = new Election({
    identity: {
      election: config.election,
      namespace: config.namespace,
      podName: identity.podName,
      podUid: identity.podUid,
      hostname: identity.hostname,
    },
    timing,
    store,
    clock: systemClock,
    random: Math.random,
    onVerdict: (verdict) => board.publish(verdict, Date.now()),
    onNote: (note) => {
      recordNote(metrics, note);
      logNote(log, note);
    },
  });

  // Servers first, so the probes answer (alive, not ready) while the election starts.
  const httpLog = log.child(
    { component: 'http' },
    { level: config.logLevel === 'silent' ? 'silent' : 'warn' },
  );
  const api: Listening[] = [];
  const probes: Listening[] = [];
  try {
    api.push(
      ...(await listenAll(
        () =>
          buildElectionApi({
            board,
            logger: httpLog,
            sse: { heartbeatMs: config.sseHeartbeatMs, maxClients: config.sseMaxClients },
            onSseDropped: () => metrics.sseDropped.inc(),
            onSseRejected: () => metrics.sseRejected.inc(),
          }),
        config.http,
        httpLog,
      )),
    );
    const probeRegistry = config.metrics ? undefined : metrics.registry;
    probes.push(
      ...(await listenAll(
        () => buildProbeApi({ board, logger: httpLog, alive: () => alive, registry: probeRegistry }),
        [config.probe],
        httpLog,
      )),
    );
    if (config.metrics) {
      probes.push(
        ...(await listenAll(() => buildMetricsApi(metrics.registry, httpLog), [config.metrics], httpLog)),
      );
    }
  } catch (err) {
    log.fatal({ err }, 'cannot listen');
    await Promise.allSettled([...api, ...probes].map((l) => l.app.close()));
    process.exitCode = 1;
    return;
  }
  const listening = [...api, ...probes];
  const addressOf = (l: Listening) =>
    l.address.host.includes(':')
      ? `[${l.address.host}]:${l.address.port}`
      : `${l.address.host}:${l.address.port}`;
  log.info(
    {
      http: api.map(addressOf),
      probe: addressOf(probes[0]!),
      metrics: config.metrics ? addressOf(probes[1]!) : null,
      apiServer: access.server,
      credentials: access.source,
      hostname: identity.hostname,
      podUid: identity.podUid,
      fencingTimeoutMs: config.fencingTimeoutMs,
      watchTimeoutSeconds: timing.watchTimeoutSeconds,
    },
    'elector started',
  );

  const stop = new AbortController();
  const closeAll = async () => {
    stop.abort();
    await Promise.allSettled([...listening.map((l) => l.app.close()), running]);
  };
  const running = election.run(stop.signal).catch(async (err: unknown) => {
    // A bug, not an API error (those are retried forever). Exit non-zero so the container
    // restarts; the Lease is untouched, so a leader stays leader after the restart.
    alive = false;
    log.fatal({ err }, 'election stopped unexpectedly');
    grace.uninstall();
    stop.abort();
    await Promise.allSettled(listening.map((l) => l.app.close()));
    process.exit(1);
  });

  const grace = closeWithGrace({ delay: SHUTDOWN_DELAY_MS, logger: false }, async ({ signal, err }) => {
    if (err) log.error({ err }, 'fatal error, shutting down');
    else log.info({ signal: signal ?? null }, 'shutting down (the lease stays)');
    await closeAll();
  });
}

await main();
