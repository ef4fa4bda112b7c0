/**
 * The webhook's options, declared: each setting's flag, environment variable, default, kind
 * (with bounds; checked by `common/flags.ts`) and meaning. The single source of defaults:
 * `--help` and the README's configuration table are rendered from it (a test compares the
 * README). The rules that span several options are in config.ts.
 */
import {
  DEFAULT_ELECTION_PORT,
  DEFAULT_PROBE_PORT,
  ENV_POD_NAME,
  ENV_POD_NAMESPACE,
} from '../common/constants.ts';
import {
  LOG_LEVEL_KIND,
  optionsTable as renderTable,
  usageLines,
  type OptionKind,
  type OptionSpec as FlagSpec,
} from '../common/flags.ts';
import { EGRESS_POLICY_MODES } from './egress-policy.ts';

/** How the elector is added: a native sidecar (init container with `restartPolicy: Always`) or a plain container. */
export type ElectorMode = 'native-sidecar' | 'container';
export type { LogLevel } from '../common/flags.ts';

export const ELECTOR_MODES: readonly ElectorMode[] = ['native-sidecar', 'container'];
const HOUR = 3_600_000;
/** The elector runs as a non-root user without capabilities: it cannot bind below 1024. */
const UNPRIVILEGED_PORT: OptionKind = { kind: 'port', min: 1024, max: 65535 };

export type OptionKey =
  | 'selfManagedTls'
  | 'tlsSecretName'
  | 'webhookConfigurationName'
  | 'serviceName'
  | 'tlsCertValidity'
  | 'tlsCaValidity'
  | 'tlsCertFile'
  | 'tlsPrivateKeyFile'
  | 'tlsReloadInterval'
  | 'listenAddress'
  | 'metricsAddress'
  | 'electorImage'
  | 'electorCommand'
  | 'electorSubcommand'
  | 'electorMode'
  | 'electionPort'
  | 'probePort'
  | 'electorCpuRequest'
  | 'electorMemoryRequest'
  | 'electorCpuLimit'
  | 'electorMemoryLimit'
  | 'reconcileRbac'
  | 'rbacNamespace'
  | 'electorEgressPolicy'
  | 'egressApiServerAddresses'
  | 'egressApiServerPort'
  | 'kubeconfig'
  | 'maxRequestBytes'
  | 'shutdownDelay'
  | 'logLevel'
  | 'containerName';

export type OptionSpec = FlagSpec<OptionKey>;

