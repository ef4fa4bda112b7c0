/**
 * `npm run image:build`: builds the project image from the Dockerfile (buildah, no daemon,
 * local stand-ins for its base images) and the test app image, as OCI archives in the cache,
 * or finds them there. Prints what it built, with timings, and the archives with their names.
 * See packages/harness/src/image.ts.
 */
import { statSync } from 'node:fs';
import { ensureImages } from '@lifelease/harness/image';

const t0 = performance.now();
try {
  const images = await ensureImages();
  const seconds = (performance.now() - t0) / 1000;
  for (const [step, s] of Object.entries(images.timings)) console.error(`[image] ${step}: ${s} s`);
  console.error(
    `[image] ${Object.keys(images.timings).length > 0 ? 'built' : 'cached'} in ${seconds.toFixed(1)} s`,
  );
  for (const image of [images.project, images.app]) {
    const mib = statSync(image.archive).size / 2 ** 20;
    console.log(`${image.name}\t${image.archive}\t${mib.toFixed(1)} MiB`);
  }
  console.error('[image] load into containerd: ctr -n k8s.io images import <archive>');
} catch (err) {
  console.error(`[image] ${(err as Error).message}`);
  process.exit(1);
}
