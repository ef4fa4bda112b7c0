/**
 * What to inject, and whether to, in three pure layers (no I/O, no clock, no logging: values
 * in, values out; `admission.ts` turns the result into a response):
 *  - `policy.ts`: should this pod get an elector, and if not, why (skip or refuse, with what
 *    to change); the election's name;
 *  - `render.ts`: the elector container, its token volume and the hash stamped on the pod;
 *  - `apply.ts`: the JSON Patch that applies the plan to the pod as received.
 * This module is their one entry point.
 *
 * The transformation is idempotent by construction: the elector's container and volume are
 * rendered from the pod and the configuration alone, their hash is stamped on the pod
 * (`lifelease.dev/injected`), and a pod that already carries the same hash keeps what it has
 * (the API server defaults fields of what we injected, so re-rendering would differ).
 * Environment entries are only ever added when missing, never replaced.
 *
 * Where the elector goes: last among the init containers (native-sidecar mode).
 *  - Regular init containers (migrations, config rendering, wait-for-database) run before it:
 *    none of them should wait for an election (up to a lease duration), and none can ask the
 *    elector (not running yet), so they get no ELECTOR_* env.
 *  - Native sidecars declared before it (log shippers, database proxies, mesh proxies) start
 *    first. A mesh whose CNI plugin redirects all pod traffic to its proxy (Istio CNI,
 *    Linkerd CNI) in native-sidecar mode has its proxy up before the elector, which then
 *    reaches the API server through it. Elector first would deadlock: its startup probe waits
 *    for the API server, which needs the proxy, which waits for the elector to be started.
 *  - A webhook that appends an init container after ours reinvokes us; the elector moves to
 *    the end again. A mesh proxy that is a regular container starts after all init containers:
 *    no init container, ours included, reaches the network there; the README says what to
 *    exclude from the redirection.
 * The user's native sidecars run beside the app and get the ELECTOR_* env like it.
 */
export {
  decide,
  electionName,
  injectedStatus,
  isValidElectionName,
  MAX_ELECTION_NAME,
  optIn,
  toElectionName,
  type Decision,
  type Election,
  type ElectionSource,
  type InjectedStatus,
  type InjectionPlan,
  type RefuseReason,
  type SkipReason,
} from './policy.ts';
export {
  ELECTOR_UID,
  electorContainer,
  electorNodeOptions,
  INJECTED_NODE_OPTIONS,
  renderHash,
  TOKEN_MOUNT_PATH,
  TOKEN_VOLUME_NAME,
  tokenVolume,
  type InjectionConfig,
} from './render.ts';
export { applyPlan, inject, type Applied, type InjectionResult } from './apply.ts';
