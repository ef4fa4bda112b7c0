/**
 * The serving certificate, from files, reloaded when they change. Kubernetes updates a
 * mounted Secret by swapping a symlink, cert-manager and our own rotation rewrite both files,
 * and file-watch events are unreliable across all of these; so the files are re-read on an
 * interval and compared by content, which is cheap (two small files) and always right.
 *
 * A changed pair is validated (the key must match the certificate) before it replaces the
 * server's secure context with `tls.Server#setSecureContext`: new connections use it at
 * once, established keep-alive connections carry on undisturbed. A half-written rotation
 * (new certificate, old key) is ignored until the next check finds a consistent pair.
 */
import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createSecureContext, type SecureContextOptions, type Server as TlsServer } from 'node:tls';

/** TLS 1.2 and 1.3 only. */
export const MIN_TLS_VERSION = 'TLSv1.2';

export interface CertificatePair {
  cert: string;
  key: string;
  notBefore: Date;
  notAfter: Date;
  /** SHA-256 fingerprint of the leaf, for logs. */
  fingerprint: string;
}

export type ReloadResult =
  { kind: 'unchanged' } | { kind: 'reloaded'; pair: CertificatePair } | { kind: 'failed'; error: Error };

export interface CertificateReloaderOptions {
  certFile: string;
  keyFile: string;
  intervalMs: number;
  /** Called after each check that found something (a reload or a failure). */
  onResult?: (result: ReloadResult) => void;
}

/** Options for `https.createServer` / `setSecureContext` from a pair. */
export function secureContextOptions(pair: { cert: string; key: string }): SecureContextOptions {
  return { cert: pair.cert, key: pair.key, minVersion: MIN_TLS_VERSION };
}

/** Reads and validates a certificate and key; throws with a message naming the files. */
export async function loadCertificatePair(certFile: string, keyFile: string): Promise<CertificatePair> {
  let cert: string;
  let key: string;
  try {
    [cert, key] = await Promise.all([readFile(certFile, 'utf8'), readFile(keyFile, 'utf8')]);
  } catch (err) {
    throw new Error(`cannot read the TLS files: ${(err as Error).message}`, { cause: err });
  }
  try {
    // Throws on unparsable PEM and on a key that does not match the certificate.
    createSecureContext(secureContextOptions({ cert, key }));
    const leaf = new X509Certificate(cert);
    return {
      cert,
      key,
      notBefore: new Date(leaf.validFrom),
      notAfter: new Date(leaf.validTo),
      fingerprint: leaf.fingerprint256,
    };
  } catch (err) {
    throw new Error(
      `${certFile} and ${keyFile} are not a valid certificate and key: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
}

export class CertificateReloader {
  #pair: CertificatePair;
  #options: CertificateReloaderOptions;
  #server: TlsServer | undefined;
  #timer: NodeJS.Timeout | undefined;
  #checking: Promise<ReloadResult> | undefined;

  private constructor(pair: CertificatePair, options: CertificateReloaderOptions) {
    this.#pair = pair;
    this.#options = options;
  }

  /** Loads the pair once (failing loudly when it is unusable); call `start` to keep it fresh. */
  static async load(options: CertificateReloaderOptions): Promise<CertificateReloader> {
    return new CertificateReloader(await loadCertificatePair(options.certFile, options.keyFile), options);
  }

  get current(): CertificatePair {
    return this.#pair;
  }

  /** Starts checking the files every `intervalMs`, applying changes to `server`. */
  start(server: TlsServer): void {
    this.#server = server;
    this.stop();
    this.#timer = setInterval(() => void this.check(), this.#options.intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Re-reads the files now; one check at a time. */
  check(): Promise<ReloadResult> {
    this.#checking ??= this.#check().finally(() => {
      this.#checking = undefined;
    });
    return this.#checking;
  }

  async #check(): Promise<ReloadResult> {
    let result: ReloadResult;
    try {
      const [cert, key] = await Promise.all([
        readFile(this.#options.certFile, 'utf8'),
        readFile(this.#options.keyFile, 'utf8'),
      ]);
      if (cert === this.#pair.cert && key === this.#pair.key) return { kind: 'unchanged' };
      const pair = await loadCertificatePair(this.#options.certFile, this.#options.keyFile);
      // Files may have changed again between the two reads; what was validated is applied.
      this.#server?.setSecureContext(secureContextOptions(pair));
      this.#pair = pair;
      result = { kind: 'reloaded', pair };
    } catch (err) {
      result = { kind: 'failed', error: err as Error };
    }
    this.#options.onResult?.(result);
    return result;
  }
}
