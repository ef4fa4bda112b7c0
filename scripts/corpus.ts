/**
 * Runs a folder of Kubernetes manifests (any kind with a pod template, multi-document YAML or
 * JSON, `List`s included) through the webhook, opted in by label and by annotation, and
 * reports per check:
 *   1. directly: the pod the workload's controller would send (owner reference, ReplicaSet
 *      hash, a StatefulSet's hostname, a CronJob's Job) reviewed in process: a well-formed
 *      review echoing the uid, a patch that applies, an idempotent re-review, the user's
 *      containers untouched apart from added `ELECTOR_*` env, refusals with a message;
 *   2. with `--api`: through a throwaway kube-apiserver (v1.36) with the webhook registered as
 *      shipped: the same pod created with `dryRun=All` (admission and validation, nothing
 *      stored), then each Deployment, StatefulSet, Job, CronJob (as one of its Jobs) and
 *      ReplicaSet created for real, one replica, and the controllers' pods (or their
 *      FailedCreate events) awaited. ServiceAccounts the templates name are created; a
 *      `priorityClassName` or `runtimeClassName` is dropped (their objects do not exist here).
 *
 * The corpus stays outside git (public manifests); what it finds becomes a minimal
 * reproduction of our own in test/fixtures/golden.
 *
 *   node scripts/corpus.ts <folder> [--api] [--limit=N] [--json=<file>] [--show=N]
 */
import {
  AppsV1Api,
  BatchV1Api,
  CoreV1Api,
  loadAllYaml,
  type V1Container,
  type V1Pod,
  type V1PodTemplateSpec,
} from '@kubernetes/client-node';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { handleAdmission, parseReview } from '../webhook/admission.ts';
import { applyPatch, type Operation } from '../webhook/patch.ts';
import { createReview, TEST_CONFIG } from '../test/support/admission-reviews.ts';

const args = process.argv.slice(2);
const folder = args.find((a) => !a.startsWith('--'));
if (!folder) {
  process.stderr.write(
    'usage: node scripts/corpus.ts <folder> [--api] [--limit=N] [--json=<file>] [--show=N]\n',
  );
  process.exit(2);
}
const flag = (name: string) => args.find((a) => a.startsWith(`--${name}=`))?.split('=')[1];
const useApi = args.includes('--api');
const limit = Number(flag('limit') ?? Infinity);
const show = Number(flag('show') ?? 5);
const jsonOut = flag('json');

// ---------------------------------------------------------------------------------------
// 1. Templates out of the folder
// ---------------------------------------------------------------------------------------

type Rec = Record<string, unknown>;
const isRec = (v: unknown): v is Rec => typeof v === 'object' && v !== null && !Array.isArray(v);

interface Template {
  id: string;
  /** `<top folder>/<file>#<doc>`. */
  source: string;
  project: string;
  kind: string;
  name: string;
  doc: Rec;
  template: V1PodTemplateSpec;
}

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = path.join(dir, f);
    if (statSync(p).isDirectory()) return files(p);
    return /\.(ya?ml|json)$/.test(f) ? [p] : [];
  });
}

function templateOf(doc: Rec): V1PodTemplateSpec | undefined {
  const spec = isRec(doc['spec']) ? doc['spec'] : undefined;
  if (doc['kind'] === 'Pod')
    return { metadata: doc['metadata'] ?? {}, spec: (spec ?? {}) as unknown as NonNullable<V1Pod['spec']> };
  if (doc['kind'] === 'CronJob') {
    const job = isRec(spec?.['jobTemplate']) ? spec['jobTemplate'] : undefined;
    const t = isRec(job?.['spec']) ? job['spec']['template'] : undefined;
    return isRec(t) ? t : undefined;
  }
  const t = spec?.['template'];
  if (isRec(t) && isRec(t['spec']) && Array.isArray(t['spec']['containers'])) return t;
  return undefined;
}

