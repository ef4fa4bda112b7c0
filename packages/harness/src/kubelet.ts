/**
 * The kubelet stand-in's control loop: watches the pods of a namespace and runs one
 * container of each in a pod sandbox as it appears, and stops it (SIGTERM, then SIGKILL
 * after the pod's grace period) once the pod is deleting or gone, as a kubelet would.
 *
 * Pods are listed every `pollMs` rather than watched: a stand-in values simple and certain
 * over efficient.
 *
 * Where it remains, and why (a real node, node.ts, runs the install, helm,
 * snippet, security and pod-lifecycle tests and the demo): system.ts' `installWebhook` for
 * the fault suite's runner (test/chaos, moving to the real node on its own); it needs no
 * root and runs many pods in parallel test files on one control plane, where the host has
 * one node.
 */
import { CoreV1Api, type V1Pod } from '@kubernetes/client-node';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ClusterClient } from './client.ts';
import { PodSandbox } from './pod-sandbox.ts';

export const REPO_ROOT = path.resolve(import.meta.dirname, '../../..');

/**
 * Builds dist/ unless it is there. `npm test` builds once before any test file runs; files
 * never rebuild it themselves, since the build replaces dist/ and another file's pods may be
 * starting or restarting from it at that moment.
 */
export function ensureBuilt(): void {
  if (existsSync(path.join(REPO_ROOT, 'dist/cli.js'))) return;
  execFileSync(process.execPath, ['scripts/build.ts'], { cwd: REPO_ROOT, stdio: 'ignore' });
}

/**
 * Our image's entrypoint on this host: `node dist/cli.js` (run `npm run build` first), for
 * any image named like ours; everything else is refused.
 */
export function lifeleaseEntrypoint(image: string, command: string[] | undefined): string[] {
  if (!/(^|\/)lifelease(:|@|$)/.test(image)) throw new Error(`no stand-in entrypoint for image ${image}`);
  if (command) throw new Error(`container command ${JSON.stringify(command)} is not expected for our image`);
  return [process.execPath, path.join(REPO_ROOT, 'dist/cli.js')];
}

export type KubeletEvent =
  | { type: 'started'; pod: V1Pod; sandbox: PodSandbox }
  | { type: 'stopped'; pod: V1Pod; exit: { code: number | null; signal: NodeJS.Signals | null } }
  | { type: 'error'; pod: V1Pod; error: Error };

export interface KubeletOptions {
  cluster: ClusterClient;
  namespace: string;
  /** Which container to run in each pod. */
  container: string;
  labelSelector?: string;
  entrypoint?: (image: string, command: string[] | undefined) => string[];
  podNetwork?: boolean;
  pollMs?: number;
  onEvent?: (event: KubeletEvent) => void;
}

export class Kubelet {
  readonly sandboxes = new Map<string, PodSandbox>();
  private readonly options: KubeletOptions;
  private readonly core: CoreV1Api;
  private readonly starting = new Map<string, Promise<void>>();
  private readonly stopping = new Set<Promise<void>>();
  private running = false;
  private loop: Promise<void> | undefined;

  constructor(options: KubeletOptions) {
    this.options = options;
    this.core = options.cluster.kubeConfig.makeApiClient(CoreV1Api);
  }

  start(): void {
    this.running = true;
    this.loop = this.run();
  }

  /** The sandbox running `podName`, once started. */
  sandbox(podName: string): PodSandbox | undefined {
    return [...this.sandboxes.values()].find((s) => s.pod.metadata?.name === podName);
  }

  private emit(event: KubeletEvent): void {
    this.options.onEvent?.(event);
  }

  private async run(): Promise<void> {
    const { namespace, labelSelector } = this.options;
    while (this.running) {
      let pods: V1Pod[] = [];
      try {
        pods = (await this.core.listNamespacedPod({ namespace, ...(labelSelector ? { labelSelector } : {}) }))
          .items;
      } catch {
        // The API server may be down on purpose (fault tests): keep the containers running.
        await sleep(this.options.pollMs ?? 100);
        continue;
      }
      const live = new Map(pods.map((p) => [p.metadata!.uid!, p]));
      for (const [uid, pod] of live) {
        if (pod.metadata?.deletionTimestamp || this.sandboxes.has(uid) || this.starting.has(uid)) continue;
        if (pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') continue;
        const started = PodSandbox.start({
          cluster: this.options.cluster,
          pod,
          container: this.options.container,
          entrypoint: this.options.entrypoint ?? lifeleaseEntrypoint,
          ...(this.options.podNetwork ? { podNetwork: true } : {}),
        }).then(
          async (sandbox) => {
            this.starting.delete(uid);
            if (!this.running) {
              await sandbox.stop();
              return;
            }
            this.sandboxes.set(uid, sandbox);
            this.emit({ type: 'started', pod, sandbox });
          },
          (error: Error) => {
            this.starting.delete(uid);
            this.emit({ type: 'error', pod, error });
          },
        );
        this.starting.set(uid, started);
      }
      for (const [uid, sandbox] of this.sandboxes) {
        const pod = live.get(uid);
        if (pod && !pod.metadata?.deletionTimestamp) continue;
        this.sandboxes.delete(uid);
        const stopping = this.stopSandbox(sandbox, pod ?? sandbox.pod).finally(() =>
          this.stopping.delete(stopping),
        );
        this.stopping.add(stopping);
      }
      await sleep(this.options.pollMs ?? 100);
    }
  }

  private async stopSandbox(sandbox: PodSandbox, pod: V1Pod): Promise<void> {
    const grace = (pod.spec?.terminationGracePeriodSeconds ?? 30) * 1000;
    const exit = await sandbox.stop(Math.min(grace, 10_000));
    this.emit({ type: 'stopped', pod, exit });
  }

  /** Stops the loop and every container. */
  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
    await Promise.all([...this.starting.values(), ...this.stopping]);
    await Promise.all([...this.sandboxes.values()].map((s) => s.stop()));
    this.sandboxes.clear();
  }
}
