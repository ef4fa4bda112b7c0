/**
 * Self-managed TLS, the Secret's layout and the carrying out of a plan: how the
 * certificates of `certs.ts` are stored in a `kubernetes.io/tls` Secret (and read back),
 * and the certificates each planned action issues. No API calls here: `self-managed-tls.ts`
 * reads and writes the Secret.
 */
import type { V1OwnerReference, V1Secret } from '@kubernetes/client-node';
import { X509Certificate } from 'node:crypto';
import { DOMAIN } from '../common/constants.ts';
import { createCertificateAuthority, loadCertificateAuthority, type KeyPairPem } from '../common/pki.ts';
import type { Plan, RotationPolicy, StoredCertificates } from './certs.ts';

const KEY = {
  cert: 'tls.crt',
  key: 'tls.key',
  caCert: 'ca.crt',
  caKey: 'ca.key',
  nextCaCert: 'next-ca.crt',
  nextCaKey: 'next-ca.key',
  previousCaCert: 'previous-ca.crt',
} as const;
const ANNOTATION_NEXT_STAGED_AT = `${DOMAIN}/next-ca-staged-at`;

const b64 = (s: string) => Buffer.from(s).toString('base64');
const unb64 = (s: string | undefined) =>
  s === undefined ? undefined : Buffer.from(s, 'base64').toString('utf8');

/** Parses the Secret; undefined when anything essential is missing or unreadable. */
export function parseSecret(secret: V1Secret | undefined): StoredCertificates | undefined {
  const d = secret?.data ?? {};
  const [certPem, keyPem, caPem, caKeyPem] = [d[KEY.cert], d[KEY.key], d[KEY.caCert], d[KEY.caKey]].map(
    unb64,
  );
  if (!certPem || !keyPem || !caPem || !caKeyPem) return undefined;
  try {
    const ca = new X509Certificate(caPem);
    const serving = new X509Certificate(certPem);
    const dnsNames = (serving.subjectAltName ?? '')
      .split(', ')
      .filter((n) => n.startsWith('DNS:'))
      .map((n) => n.slice(4));
    const stored: StoredCertificates = {
      ca: {
        certPem: caPem,
        keyPem: caKeyPem,
        notBefore: new Date(ca.validFrom),
        notAfter: new Date(ca.validTo),
      },
      serving: {
        certPem,
        keyPem,
        notBefore: new Date(serving.validFrom),
        notAfter: new Date(serving.validTo),
        dnsNames,
        issuedByCa: serving.checkIssued(ca) && serving.verify(ca.publicKey),
      },
    };
    const nextPem = unb64(d[KEY.nextCaCert]);
    const nextKey = unb64(d[KEY.nextCaKey]);
    const stagedAt = secret?.metadata?.annotations?.[ANNOTATION_NEXT_STAGED_AT];
    if (nextPem && nextKey && stagedAt && !Number.isNaN(Date.parse(stagedAt))) {
      stored.next = {
        certPem: nextPem,
        keyPem: nextKey,
        stagedAt: new Date(stagedAt),
        notAfter: new Date(new X509Certificate(nextPem).validTo),
      };
    }
    const previousPem = unb64(d[KEY.previousCaCert]);
    if (previousPem)
      stored.previous = {
        certPem: previousPem,
        notAfter: new Date(new X509Certificate(previousPem).validTo),
      };
    return stored;
  } catch {
    return undefined;
  }
}

/**
 * The MutatingWebhookConfiguration whose caBundle trusts the Secret's CA: the Secret's owner,
 * so that deleting the configuration (`helm uninstall`, `kubectl delete -k`) has the garbage
 * collector delete the Secret, which the webhook made at run time and no installer knows of.
 */
export interface SecretOwner {
  name: string;
  uid: string;
}

/** The owner reference the Secret carries for `owner` (no blockOwnerDeletion: no extra grant). */
function ownerReference(owner: SecretOwner): V1OwnerReference {
  return {
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'MutatingWebhookConfiguration',
    name: owner.name,
    uid: owner.uid,
  };
}

const isConfigReference = (r: V1OwnerReference) =>
  r.kind === 'MutatingWebhookConfiguration' && r.apiVersion.startsWith('admissionregistration.k8s.io/');

/**
 * The owner references to write on the Secret (`secret` as read, undefined when absent): its
 * own, with `owner` (when the configuration exists) in place of any reference to a
 * MutatingWebhookConfiguration (a recreated one has a new uid). `adds`: they differ from the
 * Secret's, which lacks its owner.
 */