const unparsable: string[] = [];
const templates: Template[] = [];
const root = path.resolve(folder);
for (const file of files(root)) {
  let docs: unknown[];
  try {
    docs = loadAllYaml(readFileSync(file, 'utf8'));
  } catch {
    unparsable.push(path.relative(root, file));
    continue;
  }
  const flat = docs.flatMap((d): unknown[] =>
    isRec(d) && d['kind'] === 'List' && Array.isArray(d['items']) ? (d['items'] as unknown[]) : [d],
  );
  flat.forEach((doc, i) => {
    if (!isRec(doc) || typeof doc['kind'] !== 'string') return;
    const template = templateOf(doc);
    if (!template?.spec || !Array.isArray(template.spec.containers)) return;
    const meta = isRec(doc['metadata']) ? doc['metadata'] : {};
    const rel = path.relative(root, file);
    const name = typeof meta['name'] === 'string' && meta['name'] !== '' ? meta['name'] : 'unnamed';
    const id = createHash('sha256').update(`${rel}#${i}`).digest('hex').slice(0, 10);
    templates.push({
      id,
      source: `${rel}#${i}`,
      project: rel.split(path.sep)[0]!,
      kind: doc['kind'],
      name,
      doc,
      template,
    });
  });
}
const selected = templates.slice(0, limit);

// ---------------------------------------------------------------------------------------
// 2. The pod a controller would send, and the direct checks
// ---------------------------------------------------------------------------------------

type OptIn = 'label' | 'annotation';

/** A DNS label from a manifest name (templated names, upper case) for our own objects. */
function dnsName(raw: string, max = 40): string {
  const clean = raw
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, max)
    .replace(/-+$/, '');
  return clean === '' ? 'x' : clean;
}

function optedTemplate(t: Template, optIn: OptIn): V1PodTemplateSpec {
  const template = structuredClone(t.template);
  const meta = (template.metadata ??= {});
  if (optIn === 'label') meta.labels = { ...meta.labels, leaderElection: 'true' };
  else meta.annotations = { ...meta.annotations, leaderElection: 'true' };
  return template;
}

function controllerPod(t: Template, optIn: OptIn, namespace: string): V1Pod {
  const template = optedTemplate(t, optIn);
  const name = dnsName(t.name);
  const owner = (kind: string, ownerName: string) => [
    {
      apiVersion: kind === 'Job' ? 'batch/v1' : 'apps/v1',
      kind,
      name: ownerName,
      uid: `uid-${t.id}`,
      controller: true,
    },
  ];
  const meta: NonNullable<V1Pod['metadata']> = { ...template.metadata, namespace };
  delete meta.name;
  const spec = structuredClone(template.spec!);
  switch (t.kind) {
    case 'Pod':
      meta.name = name;
      break;
    case 'Deployment': {
      const hash = t.id.slice(0, 9);
      meta.labels = { ...meta.labels, 'pod-template-hash': hash };
      meta.generateName = `${name}-${hash}-`;
      meta.ownerReferences = owner('ReplicaSet', `${name}-${hash}`);
      break;
    }
    case 'StatefulSet':
      meta.name = `${name}-0`;
      spec.hostname = `${name}-0`;
      meta.ownerReferences = owner('StatefulSet', name);
      break;
    case 'CronJob':
      meta.generateName = `${name}-29000000-`;
      meta.ownerReferences = owner('Job', `${name}-29000000`);
      break;
    default:
      meta.generateName = `${name}-`;
      meta.ownerReferences = owner(t.kind, name);
  }
  return { apiVersion: 'v1', kind: 'Pod', metadata: meta, spec };
}

const ELECTOR_ENV = new Set(['ELECTOR_PATH', 'ELECTOR_GET_URL', 'ELECTOR_SSE_URL']);

/** A user container with the env entries we added taken out again (and an env we created removed). */
function withoutOurEnv(c: V1Container, before: V1Container | undefined): V1Container {
  const copy = structuredClone(c);
  if (Array.isArray(copy.env)) {
    const own = new Set((before?.env ?? []).map((e) => e.name));
    copy.env = copy.env.filter((e) => !ELECTOR_ENV.has(e.name) || own.has(e.name));
    if (copy.env.length === 0 && before?.env === undefined) delete copy.env;
  }
  return copy;
}

