/**
 * The local control plane's own cost: start-to-ready time (until the garbage collector is
 * proven to work) over several starts, and each process's idle RSS.
 *
 *   node bench/control-plane.ts [runs=5]
 */
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { startCluster } from '@lifelease/harness/cluster';
import { writeReport } from './lib.ts';
import { numberArgs } from './args.ts';

const { runs } = numberArgs('control-plane', [{ name: 'runs', default: 5 }]);
const rssMiB = (pid: number) =>
  Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

// The first start may build the binaries; keep it out of the figures.
await (await startCluster()).stop();

const times: number[] = [];
let rss: Record<string, number> = {};
for (let i = 0; i < runs; i++) {
  const t0 = performance.now();
  const cluster = await startCluster();
  times.push(performance.now() - t0);
  if (i === runs - 1) {
    await sleep(10_000);
    rss = {
      etcd: rssMiB(cluster.etcd.pid!),
      'kube-apiserver': rssMiB(cluster.apiServer.pid!),
      'kube-controller-manager': rssMiB(cluster.controllerManager.pid!),
    };
  }
  await cluster.stop();
}
times.sort((a, b) => a - b);
const q = (p: number) => times[Math.min(times.length - 1, Math.floor(p * times.length))]! / 1000;
console.log(
  `start-to-ready over ${runs} runs: min ${q(0).toFixed(2)} s, median ${q(0.5).toFixed(2)} s, max ${q(1).toFixed(2)} s`,
);
for (const [name, mib] of Object.entries(rss))
  console.log(`idle RSS ${name.padEnd(24)} ${mib.toFixed(0)} MiB`);
console.log(
  `idle RSS total                   ${Object.values(rss)
    .reduce((a, b) => a + b, 0)
    .toFixed(0)} MiB`,
);
writeReport('control-plane', {
  command: `node bench/control-plane.ts ${runs}`,
  startToReadySeconds: { min: q(0), median: q(0.5), max: q(1), runs },
  idleRssMiB: rss,
});
