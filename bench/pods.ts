/**
 * The pods the webhook benchmarks send, in three sizes, opted in or not:
 * - small: a bare pod with one container (the `bare-pod` golden input);
 * - typical: a Deployment's pod with three containers (app, log shipper, metrics exporter),
 *   liveness/readiness probes, env, resources, ports, mounts, managedFields;
 * - large: the typical pod with env grown until the pod's JSON is about 100 KB.
 */
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { OPT_IN_KEY } from '../common/constants.ts';

export type PodSize = 'small' | 'typical' | 'large';
export const POD_SIZES: readonly PodSize[] = ['small', 'typical', 'large'];
export const LARGE_POD_BYTES = 100 * 1024;

function golden(name: string): V1Pod {
  const file = path.resolve(import.meta.dirname, `../test/fixtures/golden/${name}.input.json`);
  return (JSON.parse(readFileSync(file, 'utf8')) as { pod: V1Pod }).pod;
}

function container(name: string, image: string, port: number, env: Record<string, string>): V1Container {
  return {
    name,
    image,
    ports: [{ name: 'http', containerPort: port, protocol: 'TCP' }],
    env: Object.entries(env).map(([k, v]) => ({ name: k, value: v })),
    resources: { requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '256Mi' } },
    livenessProbe: {
      httpGet: { path: '/healthz', port: port, scheme: 'HTTP' },
      periodSeconds: 10,
      timeoutSeconds: 1,
      failureThreshold: 3,
    },
    readinessProbe: {
      httpGet: { path: '/ready', port: port, scheme: 'HTTP' },
      periodSeconds: 5,
      timeoutSeconds: 1,
      failureThreshold: 3,
    },
    volumeMounts: [
      {
        name: 'kube-api-access-x7k2p',
        readOnly: true,
        mountPath: '/var/run/secrets/kubernetes.io/serviceaccount',
      },
    ],
    securityContext: {
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
      runAsNonRoot: true,
      seccompProfile: { type: 'RuntimeDefault' },
    },
    terminationMessagePath: '/dev/termination-log',
    terminationMessagePolicy: 'File',
    imagePullPolicy: 'IfNotPresent',
  };
}

function typical(): V1Pod {
  const base = golden('deployment-pod');
  base.spec!.containers = [
    container('api', 'registry.example/orders-api:1.4.2', 8080, {
      LOG_LEVEL: 'info',
      DATABASE_URL: 'postgres://orders@db.shop.svc:5432/orders',
      CACHE_URL: 'redis://cache.shop.svc:6379/0',
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://otel-collector.observability.svc:4317',
      FEATURE_FLAGS: 'checkout-v2,async-invoices',
      JAVA_TOOL_OPTIONS: '-XX:MaxRAMPercentage=75',
    }),
    container('log-shipper', 'registry.example/fluent-bit:3.1', 2020, {
      FLUENT_OUTPUT: 'loki',
      LOKI_URL: 'http://loki.observability.svc:3100',
    }),
    container('metrics-exporter', 'registry.example/exporter:0.9', 9100, { SCRAPE_INTERVAL: '15s' }),
  ];
  return base;
}

function large(): V1Pod {
  const pod = typical();
  const containers = pod.spec!.containers;
  for (let i = 0; JSON.stringify(pod).length < LARGE_POD_BYTES; i++) {
    containers[i % containers.length]!.env!.push({
      name: `APP_SETTING_${String(i).padStart(4, '0')}`,
      value: `value-${i}-${'x'.repeat(60)}`,
    });
  }
  return pod;
}

/** A fresh copy of the pod of that size; opted in by label or not labelled at all. */
export function benchPod(size: PodSize, optedIn: boolean): V1Pod {
  const pod = size === 'small' ? golden('bare-pod') : size === 'typical' ? typical() : large();
  const labels = { ...(pod.metadata!.labels ?? {}) };
  const annotations = { ...(pod.metadata!.annotations ?? {}) };
  delete labels[OPT_IN_KEY];
  delete annotations[OPT_IN_KEY];
  if (optedIn) labels[OPT_IN_KEY] = 'true';
  pod.metadata = { ...pod.metadata, labels, annotations };
  return pod;
}