function userContainersUntouched(before: V1Pod, after: V1Pod): string | undefined {
  for (const list of ['initContainers', 'containers'] as const) {
    const a = before.spec?.[list] ?? [];
    const b = (after.spec?.[list] ?? []).filter((c) => c.name !== 'elector');
    if (a.length !== b.length) return `${list}: ${a.length} user containers became ${b.length}`;
    for (let i = 0; i < a.length; i++) {
      if (JSON.stringify(withoutOurEnv(b[i]!, a[i])) !== JSON.stringify(a[i]))
        return `${list}[${i}] (${a[i]!.name}) changed beyond the ELECTOR_* env`;
    }
  }
  return undefined;
}

interface Outcome {
  template: string;
  optIn: OptIn;
  outcome: string;
  reason: string;
  message?: string;
  problems: string[];
  operations: number;
}

function review(pod: V1Pod) {
  const body = JSON.parse(JSON.stringify(createReview(pod, pod.metadata?.namespace))) as unknown;
  const parsed = parseReview(body);
  if (!parsed.ok) throw new Error(parsed.message);
  return { uid: parsed.request.uid, result: handleAdmission(parsed.request, TEST_CONFIG) };
}

function decodeOps(patch: string | undefined): Operation[] {
  if (patch === undefined) return [];
  return JSON.parse(Buffer.from(patch, 'base64').toString('utf8')) as Operation[];
}

const checks = {
  'well-formed review': { pass: 0, fail: 0 },
  'patch applies': { pass: 0, fail: 0 },
  idempotent: { pass: 0, fail: 0 },
  'user containers untouched': { pass: 0, fail: 0 },
  'refusal says what to change': { pass: 0, fail: 0 },
} as Record<string, { pass: number; fail: number }>;
const failures: Record<string, string[]> = {};
function check(name: string, ok: boolean, detail: string): void {
  const c = (checks[name] ??= { pass: 0, fail: 0 });
  if (ok) c.pass++;
  else {
    c.fail++;
    (failures[name] ??= []).push(detail);
  }
}

const outcomes: Outcome[] = [];
for (const t of selected) {
  for (const optIn of ['label', 'annotation'] as const) {
    const pod = controllerPod(t, optIn, 'corpus');
    const problems: string[] = [];
    const { uid, result } = review(pod);
    const r = result.review.response;
    const wellFormed =
      result.review.apiVersion === 'admission.k8s.io/v1' &&
      r.uid === uid &&
      typeof r.allowed === 'boolean' &&
      (r.allowed || (typeof r.status?.message === 'string' && r.status.message !== '')) &&
      (r.warnings ?? []).every((w) => w.length <= 256);
    check('well-formed review', wellFormed, `${t.source} ${optIn}`);
    let ops: Operation[] = [];
    if (r.allowed) {
      try {
        ops = decodeOps(r.patch);
        const out = applyPatch(pod, ops);
        check('patch applies', true, '');
        const again = review(out).result;
        const idem = again.review.response.allowed && again.review.response.patch === undefined;
        check(
          'idempotent',
          idem,
          `${t.source} ${optIn}: ${again.review.response.patch ? JSON.stringify(decodeOps(again.review.response.patch)) : again.message}`,
        );
        const touched = userContainersUntouched(pod, out);
        check('user containers untouched', touched === undefined, `${t.source} ${optIn}: ${touched}`);
      } catch (err) {
        check('patch applies', false, `${t.source} ${optIn}: ${String(err)}`);
      }
    } else {
      const message = r.status?.message ?? '';
      check(
        'refusal says what to change',
        /\b(set|remove|rename|use|opt)\b/.test(message),
        `${t.source} ${optIn}: ${message}`,
      );
    }
    outcomes.push({
      template: t.source,
      optIn,
      outcome: result.outcome,
      reason: result.reason,
      ...(result.message ? { message: result.message } : {}),
      problems,
      operations: ops.length,
    });
  }
}

// ---------------------------------------------------------------------------------------
// 3. Through kube-apiserver, with the controllers making the pods
// ---------------------------------------------------------------------------------------

