/**
 * A one-layer OCI image archive written straight from a folder (a root filesystem), with
 * no builder and no registry: the layer is a reproducible tar of the folder, and the
 * archive carries the `io.containerd.image.name` annotation so `ctr images import` stores
 * it under exactly the name a pod spec uses. Used for the pause (sandbox) image and small
 * test images.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

export interface ImageConfig {
  Entrypoint?: string[];
  Cmd?: string[];
  Env?: string[];
  User?: string;
  WorkingDir?: string;
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** Writes `out` (a tar in OCI image layout) holding `rootfs` as the image `name`. */
export function writeOciArchive(options: {
  rootfs: string;
  name: string;
  out: string;
  config?: ImageConfig;
}): void {
  const work = mkdtempSync(path.join(tmpdir(), 'lifelease-oci-'));
  try {
    const blobs = path.join(work, 'blobs', 'sha256');
    mkdirSync(blobs, { recursive: true });
    const blob = (data: Buffer): { digest: string; size: number } => {
      const hex = sha256(data);
      writeFileSync(path.join(blobs, hex), data);
      return { digest: `sha256:${hex}`, size: data.length };
    };
    // Reproducible: sorted names, a fixed time and owner, so the same folder is the same digest.
    const layerFile = path.join(work, 'layer.tar');
    execFileSync('tar', [
      '-C',
      options.rootfs,
      '--sort=name',
      '--mtime=@0',
      '--owner=0',
      '--group=0',
      '--numeric-owner',
      '-cf',
      layerFile,
      '.',
    ]);
    const layer = blob(readFileSync(layerFile));
    rmSync(layerFile);
    const config = blob(
      Buffer.from(
        JSON.stringify({
          architecture: 'amd64',
          os: 'linux',
          config: options.config ?? {},
          rootfs: { type: 'layers', diff_ids: [layer.digest] },
        }),
      ),
    );
    const manifest = blob(
      Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
          layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...layer }],
        }),
      ),
    );
    const tag = options.name.slice(options.name.lastIndexOf(':') + 1);
    writeFileSync(
      path.join(work, 'index.json'),
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.index.v1+json',
        manifests: [
          {
            mediaType: 'application/vnd.oci.image.manifest.v1+json',
            ...manifest,
            annotations: {
              'io.containerd.image.name': options.name,
              'org.opencontainers.image.ref.name': tag,
            },
          },
        ],
      }),
    );
    writeFileSync(path.join(work, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    const tmpOut = `${options.out}.tmp`;
    execFileSync('tar', ['-C', work, '--sort=name', '-cf', tmpOut, 'oci-layout', 'index.json', 'blobs']);
    renameSync(tmpOut, options.out);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