/** The webhook's settings; the single source of defaults (the README table is tested against it). */
export const OPTIONS: readonly OptionSpec[] = [
  {
    key: 'selfManagedTls',
    flag: '--self-managed-tls',
    env: 'WEBHOOK_SELF_MANAGED_TLS',
    default: 'false',
    boolean: true,
    kind: { kind: 'bool' },
    description:
      "Make and rotate the CA and serving certificate in a Secret, and keep the MutatingWebhookConfiguration's caBundle in step (no cert-manager needed). Needs `POD_NAMESPACE`. Instead of the TLS file flags.",
  },
  {
    key: 'tlsSecretName',
    flag: '--tls-secret-name',
    env: 'WEBHOOK_TLS_SECRET_NAME',
    default: 'lifelease-webhook-tls',
    description: 'Self-managed TLS: the Secret (in the webhook namespace) that holds the CA and certificate.',
  },
  {
    key: 'webhookConfigurationName',
    flag: '--webhook-configuration-name',
    env: 'WEBHOOK_CONFIGURATION_NAME',
    default: 'lifelease',
    description: 'Self-managed TLS: the MutatingWebhookConfiguration whose caBundle is kept in step.',
  },
  {
    key: 'serviceName',
    flag: '--service-name',
    env: 'WEBHOOK_SERVICE_NAME',
    default: 'lifelease-webhook',
    description:
      'Self-managed TLS: the Service in front of the webhook; the certificate names `<service>.<namespace>.svc`.',
  },
  {
    key: 'tlsCertValidity',
    flag: '--tls-cert-validity',
    env: 'WEBHOOK_TLS_CERT_VALIDITY',
    default: '8760h',
    kind: { kind: 'duration', minMs: 60_000, maxMs: 87_600 * HOUR },
    description: 'Self-managed TLS: serving certificate validity (renewed with a third left). 1m to 10y.',
  },
  {
    key: 'tlsCaValidity',
    flag: '--tls-ca-validity',
    env: 'WEBHOOK_TLS_CA_VALIDITY',
    default: '87600h',
    kind: { kind: 'duration', minMs: 60_000, maxMs: 87_600 * HOUR * 10 },
    description:
      'Self-managed TLS: CA validity (rotated in two phases with a third left; the old CA stays trusted until it expires).',
  },
  {
    key: 'tlsCertFile',
    flag: '--tls-cert-file',
    env: 'WEBHOOK_TLS_CERT_FILE',
    default: '',
    defaultText: '(required unless `--self-managed-tls`)',
    description:
      'PEM serving certificate (with intermediates). Re-read periodically; a changed pair is used for new connections without a restart.',
  },
  {
    key: 'tlsPrivateKeyFile',
    flag: '--tls-private-key-file',
    env: 'WEBHOOK_TLS_PRIVATE_KEY_FILE',
    default: '',
    defaultText: '(required unless `--self-managed-tls`)',
    description: 'PEM private key of the serving certificate.',
  },
  {
    key: 'tlsReloadInterval',
    flag: '--tls-reload-interval',
    env: 'WEBHOOK_TLS_RELOAD_INTERVAL',
    default: '10s',
    kind: { kind: 'duration', minMs: 100, maxMs: HOUR },
    description: 'How often the certificate and key files are checked for changes. 100ms to 1h.',
  },
  {
    key: 'listenAddress',
    flag: '--listen-address',
    env: 'WEBHOOK_LISTEN_ADDRESS',
    default: ':8443',
    kind: { kind: 'address' },
    description: 'HTTPS listener (TLS 1.2+): `POST /mutate`, `/healthz`, `/readyz`, `/metrics`.',
  },
  {
    key: 'metricsAddress',
    flag: '--metrics-address',
    env: 'WEBHOOK_METRICS_ADDRESS',
    default: '',
    defaultText: '(none: HTTPS listener only)',
    kind: { kind: 'address', optional: true },
    description: 'An extra plain-HTTP listener for `/metrics`, `/healthz` and `/readyz`.',
  },
  {
    key: 'electorImage',
    flag: '--elector-image',
    env: 'WEBHOOK_ELECTOR_IMAGE',
    default: '',
    defaultText: "(the webhook's own image)",
    description: `Image of the injected elector. When unset, the webhook reads its own Pod (${ENV_POD_NAME}, ${ENV_POD_NAMESPACE}) at start-up and uses its container's image, so both always match.`,
  },
  {
    key: 'electorCommand',
    flag: '--elector-command',
    env: 'WEBHOOK_ELECTOR_COMMAND',
    default: '',
    defaultText: "(the image's entrypoint)",
    description:
      "The elector container's `command`, words separated by spaces; empty or `-` keeps the image's entrypoint. The deploy manifests and the chart (`elector.command`) set it to the image's entrypoint with `--optimize-for-size`, a V8 flag NODE_OPTIONS refuses (README: the elector's footprint).",
  },
  {
    key: 'electorSubcommand',
    flag: '--elector-subcommand',
    env: 'WEBHOOK_ELECTOR_SUBCOMMAND',
    default: 'elector',
    description:
      "Words put before the elector's flags in its `args` (our image's entrypoint runs `cli.js elector ...`); `-` for none.",
  },
  {
    key: 'electorMode',
    flag: '--elector-mode',
    env: 'WEBHOOK_ELECTOR_MODE',
    default: 'native-sidecar',
    kind: { kind: 'enum', values: ELECTOR_MODES },
    description:
      '`native-sidecar` (an init container with `restartPolicy: Always`; apps start once the leader is known; Kubernetes 1.29+) or `container` (a plain container, for older clusters).',
  },
  {
    key: 'electionPort',
    flag: '--election-port',
    env: 'WEBHOOK_ELECTION_PORT',
    default: String(DEFAULT_ELECTION_PORT),
    kind: UNPRIVILEGED_PORT,
    description:
      'Default port of the election API on loopback; a pod may override it with `lifelease.dev/election-port`.',
  },
  {
    key: 'probePort',
    flag: '--probe-port',
    env: 'WEBHOOK_PROBE_PORT',
    default: String(DEFAULT_PROBE_PORT),
    kind: UNPRIVILEGED_PORT,
    description:
      "Default port of the elector's probes and metrics; a pod may override it with `lifelease.dev/probe-port`.",
  },
  {
    key: 'electorCpuRequest',
    flag: '--elector-cpu-request',
    env: 'WEBHOOK_ELECTOR_CPU_REQUEST',
    default: '10m',
    kind: { kind: 'quantity' },
    description: "The elector's CPU request (empty: none).",
  },
  {
    key: 'electorMemoryRequest',
    flag: '--elector-memory-request',
    env: 'WEBHOOK_ELECTOR_MEMORY_REQUEST',
    default: '48Mi',
    kind: { kind: 'quantity' },
    description: "The elector's memory request (empty: none).",
  },
  {
    key: 'electorCpuLimit',
    flag: '--elector-cpu-limit',
    env: 'WEBHOOK_ELECTOR_CPU_LIMIT',
    default: '250m',
    kind: { kind: 'quantity' },
    description: "The elector's CPU limit (empty: none; namespaces with a `limits.cpu` quota need one).",
  },
  {
    key: 'electorMemoryLimit',
    flag: '--elector-memory-limit',
    env: 'WEBHOOK_ELECTOR_MEMORY_LIMIT',
    default: '128Mi',
    kind: { kind: 'quantity' },
    description: "The elector's memory limit (empty: none).",
  },
  {
    key: 'reconcileRbac',
    flag: '--reconcile-rbac',
    env: 'WEBHOOK_RECONCILE_RBAC',
    default: 'true',
    boolean: true,
    kind: { kind: 'bool' },
    description:
      "Grant each electing pod's ServiceAccount the elector's Role (a RoleBinding per election), and remove it once the election has no pods.",
  },
  {
    key: 'rbacNamespace',
    flag: '--rbac-namespace',
    env: 'WEBHOOK_RBAC_NAMESPACE',
    default: '',
    defaultText: '(all namespaces)',
    description: 'Restrict the RBAC reconciler to one namespace (then it needs its rights there only).',
  },
  {
    key: 'electorEgressPolicy',
    flag: '--elector-egress-policy',
    env: 'WEBHOOK_ELECTOR_EGRESS_POLICY',
    default: 'off',
    kind: { kind: 'enum', values: EGRESS_POLICY_MODES },
    description:
      "A NetworkPolicy per election (beside its Role, removed with it) letting the election's pods reach the API server, and nothing else: `off`; `if-isolated` (only where another NetworkPolicy already restricts their egress: a default deny); `always` (where the default deny is not a namespaced NetworkPolicy; elsewhere it would restrict the pods to the API server). Needs the RBAC of `manifests/components/elector-egress`.",
  },
  {
    key: 'egressApiServerAddresses',
    flag: '--egress-api-server-addresses',
    env: 'WEBHOOK_EGRESS_API_SERVER_ADDRESSES',
    default: '',
    defaultText: '(the `kubernetes` EndpointSlice)',
    description:
      'API server IPs or CIDRs for those policies, comma-separated: the addresses pods reach after the `kubernetes` Service (its endpoints, not its cluster IP).',
  },
  {
    key: 'egressApiServerPort',
    flag: '--egress-api-server-port',
    env: 'WEBHOOK_EGRESS_API_SERVER_PORT',
    default: '',
    defaultText: '(the `kubernetes` EndpointSlice)',
    kind: { kind: 'port', min: 1, max: 65535, optional: true },
    description:
      "API server port for those policies (the endpoints' port, e.g. 6443, not the Service's 443).",
  },
  {
    key: 'kubeconfig',
    flag: '--kubeconfig',
    env: 'WEBHOOK_KUBECONFIG',
    default: '',
    defaultText: '(in-cluster, or `$KUBECONFIG`)',
    description:
      'Kubeconfig for the RBAC reconciler and the own-image lookup. Never used on the admission path.',
  },
  // Why 7 MiB: kube-apiserver accepts objects up to about 1.5 MiB and request bodies up to
  // 3 MiB, and an AdmissionReview wraps the object (and, for updates, the old object) in JSON;
  // fastify's 1 MiB default would refuse large but legal pods. controller-runtime uses 7 MiB too.
  {
    key: 'maxRequestBytes',
    flag: '--max-request-bytes',
    env: 'WEBHOOK_MAX_REQUEST_BYTES',
    default: '7Mi',
    kind: { kind: 'bytes', min: 1024 * 1024 },
    description:
      "Largest accepted AdmissionReview body (bytes, or with a Ki/Mi suffix). Above the API server's object limit on purpose; larger bodies get 413.",
  },
  {
    key: 'shutdownDelay',
    flag: '--shutdown-delay',
    env: 'WEBHOOK_SHUTDOWN_DELAY',
    default: '5s',
    kind: { kind: 'duration', minMs: 0, maxMs: 5 * 60_000 },
    description:
      'On SIGTERM, report not ready and keep serving this long before closing, while the Service stops routing here. 0 to 5m.',
  },
  {
    key: 'logLevel',
    flag: '--log-level',
    env: 'WEBHOOK_LOG_LEVEL',
    default: 'info',
    kind: LOG_LEVEL_KIND,
    description: '`trace`, `debug`, `info`, `warn`, `error`, `fatal` or `silent` (JSON lines on stdout).',
  },
  {
    key: 'containerName',
    flag: '--container-name',
    env: 'WEBHOOK_CONTAINER_NAME',
    default: 'webhook',
    description: "The webhook's container in its own Pod, whose image is the default elector image.",
  },
];

/** An option's default text (as documented), e.g. `defaultOf('electorMemoryLimit')` is `128Mi`. */
export function defaultOf(key: OptionKey): string {
  const option = OPTIONS.find((o) => o.key === key);
  if (!option) throw new Error(`no option ${key}`);
  return option.default;
}

/** Usage text, generated from {@link OPTIONS}. */
export function usage(): string {
  const lines = [
    'Usage: webhook (--tls-cert-file=<file> --tls-private-key-file=<file> | --self-managed-tls) [flags]',
    '',
    'Mutating admission webhook that injects the lifelease elector into pods with leaderElection: "true".',
    '',
    'Flags (each also as an environment variable):',
    ...usageLines(OPTIONS),
  ];
  return lines.join('\n');
}

/**
 * The README's configuration table (flag, environment variable, default, meaning), generated
 * from {@link OPTIONS} so the two cannot drift: the README embeds this text verbatim.
 */
export function optionsTable(): string {
  return renderTable(OPTIONS);
}