interface ApiResult {
  dryRun: {
    accepted: number;
    /** Rejected by the API server although the same pod without the opt-in is accepted: ours. */
    rejected: number;
    /** Rejected with or without the opt-in: the manifest itself is invalid (a kustomize base, test data). */
    invalidWithoutUs: number;
    refusedByWebhook: number;
    agree: number;
    disagree: string[];
  };
  controllers: {
    created: number;
    podsMade: number;
    failedCreate: number;
    pending: number;
    notCreated: string[];
    messages: string[];
  };
}
let api: ApiResult | undefined;

if (useApi) {
  const { startCluster } = await import('@lifelease/harness/cluster');
  const { registerWebhook, waitUntilActive, apiMessage } =
    await import('../test/integration/webhook/helpers.ts');
  const { startWebhookProcess } = await import('../test/support/webhook-process.ts');
  const cluster = await startCluster();
  const webhook = await startWebhookProcess({ args: ['--reconcile-rbac=false'] });
  try {
    const reg = await registerWebhook(cluster.kubeConfig, {
      name: 'lifelease-corpus',
      url: webhook.url,
      caPem: webhook.caPem,
    });
    const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    const apps = cluster.kubeConfig.makeApiClient(AppsV1Api);
    const batch = cluster.kubeConfig.makeApiClient(BatchV1Api);
    const namespaces: Record<string, string> = {};
    const nsFor = async (project: string, optIn: OptIn) => {
      const key = `${project}/${optIn}`;
      if (!namespaces[key]) {
        namespaces[key] = await cluster.createNamespace(dnsName(`c-${project}`, 30), {
          [reg.selectorKey]: reg.name,
        });
      }
      return namespaces[key];
    };
    for (const t of selected)
      for (const optIn of ['label', 'annotation'] as const) await nsFor(t.project, optIn);
    await waitUntilActive(cluster.kubeConfig, Object.values(namespaces)[0]!);

    const sanitize = (spec: NonNullable<V1Pod['spec']>) => {
      delete spec.priorityClassName;
      delete spec.runtimeClassName;
      delete spec.priority;
    };
    const accounts = new Set<string>();
    const ensureAccount = async (namespace: string, spec: NonNullable<V1Pod['spec']>) => {
      const sa = spec.serviceAccountName ?? spec.serviceAccount;
      if (!sa || accounts.has(`${namespace}/${sa}`)) return;
      accounts.add(`${namespace}/${sa}`);
      try {
        await core.createNamespacedServiceAccount({ namespace, body: { metadata: { name: sa } } });
      } catch {
        // Exists, or an invalid name: the pod creation says so.
      }
    };

    // 3a. The controllers' pod, dry-run: admission (our webhook) and validation.
    const dry: ApiResult['dryRun'] = {
      accepted: 0,
      rejected: 0,
      invalidWithoutUs: 0,
      refusedByWebhook: 0,
      agree: 0,
      disagree: [],
    };
    let k = 0;
    for (const t of selected) {
      for (const optIn of ['label', 'annotation'] as const) {
        const namespace = await nsFor(t.project, optIn);
        const pod = controllerPod(t, optIn, namespace);
        sanitize(pod.spec!);
        await ensureAccount(namespace, pod.spec!);
        const direct = outcomes[k++]!;
        try {
          await core.createNamespacedPod({ namespace, body: pod, dryRun: 'All' });
          dry.accepted++;
          if (direct.outcome === 'patched' || direct.outcome === 'allowed') dry.agree++;
          else dry.disagree.push(`${t.source} ${optIn}: refused directly, accepted by the API server`);
        } catch (err) {
          const message = apiMessage(err);
          if (
            /admission webhook "[^"]*lifelease[^"]*" denied/.test(message) ||
            /inject.lifelease.dev/.test(message)
          ) {
            dry.refusedByWebhook++;
            if (direct.outcome === 'denied') dry.agree++;
            else dry.disagree.push(`${t.source} ${optIn}: ${message}`);
          } else {
            // Ours only if the same pod without the opt-in is accepted.
            const plain = controllerPod(t, optIn, namespace);
            sanitize(plain.spec!);
            delete plain.metadata?.labels?.['leaderElection'];
            delete plain.metadata?.annotations?.['leaderElection'];
            try {
              await core.createNamespacedPod({ namespace, body: plain, dryRun: 'All' });
              dry.rejected++;
              dry.disagree.push(`${t.source} ${optIn}: API server rejected: ${message}`);
            } catch {
              dry.invalidWithoutUs++;
            }
          }
        }
      }
    }

    // 3b. The workloads for real; their controllers make the pods.
    const ctl: ApiResult['controllers'] = {
      created: 0,
      podsMade: 0,
      failedCreate: 0,
      pending: 0,
      notCreated: [],
      messages: [],
    };
    const made: { namespace: string; id: string; source: string }[] = [];
    for (const t of selected) {
      if (!['Deployment', 'StatefulSet', 'Job', 'CronJob', 'ReplicaSet'].includes(t.kind)) continue;
      for (const optIn of ['label', 'annotation'] as const) {
        const namespace = await nsFor(t.project, optIn);
        const template = optedTemplate(t, optIn);
        const id = `${t.id}-${optIn[0]}`;
        template.metadata = {
          ...template.metadata,
          labels: { ...template.metadata?.labels, 'corpus-id': id },
        };
        delete template.metadata.namespace;
        sanitize(template.spec!);
        await ensureAccount(namespace, template.spec!);
        const name = `${dnsName(t.name, 30)}-${id}`;
        const metadata = { name, labels: { 'corpus-id': id } };
        const selector = { matchLabels: { 'corpus-id': id } };
        const docSpec = isRec(t.doc['spec']) ? t.doc['spec'] : {};
        try {
          if (t.kind === 'Deployment')
            await apps.createNamespacedDeployment({
              namespace,
              body: { metadata, spec: { replicas: 1, selector, template } },
            });
          else if (t.kind === 'ReplicaSet')
            await apps.createNamespacedReplicaSet({
              namespace,
              body: { metadata, spec: { replicas: 1, selector, template } },
            });
          else if (t.kind === 'StatefulSet')
            await apps.createNamespacedStatefulSet({
              namespace,
              body: {
                metadata,
                spec: {
                  replicas: 1,
                  selector,
                  template,
                  serviceName: typeof docSpec['serviceName'] === 'string' ? docSpec['serviceName'] : name,
                },
              },
            });
          else {
            // A Job, or a CronJob's run as the Job it would create (the CronJob's name plus a minute).
            const jobName = t.kind === 'CronJob' ? `${dnsName(t.name, 30)}-${id}-29000000` : name;
            template.spec!.restartPolicy =
              template.spec!.restartPolicy === 'Always' ? 'Never' : (template.spec!.restartPolicy ?? 'Never');
            await batch.createNamespacedJob({
              namespace,
              body: {
                metadata: { ...metadata, name: jobName },
                spec: { parallelism: 1, completions: 1, backoffLimit: 0, template },
              },
            });
          }
          ctl.created++;
          made.push({ namespace, id, source: `${t.source} ${optIn}` });
        } catch (err) {
          ctl.notCreated.push(`${t.source} ${optIn}: ${apiMessage(err)}`);
        }
      }
    }
    // Wait until each workload has a pod or a FailedCreate event, within a bound.
    const deadline = Date.now() + 180_000;
    const settled = new Map<string, 'pod' | 'failed'>();
    while (settled.size < made.length && Date.now() < deadline) {
      for (const namespace of new Set(made.map((m) => m.namespace))) {
        const pods = await core.listNamespacedPod({ namespace, labelSelector: 'corpus-id' });
        for (const p of pods.items) {
          const id = p.metadata?.labels?.['corpus-id'];
          if (id) settled.set(id, 'pod');
        }
        const events = await core.listNamespacedEvent({ namespace, fieldSelector: 'reason=FailedCreate' });
        for (const e of events.items) {
          const m = made.find(
            (x) => x.namespace === namespace && (e.involvedObject.name ?? '').includes(x.id),
          );
          if (m && settled.get(m.id) !== 'pod') {
            if (!settled.has(m.id)) ctl.messages.push(`${m.source}: ${e.message ?? ''}`);
            settled.set(m.id, 'failed');
          }
        }
      }
      if (settled.size < made.length) await new Promise((r) => setTimeout(r, 2000));
    }
    for (const m of made) {
      const s = settled.get(m.id);
      if (s === 'pod') ctl.podsMade++;
      else if (s === 'failed') ctl.failedCreate++;
      else ctl.pending++;
    }
    api = { dryRun: dry, controllers: ctl };
    await reg.delete();
  } finally {
    await webhook.stop();
    await cluster.stop();
  }
}

