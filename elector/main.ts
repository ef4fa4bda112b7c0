/**
 * The `elector` command: the composition root. The only place that reads argv and the
 * environment, creates the root logger, wires the parts together, handles shutdown and
 * picks exit codes: 0 after its signal aborts (SIGTERM/SIGINT), 1 on a fatal error, 2 on
 * invalid configuration.
 *
 *   node elector/main.ts --election=my-app      (or dist/elector.js after `npm run build`)
 *
 * {@link run} is the command as a function of its inputs (tests call it in process); run
 * as a program, the module calls it with the process's argv, env, streams and a signal that
 * SIGTERM/SIGINT abort.
 */
import { hostname } from 'node:os';
import { createLogger, type LogStream, type Logger } from '../common/logger.ts';
import { parseConfig, type ElectorConfig } from './config.ts';
import { Election, timingFor } from './election.ts';
import { loadKubeAccess, type KubeAccess } from './credentials.ts';
import { createKubeStore } from './kube.ts';
import { LeaderBoard } from './leader.ts';
import { countingStore, createMetrics, logNote, recordNote } from './observe.ts';
import { buildElectionApi, buildMetricsApi, buildProbeApi, listenAll, type Listening } from './server.ts';
import { monotonicClock } from '../common/clock.ts';

/** How long shutdown may take before the command gives up on it and exits 1. */
export const SHUTDOWN_DELAY_MS = 2000;

/** The command's inputs: the same shape for both commands (issue 15). */
export interface RunOptions {
  /** Flags, without the program (`process.argv.slice(2)`). */
  argv: readonly string[];
  env: Readonly<Record<string, string | undefined>>;
  /** Log lines and `--help`. */
  stdout: LogStream;
  /** Configuration errors. */
  stderr: LogStream;
  /** Aborting it shuts the elector down (exit code 0); the Lease stays. */
  signal: AbortSignal;
}

function rootLogger(config: ElectorConfig, board: LeaderBoard, stdout: LogStream): Logger {
  return createLogger({
    level: config.logLevel,
    stream: stdout,
    format: config.logFormat,
    base: { election: config.election, namespace: config.namespace, pod: config.identity.podName },
    // Every line says who leads, as this elector reports it.
    mixin: () => ({ leader: board.peek().result.name }),
  });
}

/** Resolves after `ms`, or at once when `signal` aborts; never keeps the process alive. */
function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/** The elector, from start to exit code. */
export async function run({ argv, env, stdout, stderr, signal }: RunOptions): Promise<number> {
  const parsed = parseConfig({ argv: [...argv], env, systemHostname: hostname() });
  if (parsed.kind === 'help') {
    stdout.write(`${parsed.text}\n`);
    return 0;
  }
  if (parsed.kind === 'invalid') {
    stderr.write(
      `elector: invalid configuration:\n${parsed.problems.map((p) => `  - ${p}\n`).join('')}Run \`elector --help\` for the flags.\n`,
    );
    return 2;
  }
  const config = parsed.config;
  const board = new LeaderBoard();
  const log = rootLogger(config, board, stdout);
  const { identity } = config;

  let access: KubeAccess;
  try {
    access = await loadKubeAccess(env);
  } catch (err) {
    log.fatal({ err }, 'cannot load Kubernetes credentials (in-cluster service account or KUBECONFIG)');
    return 1;
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
    clock: monotonicClock,
    random: Math.random,
    onVerdict: (verdict) => board.publish(verdict, Date.now()),
    onNote: (note) => {
      recordNote(metrics, note);
      logNote(log, note);
    },
  });
  board.decideOnRead(() => election.refresh());

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
    return 1;
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
  const stopped = new Promise<'signal'>((resolve) => {
    if (signal.aborted) resolve('signal');
    else signal.addEventListener('abort', () => resolve('signal'), { once: true });
  });
  const running = election.run(stop.signal).then(
    () => 'ended' as const,
    (err: unknown) => ({ err }),
  );
  const outcome = await Promise.race([stopped, running]);

  const closeAll = async () => {
    stop.abort();
    await Promise.allSettled([...listening.map((l) => l.app.close()), running]);
  };
  if (outcome === 'signal') {
    log.info(
      { signal: typeof signal.reason === 'string' ? signal.reason : null },
      'shutting down (the lease stays)',
    );
    const closed = await Promise.race([
      closeAll().then(() => true),
      delay(SHUTDOWN_DELAY_MS).then(() => false),
    ]);
    if (!closed) {
      log.error({ delayMs: SHUTDOWN_DELAY_MS }, 'shutdown took too long, exiting');
      return 1;
    }
    return 0;
  }
  // The election loop never ends by itself: a bug, not an API error (those are retried
  // forever). Exit non-zero so the container restarts; the Lease is untouched, so a leader
  // stays leader after the restart.
  alive = false;
  log.fatal(
    { err: outcome === 'ended' ? new Error('the election loop returned') : outcome.err },
    'election stopped unexpectedly',
  );
  await Promise.race([closeAll(), delay(SHUTDOWN_DELAY_MS)]);
  return 1;
}

/**
 * Runs the command for this process: SIGTERM/SIGINT/SIGHUP/SIGQUIT abort it (a second signal
 * exits 1 at once), an uncaught error is logged and exits 1, and the process exits with
 * run's code once it is done (a connection left open must not keep it alive).
 */
export async function runProcess(argv: readonly string[]): Promise<never> {
  const controller = new AbortController();
  const onSignal = (name: NodeJS.Signals) => {
    if (controller.signal.aborted) process.exit(1);
    controller.abort(name);
  };
  const signals: NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT'];
  for (const s of signals) process.on(s, onSignal);
  const onError = (err: unknown) => {
    createLogger({ level: 'info', stream: process.stdout }).fatal({ err }, 'fatal error, exiting');
    process.exit(1);
  };
  process.on('uncaughtException', onError);
  process.on('unhandledRejection', onError);
  const code = await run({
    argv,
    env: process.env,
    stdout: process.stdout,
    stderr: process.stderr,
    signal: controller.signal,
  });
  process.exit(code);
}

// Run as a program (`node dist/elector.js`); imported (tests, common/cli.ts), nothing runs.
if (import.meta.main) await runProcess(process.argv.slice(2));