export function ownerReferencesFor(
  secret: V1Secret | undefined,
  owner: SecretOwner | undefined,
): { ownerReferences: V1OwnerReference[] | undefined; adds: boolean } {
  const own = secret?.metadata?.ownerReferences;
  if (!owner || own?.some((r) => isConfigReference(r) && r.uid === owner.uid))
    return { ownerReferences: own, adds: false };
  return {
    ownerReferences: [...(own ?? []).filter((r) => !isConfigReference(r)), ownerReference(owner)],
    adds: true,
  };
}

/**
 * The Secret to write for `stored`, carrying `resourceVersion` (the version the change was
 * computed from) so that of two replicas writing at once exactly one succeeds, and its owner
 * references ({@link ownerReferencesFor}).
 */
export function secretFor(
  s: StoredCertificates,
  meta: {
    name: string;
    namespace: string;
    resourceVersion?: string | undefined;
    ownerReferences?: V1OwnerReference[] | undefined;
  },
): V1Secret {
  const data: Record<string, string> = {
    [KEY.cert]: b64(s.serving.certPem),
    [KEY.key]: b64(s.serving.keyPem),
    [KEY.caCert]: b64(s.ca.certPem),
    [KEY.caKey]: b64(s.ca.keyPem),
  };
  const annotations: Record<string, string> = {};
  if (s.next) {
    data[KEY.nextCaCert] = b64(s.next.certPem);
    data[KEY.nextCaKey] = b64(s.next.keyPem);
    annotations[ANNOTATION_NEXT_STAGED_AT] = s.next.stagedAt.toISOString();
  }
  if (s.previous) data[KEY.previousCaCert] = b64(s.previous.certPem);
  return {
    metadata: {
      name: meta.name,
      namespace: meta.namespace,
      labels: { 'app.kubernetes.io/managed-by': 'lifelease' },
      annotations,
      ...(meta.resourceVersion ? { resourceVersion: meta.resourceVersion } : {}),
      ...(meta.ownerReferences?.length ? { ownerReferences: meta.ownerReferences } : {}),
    },
    type: 'kubernetes.io/tls',
    data,
  };
}

/** The certificates after carrying out `p` on `stored` at `now` (new keys are generated). */
export async function carryOut(
  p: Exclude<Plan, { action: 'none' }>,
  stored: StoredCertificates | undefined,
  policy: RotationPolicy,
  now: Date,
): Promise<StoredCertificates> {
  const issueServing = async (caCert: string, caKey: string): Promise<KeyPairPem> => {
    const ca = await loadCertificateAuthority(caCert, caKey, policy.servingValidityMs);
    return ca.issue({
      commonName: policy.dnsNames[0] ?? 'webhook',
      altNames: policy.dnsNames,
      usage: 'server',
      now,
    });
  };
  const newCa = () =>
    createCertificateAuthority(`lifelease webhook CA ${now.toISOString()}`, {
      validityMs: policy.caValidityMs,
      now,
    });
  const serving = (pair: KeyPairPem) => ({
    certPem: pair.certPem,
    keyPem: pair.keyPem,
    notBefore: pair.notBefore,
    notAfter: pair.notAfter,
    dnsNames: policy.dnsNames,
    issuedByCa: true,
  });

  if (p.action === 'create' || !stored) {
    const ca = await newCa();
    return {
      ca: { certPem: ca.certPem, keyPem: ca.keyPem, notBefore: ca.notBefore, notAfter: ca.notAfter },
      serving: serving(await issueServing(ca.certPem, ca.keyPem)),
    } satisfies StoredCertificates;
  }
  if (p.action === 'renew-serving') {
    return { ...stored, serving: serving(await issueServing(stored.ca.certPem, stored.ca.keyPem)) };
  }
  if (p.action === 'stage-ca') {
    const ca = await newCa();
    return {
      ...stored,
      next: { certPem: ca.certPem, keyPem: ca.keyPem, stagedAt: now, notAfter: ca.notAfter },
    };
  }
  // promote-ca
  const next = stored.next!;
  return {
    ca: {
      certPem: next.certPem,
      keyPem: next.keyPem,
      notBefore: new Date(new X509Certificate(next.certPem).validFrom),
      notAfter: next.notAfter,
    },
    serving: serving(await issueServing(next.certPem, next.keyPem)),
    previous: { certPem: stored.ca.certPem, notAfter: stored.ca.notAfter },
  };
}