// ---------------------------------------------------------------------------------------
// 4. Report
// ---------------------------------------------------------------------------------------

const byProject = new Map<string, number>();
for (const t of selected) byProject.set(t.project, (byProject.get(t.project) ?? 0) + 1);
const byKind = new Map<string, number>();
for (const t of selected) byKind.set(t.kind, (byKind.get(t.kind) ?? 0) + 1);
const byReason = new Map<string, number>();
for (const o of outcomes)
  byReason.set(`${o.outcome}/${o.reason}`, (byReason.get(`${o.outcome}/${o.reason}`) ?? 0) + 1);

const lines: string[] = [];
lines.push(
  `corpus ${root}: ${selected.length} templates from ${byProject.size} projects, ${outcomes.length} reviews; ${unparsable.length} files not parsable as YAML`,
);
lines.push(`projects: ${[...byProject].map(([p, n]) => `${p} ${n}`).join(', ')}`);
lines.push(`kinds: ${[...byKind].map(([p, n]) => `${p} ${n}`).join(', ')}`);
lines.push(`outcomes: ${[...byReason].map(([p, n]) => `${p} ${n}`).join(', ')}`);
lines.push('direct checks:');
for (const [name, c] of Object.entries(checks)) {
  lines.push(`  ${name.padEnd(30)} ${c.pass} pass, ${c.fail} fail`);
  for (const f of (failures[name] ?? []).slice(0, show)) lines.push(`    - ${f}`);
}
const refusals = outcomes.filter((o) => o.outcome === 'denied');
const messages = new Map<string, number>();
for (const o of refusals)
  messages.set(`${o.reason}: ${o.message}`, (messages.get(`${o.reason}: ${o.message}`) ?? 0) + 1);
