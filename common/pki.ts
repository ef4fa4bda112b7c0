/**
 * Small X.509 toolkit for webhook TLS: a CA, serving and client certificates signed by it,
 * ECDSA P-256 with SHA-256 throughout (fast to generate; accepted by kube-apiserver, etcd and
 * Node's TLS alike). Used by the tests (throwaway CAs), and meant for the webhook's
 * self-managed certificates, hence the injectable clock and explicit validity.
 *
 * Keys are PKCS#8 PEM ("PRIVATE KEY"), certificates PEM; nothing touches the disk.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import type { webcrypto } from 'node:crypto';
import { isIP } from 'node:net';

type CryptoKey = webcrypto.CryptoKey;

x509.cryptoProvider.set(globalThis.crypto);

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY_MS = 86_400_000;
/** Certificates start this much before "now", so a peer whose clock lags a little accepts them. */
const BACKDATE_MS = 5 * 60_000;

export interface KeyPairPem {
  certPem: string;
  keyPem: string;
  notBefore: Date;
  notAfter: Date;
}

export interface CertificateAuthority extends KeyPairPem {
  /** Issues a certificate signed by this CA. */
  issue(options: IssueOptions): Promise<KeyPairPem>;
}

export interface IssueOptions {
  commonName: string;
  /** Subject organizations (for Kubernetes client certificates: the groups). */
  organizations?: string[];
  /** DNS names and IP addresses; IP literals become IP SANs, the rest DNS SANs. */
  altNames?: string[];
  /** `server` (serverAuth) or `client` (clientAuth). */
  usage: 'server' | 'client';
  /** Validity from `now`; default: the CA's default validity. */
  validityMs?: number;
  /** Clock; default `new Date()`. */
  now?: Date;
}

export interface CreateAuthorityOptions {
  /** Default 1 day: most CAs made here are throwaway. */
  validityMs?: number;
  /** Default validity of the certificates it issues; default `validityMs`. */
  issueValidityMs?: number;
  now?: Date;
}

function serialNumber(): string {
  const bytes = globalThis.crypto.getRandomValues(new Uint8Array(16));
  // Positive (high bit clear) and non-zero leading byte, as RFC 5280 asks.
  bytes[0] = ((bytes[0] ?? 0) & 0x7f) | 0x10;
  return Buffer.from(bytes).toString('hex');
}

async function exportKeyPem(key: CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await globalThis.crypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY');
}

function distinguishedName(commonName: string, organizations: string[] = []): string {
  const esc = (v: string) => v.replace(/([,+"\\<>;=#])/g, '\\$1');
  return [`CN=${esc(commonName)}`, ...organizations.map((o) => `O=${esc(o)}`)].join(', ');
}

/** Creates a self-signed CA (basicConstraints CA:true, pathlen 0, keyCertSign). */
export async function createCertificateAuthority(
  commonName: string,
  options: CreateAuthorityOptions = {},
): Promise<CertificateAuthority> {
  const now = options.now ?? new Date();
  const validityMs = options.validityMs ?? DAY_MS;
  const keys = await globalThis.crypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: distinguishedName(commonName),
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter: new Date(now.getTime() + validityMs),
    keys,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return authority(
    cert,
    keys.privateKey,
    await exportKeyPem(keys.privateKey),
    options.issueValidityMs ?? validityMs,
  );
}

/** Loads a CA written earlier (certificate PEM and PKCS#8 key PEM) so it can issue more. */
export async function loadCertificateAuthority(
  certPem: string,
  keyPem: string,
  issueValidityMs = DAY_MS,
): Promise<CertificateAuthority> {
  const cert = new x509.X509Certificate(certPem);
  const key = await globalThis.crypto.subtle.importKey(
    'pkcs8',
    x509.PemConverter.decodeFirst(keyPem),
    ALG,
    true,
    ['sign'],
  );
  return authority(cert, key, keyPem, issueValidityMs);
}

function authority(
  ca: x509.X509Certificate,
  caKey: CryptoKey,
  caKeyPem: string,
  defaultValidityMs: number,
): CertificateAuthority {
  async function issue(options: IssueOptions): Promise<KeyPairPem> {
    const now = options.now ?? new Date();
    const keys = await globalThis.crypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
    const altNames = (options.altNames ?? []).map((n) =>
      isIP(n) ? { type: 'ip' as const, value: n } : { type: 'dns' as const, value: n },
    );
    const notBefore = new Date(now.getTime() - BACKDATE_MS);
    // A certificate never outlives the CA that signed it.
    const notAfter = new Date(
      Math.min(now.getTime() + (options.validityMs ?? defaultValidityMs), ca.notAfter.getTime()),
    );
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serialNumber(),
      subject: distinguishedName(options.commonName, options.organizations),
      issuer: ca.subject,
      notBefore,
      notAfter,
      publicKey: keys.publicKey,
      signingKey: caKey,
      signingAlgorithm: ALG,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension(
          [options.usage === 'server' ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth],
          false,
        ),
        ...(altNames.length > 0 ? [new x509.SubjectAlternativeNameExtension(altNames, false)] : []),
        await x509.AuthorityKeyIdentifierExtension.create(ca.publicKey),
      ],
    });
    return {
      certPem: cert.toString('pem'),
      keyPem: await exportKeyPem(keys.privateKey),
      notBefore,
      notAfter,
    };
  }
  return {
    certPem: ca.toString('pem'),
    keyPem: caKeyPem,
    notBefore: ca.notBefore,
    notAfter: ca.notAfter,
    issue,
  };
}

/**
 * A CA and one serving certificate for `altNames`, in one call: what a webhook test (or a
 * first self-managed start) needs.
 */
export async function createServingCertificate(
  altNames: string[],
  options: { commonName?: string; validityMs?: number; now?: Date } = {},
): Promise<{ ca: CertificateAuthority; serving: KeyPairPem }> {
  const ca = await createCertificateAuthority(`${options.commonName ?? altNames[0] ?? 'server'} CA`, {
    ...(options.validityMs !== undefined ? { validityMs: options.validityMs } : {}),
    ...(options.now ? { now: options.now } : {}),
  });
  const serving = await ca.issue({
    commonName: options.commonName ?? altNames[0] ?? 'server',
    altNames,
    usage: 'server',
    ...(options.now ? { now: options.now } : {}),
  });
  return { ca, serving };
}
