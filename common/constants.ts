/**
 * The contract shared by the webhook (which injects) and the elector (which runs).
 * Both import these names from here and nowhere else, so the two can never disagree
 * about a port, an env name or an annotation key.
 */

/** Project name, used as the prefix of every label and annotation we own. */
export const PROJECT = 'lifelease';
/** Domain of our label and annotation keys. */
export const DOMAIN = 'lifelease.dev';

/** Pod label or annotation through which an app opts in; value "true" or "false". */
export const OPT_IN_KEY = 'leaderElection';

/** Name of the injected container (NAIS's contract). */
export const CONTAINER_NAME = 'elector';

/** The election API (GET /, GET /sse), bound to loopback inside the pod. */
export const DEFAULT_ELECTION_PORT = 4040;
/** Probes and metrics, bound to the pod IP. */
export const DEFAULT_PROBE_PORT = 4041;

/** Env added to app containers (NAIS's contract); values are built by `appEnv`. */
export const ENV_ELECTOR_PATH = 'ELECTOR_PATH';
export const ENV_ELECTOR_GET_URL = 'ELECTOR_GET_URL';
export const ENV_ELECTOR_SSE_URL = 'ELECTOR_SSE_URL';

/**
 * Node.js options the injected elector always gets. A 1 MiB young generation keeps its heap
 * small; `--jitless` (V8's interpreter only: no Sparkplug, Maglev or TurboFan code, no
 * WebAssembly, which the elector does not use) keeps the memory its optimizing compilers take
 * under load: RSS after 10,000 SSE connect/disconnect cycles ~67 instead of ~90 MiB, idle
 * ~57 instead of ~60 MiB, for about twice the CPU per SSE cycle (bench/footprint.ts, README
 * "Measured figures"); `--no-deprecation` silences a dependency's punycode warning on stderr.
 * The webhook adds an old-space cap sized to the container's memory limit (webhook/inject.ts
 * `electorNodeOptions`). V8 reads these only at start, so they go in the env, not in the code.
 */
export const ELECTOR_NODE_OPTIONS = '--max-semi-space-size=1 --jitless --no-deprecation';

/**
 * V8 flags the injected elector gets that NODE_OPTIONS refuses, so they go on its command
 * line: the deploy manifests and the chart set the webhook's `WEBHOOK_ELECTOR_COMMAND` to the
 * image's ENTRYPOINT with these after the node binary (test/unit/image/dockerfile.test.ts keeps
 * the three in step). `--optimize-for-size` makes V8 trade speed for memory (smaller heap
 * growth steps, more eager GC, no optimising compilation to keep): RSS after 10,000 SSE
 * connect/disconnect cycles ~61 instead of ~67 MiB, idle ~56 instead of ~57 MiB, for ~10% more
 * CPU per SSE cycle (bench/runtime-flags.ts). A webhook run without that variable (or with
 * another image) keeps the image's entrypoint: only NODE_OPTIONS then.
 */
export const ELECTOR_V8_FLAGS: readonly string[] = ['--optimize-for-size'];

/** The image's ENTRYPOINT (Dockerfile; test/unit/image/dockerfile.test.ts checks it): its node, then the CLI. */
export const IMAGE_ENTRYPOINT: readonly [node: string, cli: string] = [
  '/nodejs/bin/node',
  '/app/dist/cli.js',
];

/** Downward-API env the elector reads its identity from. */
export const ENV_POD_NAME = 'POD_NAME';
export const ENV_POD_NAMESPACE = 'POD_NAMESPACE';
export const ENV_POD_UID = 'POD_UID';

/** Pod annotations a user may set to steer injection. */
export const ANNOTATION_ELECTION = `${DOMAIN}/election`;
export const ANNOTATION_ELECTION_PORT = `${DOMAIN}/election-port`;
export const ANNOTATION_PROBE_PORT = `${DOMAIN}/probe-port`;
/** Pod annotation the webhook writes: what it injected (version and spec hash). */
export const ANNOTATION_INJECTED = `${DOMAIN}/injected`;

/** Pod label the webhook writes so the RBAC reconciler and admins can find electing pods. */
export const LABEL_ELECTION = `${DOMAIN}/election`;

/** Lease metadata the elector writes (NAIS's elector writes none of these). */
export const LEASE_LABEL_MANAGED_BY = 'app.kubernetes.io/managed-by';
export const LEASE_LABEL_ELECTION = `${DOMAIN}/election`;
export const LEASE_ANNOTATION_LEADER_HOSTNAME = `${DOMAIN}/leader-hostname`;
export const LEASE_ANNOTATION_LEADER_POD = `${DOMAIN}/leader-pod`;
/**
 * UID of the leader's Pod. The ownerReference carries it too; this copy survives
 * `kubectl delete --cascade=orphan` (which strips ownerReferences), so an orphaned Lease can
 * still be judged by the UID of the Pod that won it, not by a name a new Pod may reuse.
 */
export const LEASE_ANNOTATION_LEADER_UID = `${DOMAIN}/leader-uid`;
/**
 * When the leader of a fenced takeover may start to lead (RFC 3339). Written when the Lease
 * was won after the previous leader's Pod vanished while its elector may still have been
 * running (forced deletion, node unreachable): until then nobody leads, so that the old
 * elector has fenced itself first, and a candidate that starts meanwhile follows this Lease
 * instead of winning one of its own.
 */
export const LEASE_ANNOTATION_TAKEOVER_AT = `${DOMAIN}/takeover-at`;

/** The env pairs every app container gets unless it already sets them. */
export function appEnv(electionPort: number): { name: string; value: string }[] {
  return [
    { name: ENV_ELECTOR_PATH, value: `localhost:${electionPort}` },
    { name: ENV_ELECTOR_GET_URL, value: `http://localhost:${electionPort}/` },
    { name: ENV_ELECTOR_SSE_URL, value: `http://localhost:${electionPort}/sse` },
  ];
}