lines.push(`refusals (${refusals.length}):`);
for (const [m, n] of [...messages].slice(0, 20)) lines.push(`  ${n} x ${m}`);
if (api) {
  const d = api.dryRun;
  lines.push('through kube-apiserver:');
  lines.push(
    `  dry-run pod CREATE: ${d.accepted} accepted, ${d.refusedByWebhook} refused by the webhook, ${d.rejected} rejected by the API server because of us, ${d.invalidWithoutUs} invalid without us too; ${d.agree} agree with the direct review`,
  );
  for (const x of d.disagree.slice(0, show * 4)) lines.push(`    - ${x}`);
  const c = api.controllers;
  lines.push(
    `  workloads: ${c.created} created, ${c.podsMade} made their pod, ${c.failedCreate} FailedCreate (pods refused), ${c.pending} neither within 180 s; ${c.notCreated.length} not created (the API server rejects the workload itself: invalid manifest, before any webhook)`,
  );
  for (const x of [...c.messages, ...c.notCreated].slice(0, show * 4)) lines.push(`    - ${x}`);
}
process.stdout.write(`${lines.join('\n')}\n`);
if (jsonOut)
  writeFileSync(
    jsonOut,
    `${JSON.stringify({ templates: selected.map((t) => t.source), outcomes, checks, failures, api }, null, 2)}\n`,
  );
const failed =
  Object.values(checks).some((c) => c.fail > 0) ||
  (api !== undefined && (api.dryRun.rejected > 0 || api.dryRun.disagree.length > 0));
process.exitCode = failed ? 1 : 0;
