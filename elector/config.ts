/**
 * The elector's configuration: one pure parser of command-line flags and `ELECTOR_*`
 * environment variables (NAIS's names), plus the pod identity from the downward API.
 *
 * Precedence: flag, then environment, then default. Defaults live only in {@link OPTIONS},
 * which also renders `--help` and the README's configuration table. Every problem is
 * reported at once, so a broken manifest is fixed in one round.
 */
import {
  DEFAULT_ELECTION_PORT,
  DEFAULT_PROBE_PORT,
  ENV_POD_NAME,
  ENV_POD_NAMESPACE,
  ENV_POD_UID,
} from '../common/constants.ts';
import {
  LOG_LEVEL_KIND,
  optionsTable as renderTable,
  parseAddress,
  parseDuration,
  readFlags,
  settingsReader,
  typedSettings,
  usageLines,
  type ListenAddress,
  type LogLevel,
  type OptionSpec as FlagSpec,
  type ParseOutcome,
} from '../common/flags.ts';

export type LogFormat = 'json' | 'text';
export type { LogLevel };

export type { ListenAddress };
export { parseAddress, parseDuration };

/** Who this elector is: the Pod it runs in (downward API) and the hostname its app sees. */
export interface PodIdentity {
  podName: string;
  podNamespace: string;
  podUid: string;
  hostname: string;
}

export interface ElectorConfig {
  /** The election's name: the Lease's name, and a label value. */
  election: string;
  /** The Lease's namespace; always the pod's own (an ownerReference cannot cross namespaces). */
  namespace: string;
  /** Where the election API listens: both loopbacks for `localhost`/`127.0.0.1`/`::1`. */
  http: ListenAddress[];
  probe: ListenAddress;
  /** A separate metrics listener, or undefined to serve `/metrics` on the probe address. */
  metrics: ListenAddress | undefined;
  logFormat: LogFormat;
  logLevel: LogLevel;
  /** How long the Lease may go unconfirmed before the elector stops claiming anything. */
  fencingTimeoutMs: number;
  /** How often a follower checks the leader's Pod while its watch on that Pod is down. */
  ownerCheckIntervalMs: number;
  /** Upper bound of the random delay before a campaign, so candidates do not all hit at once. */
  campaignJitterMs: number;
  /** Interval of SSE heartbeat comments. */
  sseHeartbeatMs: number;
  /** Open SSE streams beyond which new ones are refused (503). */
  sseMaxClients: number;
  identity: PodIdentity;
}

/** One configurable setting: its flag, its env name, its default, what it means. */
export type OptionSpec = FlagSpec<OptionKey>;

export type OptionKey =
  | 'election'
  | 'electionNamespace'
  | 'http'
  | 'probeAddress'
  | 'metricsAddress'
  | 'logFormat'
  | 'logLevel'
  | 'fencingTimeout'
  | 'ownerCheckInterval'
  | 'campaignJitter'
  | 'sseHeartbeat'
  | 'sseMaxClients';

