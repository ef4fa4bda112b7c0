/**
 * Throwaway certificates for a local control plane: a CA, serving certificates, client
 * certificates and a service-account signing key. ECDSA P-256 throughout: fast to generate,
 * and accepted by etcd, kube-apiserver and Node's TLS alike.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { generateKeyPairSync, webcrypto } from 'node:crypto';
import { isIP } from 'node:net';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

type CryptoKey = webcrypto.CryptoKey;

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

export interface KeyPairPem {
  certPem: string;
  keyPem: string;
}

export interface CertificateAuthority extends KeyPairPem {
  /** Issues a certificate signed by this CA. */
  issue(options: IssueOptions): Promise<KeyPairPem>;
}

export interface IssueOptions {
  commonName: string;
  /** Subject organizations; for Kubernetes client certificates these are the groups. */
  organizations?: string[];
  /** DNS names and IP addresses; IPs are recognised and written as IP SANs. */
  altNames?: string[];
  usage: 'server' | 'client';
  validityDays?: number;
}

function serial(): string {
  return Buffer.from(webcrypto.getRandomValues(new Uint8Array(16)))
    .toString('hex')
    .replace(/^[89a-f]/, '1');
}

async function exportKeyPem(key: CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode(der, 'PRIVATE KEY');
}

function subject(commonName: string, organizations: string[] = []): string {
  // DN strings are comma separated; escape what would split them.
  const esc = (v: string) => v.replace(/([,+"\\<>;=])/g, '\\$1');
  return [`CN=${esc(commonName)}`, ...organizations.map((o) => `O=${esc(o)}`)].join(', ');
}

/** Creates a self-signed CA valid for `validityDays` (default 1 day: it is throwaway). */
export async function createCertificateAuthority(
  commonName: string,
  validityDays = 1,
): Promise<CertificateAuthority> {
  const keys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
  const now = new Date();
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: subject(commonName),
    notBefore: new Date(now.getTime() - 60_000),
    notAfter: new Date(now.getTime() + validityDays * 86_400_000),
    keys,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return authority(ca, keys.privateKey, await exportKeyPem(keys.privateKey), validityDays);
}

/** Loads a CA written earlier (`certPem`, PKCS#8 `keyPem`) so it can issue more certificates. */
export async function loadCertificateAuthority(
  certPem: string,
  keyPem: string,
): Promise<CertificateAuthority> {
  const ca = new x509.X509Certificate(certPem);
  const key = await webcrypto.subtle.importKey('pkcs8', x509.PemConverter.decodeFirst(keyPem), ALG, true, [
    'sign',
  ]);
  return authority(ca, key, keyPem, 1);
}

function authority(
  ca: x509.X509Certificate,
  caKey: CryptoKey,
  caKeyPem: string,
  validityDays: number,
): CertificateAuthority {
  async function issue(options: IssueOptions): Promise<KeyPairPem> {
    const leafKeys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
    const issued = new Date();
    const altNames = (options.altNames ?? []).map((n) =>
      isIP(n) ? { type: 'ip' as const, value: n } : { type: 'dns' as const, value: n },
    );
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial(),
      subject: subject(options.commonName, options.organizations),
      issuer: ca.subject,
      notBefore: new Date(issued.getTime() - 60_000),
      notAfter: new Date(issued.getTime() + (options.validityDays ?? validityDays) * 86_400_000),
      publicKey: leafKeys.publicKey,
      signingKey: caKey,
      signingAlgorithm: ALG,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(
          x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment,
          true,
        ),
        new x509.ExtendedKeyUsageExtension(
          [options.usage === 'server' ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth],
          false,
        ),
        ...(altNames.length > 0 ? [new x509.SubjectAlternativeNameExtension(altNames, false)] : []),
        await x509.AuthorityKeyIdentifierExtension.create(ca.publicKey),
      ],
    });
    return { certPem: cert.toString('pem'), keyPem: await exportKeyPem(leafKeys.privateKey) };
  }
  return { certPem: ca.toString('pem'), keyPem: caKeyPem, issue };
}

/** A key pair for signing service-account tokens (kube-apiserver takes PKCS#8 and SPKI PEM). */
export function createServiceAccountKeyPair(): { privateKeyPem: string; publicKeyPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return {
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}