/** The elector's settings; the single source of defaults (README table is tested against it). */
export const OPTIONS: readonly OptionSpec[] = [
  {
    key: 'election',
    flag: '--election',
    env: 'ELECTOR_ELECTION',
    default: '',
    defaultText: '(required)',
    description: 'Name of the election: the Lease name, shared by every pod that takes part.',
  },
  {
    key: 'electionNamespace',
    flag: '--election-namespace',
    env: 'ELECTOR_ELECTION_NAMESPACE',
    default: '',
    defaultText: `the pod's namespace (\`${ENV_POD_NAMESPACE}\`)`,
    description: "Namespace of the Lease; must be the pod's own namespace.",
  },
  {
    key: 'http',
    flag: '--http',
    env: 'ELECTOR_HTTP',
    default: `127.0.0.1:${DEFAULT_ELECTION_PORT}`,
    kind: { kind: 'address' },
    description:
      'Election API (`GET /`, `GET /sse`). `localhost`, `127.0.0.1` and `::1` all mean both loopbacks (127.0.0.1 and ::1).',
  },
  {
    key: 'probeAddress',
    flag: '--probe-address',
    env: 'ELECTOR_PROBE_ADDRESS',
    default: `0.0.0.0:${DEFAULT_PROBE_PORT}`,
    kind: { kind: 'address' },
    description: '`/healthz`, `/readyz` and (unless `--metrics-address` is set) `/metrics`.',
  },
  {
    key: 'metricsAddress',
    flag: '--metrics-address',
    env: 'ELECTOR_METRICS_ADDRESS',
    default: '',
    defaultText: '(the probe address)',
    kind: { kind: 'address', optional: true },
    description: 'A separate listener for `/metrics`.',
  },
  {
    key: 'logFormat',
    flag: '--log-format',
    env: 'ELECTOR_LOG_FORMAT',
    default: 'json',
    description: '`json` (one pino object per line) or `text` (`time level message key=value`).',
  },
  {
    key: 'logLevel',
    flag: '--log-level',
    env: 'ELECTOR_LOG_LEVEL',
    default: 'info',
    kind: LOG_LEVEL_KIND,
    description: '`trace`, `debug`, `info`, `warn`, `error`, `fatal` or `silent`.',
  },
  {
    key: 'fencingTimeout',
    flag: '--fencing-timeout',
    env: 'ELECTOR_FENCING_TIMEOUT',
    default: '60s',
    kind: { kind: 'duration', minMs: 3_000, maxMs: 30 * 60_000 },
    description:
      'Self-fencing bound: when the Lease cannot be confirmed with the API server for this long, the elector reports `unknown` (no leader, not even itself) until it can. 3s to 30m.',
  },
  {
    key: 'ownerCheckInterval',
    flag: '--owner-check-interval',
    env: 'ELECTOR_OWNER_CHECK_INTERVAL',
    default: '30s',
    kind: { kind: 'duration', minMs: 1_000, maxMs: 3_600_000 },
    description:
      "How often followers check the leader's Pod (gone, finished or replaced means the Lease is reclaimed) while their watch on it is down; while it runs, it reports such changes at once. 1s to 1h.",
  },
  {
    key: 'campaignJitter',
    flag: '--campaign-jitter',
    env: 'ELECTOR_CAMPAIGN_JITTER',
    default: '200ms',
    kind: { kind: 'duration', minMs: 0, maxMs: 10_000 },
    description: 'Maximum random delay before a campaign once the Lease is gone. 0 to 10s.',
  },
  {
    key: 'sseHeartbeat',
    flag: '--sse-heartbeat',
    env: 'ELECTOR_SSE_HEARTBEAT',
    default: '15s',
    kind: { kind: 'duration', minMs: 1_000, maxMs: 5 * 60_000 },
    description: 'Interval of SSE heartbeat comments (keeps proxies from closing idle streams). 1s to 5m.',
  },
  {
    key: 'sseMaxClients',
    flag: '--sse-max-clients',
    env: 'ELECTOR_SSE_MAX_CLIENTS',
    default: '1000',
    kind: { kind: 'integer', min: 1, max: 100_000 },
    description:
      'Open SSE streams beyond which new ones get 503 with Retry-After (bounds memory against a client that leaks streams). 1 to 100000.',
  },
];

export type ParseResult = ParseOutcome<ElectorConfig>;

export interface ParseInput {
  argv: readonly string[];
  env: Readonly<Record<string, string | undefined>>;
  /** `os.hostname()`, used when `HOSTNAME` is not set. */
  systemHostname: string;
}

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '::1']);

// A DNS-1123 subdomain no longer than 63 characters, so the name is valid as a Lease name, a
// label value and an RBAC resource name alike.
const ELECTION_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const NAMESPACE_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** The addresses the election API listens on: both loopbacks for any loopback name. */
export function electionListenAddresses(address: ListenAddress): ListenAddress[] {
  if (LOOPBACK_HOSTS.has(address.host)) {
    return [
      { host: '127.0.0.1', port: address.port },
      { host: '::1', port: address.port },
    ];
  }
  return [address];
}

/** The README's configuration table (Markdown), generated from {@link OPTIONS}; a test keeps the README in step. */
export function optionsTable(): string {
  return renderTable(OPTIONS);
}

/** Usage text, generated from {@link OPTIONS}. */
export function usage(): string {
  const lines = [
    'Usage: elector --election=<name> [flags]',
    '',
    'Lease-for-life leader election for the pods of one Kubernetes app (NAIS-compatible).',
    `Identity from ${ENV_POD_NAME}, ${ENV_POD_NAMESPACE}, ${ENV_POD_UID} (downward API) and HOSTNAME.`,
    '',
    'Flags (each also as an environment variable):',
    ...usageLines(OPTIONS),
  ];
  return lines.join('\n');
}

/**
 * Parses flags and environment into a complete configuration, or every problem found.
 * Pure: the caller passes argv, env and the system hostname.
 */
export function parseConfig(input: ParseInput): ParseResult {
  const problems: string[] = [];
  // Go's flag package (NAIS) also accepts a single dash: -election=x.
  const { values: flagValues, help } = readFlags(input.argv, OPTIONS, problems, { singleDash: true });
  if (help) return { kind: 'help', text: usage() };
  const settings = typedSettings(
    OPTIONS,
    settingsReader(OPTIONS, flagValues, input.env, { emptyEnvIsUnset: true }),
    problems,
  );
  const { raw, nameOf } = settings;

  // Identity (downward API).
  const env = (name: string): string => (input.env[name] ?? '').trim();
  const podName = env(ENV_POD_NAME);
  const podUid = env(ENV_POD_UID);
  let podNamespace = env(ENV_POD_NAMESPACE);
  if (podName === '') problems.push(`${ENV_POD_NAME} is not set (downward API: metadata.name)`);
  if (podUid === '') problems.push(`${ENV_POD_UID} is not set (downward API: metadata.uid)`);
  const hostname = env('HOSTNAME') || input.systemHostname.trim();
  if (hostname === '') problems.push('no hostname: HOSTNAME is empty and the system hostname is empty');

  // The election and its namespace.
  const election = raw('election');
  if (election === '') {
    problems.push(`${nameOf('election')} is required`);
  } else if (election.length > 63 || !ELECTION_NAME.test(election)) {
    problems.push(
      `${nameOf('election')}: "${election}" must be a lowercase DNS name of at most 63 characters (a Lease name and label value)`,
    );
  }
  const electionNamespace = raw('electionNamespace');
  if (podNamespace === '') podNamespace = electionNamespace;
  const namespace = electionNamespace || podNamespace;
  if (namespace === '') {
    problems.push(
      `no namespace: set ${ENV_POD_NAMESPACE} (downward API: metadata.namespace) or ${nameOf('electionNamespace')}`,
    );
  } else if (!NAMESPACE_NAME.test(namespace) || namespace.length > 63) {
    problems.push(`namespace "${namespace}" is not a valid namespace name`);
  } else if (namespace !== podNamespace) {
    problems.push(
      `${nameOf('electionNamespace')} is "${namespace}" but the pod runs in "${podNamespace}": the Lease's ownerReference must point to a Pod in its own namespace`,
    );
  }

  // Listeners.
  const httpAddress = settings.address('http');
  const probe = settings.address('probeAddress');
  const metrics = settings.address('metricsAddress');

  // Logging.
  const logFormat = raw('logFormat');
  if (logFormat !== 'json' && logFormat !== 'text') {
    problems.push(`${nameOf('logFormat')}: "${logFormat}" is not json or text`);
  }
  const logLevel = settings.choice<LogLevel>('logLevel');

  // Timing.
  const fencingTimeoutMs = settings.duration('fencingTimeout');
  const ownerCheckIntervalMs = settings.duration('ownerCheckInterval');
  const campaignJitterMs = settings.duration('campaignJitter');
  const sseHeartbeatMs = settings.duration('sseHeartbeat');
  const sseMaxClients = settings.integer('sseMaxClients');

  if (problems.length > 0 || !httpAddress || !probe) return { kind: 'invalid', problems };
  return {
    kind: 'ok',
    config: {
      election,
      namespace,
      http: electionListenAddresses(httpAddress),
      probe,
      metrics,
      logFormat: logFormat as LogFormat,
      logLevel,
      fencingTimeoutMs,
      ownerCheckIntervalMs,
      campaignJitterMs,
      sseHeartbeatMs,
      sseMaxClients,
      identity: { podName, podNamespace, podUid, hostname },
    },
  };
}
