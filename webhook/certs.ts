/**
 * Self-managed TLS, the pure part: given what the Secret holds and the time, decide what
 * to do next. No I/O here; `self-managed-tls.ts` reads the Secret, runs the plan, writes it
 * back with optimistic concurrency, and keeps the MutatingWebhookConfiguration's caBundle
 * in step.
 *
 * The Secret holds a CA, a serving certificate signed by it, and during a CA rotation a
 * second CA. Rotations:
 *
 * - Serving certificate renewal (common: once a third of its validity is left, or when the
 *   service names changed): a new certificate from the same CA. The caBundle does not change,
 *   so there is no window in which the API server distrusts us.
 * - CA rotation (rare: once a third of the CA's validity is left) in two phases, so that the
 *   API server trusts every certificate any replica serves at every moment:
 *     1. `stage-ca`: a new CA is stored as `next`; the caBundle becomes old + new CA;
 *        serving continues with the old CA's certificate.
 *     2. `promote-ca`, once `caPropagationMs` has passed since phase 1 (all replicas and the
 *        API server have seen the new bundle): the new CA becomes current, the old one
 *        `previous` (kept in the bundle until it expires), and a new serving certificate is
 *        issued by the new CA.
 */

export interface StoredCa {
  certPem: string;
  keyPem: string;
}

/** What the Secret holds, parsed. Dates are what the certificates say. */
export interface StoredCertificates {
  ca: StoredCa & { notAfter: Date; notBefore: Date };
  serving: {
    certPem: string;
    keyPem: string;
    notBefore: Date;
    notAfter: Date;
    dnsNames: string[];
    issuedByCa: boolean;
  };
  /** A CA staged for rotation, with when it was staged. */
  next?: StoredCa & { stagedAt: Date; notAfter: Date };
  /** The CA rotated out, kept in the bundle until it expires. */
  previous?: { certPem: string; notAfter: Date };
}

export interface RotationPolicy {
  caValidityMs: number;
  servingValidityMs: number;
  /** Renew when less than this fraction of a certificate's validity is left (default 1/3). */
  renewFraction: number;
  /** How long a staged CA sits in the bundle before certificates from it are served. */
  caPropagationMs: number;
  /** Names the serving certificate must cover (the Service's DNS names). */
  dnsNames: string[];
}

export type Plan =
  | { action: 'create'; reason: string }
  | { action: 'renew-serving'; reason: string }
  | { action: 'stage-ca'; reason: string }
  | { action: 'promote-ca'; reason: string }
  | { action: 'none'; nextCheckAt: Date };

function renewAt(notBefore: Date, notAfter: Date, fraction: number): number {
  const lifetime = notAfter.getTime() - notBefore.getTime();
  return notAfter.getTime() - lifetime * fraction;
}

/** The next step for the Secret's certificates at time `now`. */
export function plan(stored: StoredCertificates | undefined, policy: RotationPolicy, now: Date): Plan {
  const t = now.getTime();
  // 1. Nothing usable stored: start from scratch.
  if (!stored) return { action: 'create', reason: 'no certificates stored yet' };
  if (stored.ca.notAfter.getTime() <= t) return { action: 'create', reason: 'the CA has expired' };

  // 2. A staged CA is promoted once the bundle with it has had time to reach everyone.
  if (stored.next) {
    const due = stored.next.stagedAt.getTime() + policy.caPropagationMs;
    if (t >= due)
      return { action: 'promote-ca', reason: 'the staged CA has been in the caBundle long enough' };
  } else if (t >= renewAt(stored.ca.notBefore, stored.ca.notAfter, policy.renewFraction)) {
    // 3. The CA itself nears its end: stage a successor.
    return { action: 'stage-ca', reason: `the CA expires at ${stored.ca.notAfter.toISOString()}` };
  }

  // 4. The serving certificate.
  const s = stored.serving;
  if (!s.issuedByCa)
    return { action: 'renew-serving', reason: 'the serving certificate is not signed by the CA' };
  const missing = policy.dnsNames.filter((n) => !s.dnsNames.includes(n));
  if (missing.length > 0) {
    return {
      action: 'renew-serving',
      reason: `the serving certificate does not cover ${missing.join(', ')}`,
    };
  }
  const servingDue = renewAt(s.notBefore, s.notAfter, policy.renewFraction);
  if (t >= servingDue) {
    return {
      action: 'renew-serving',
      reason: `the serving certificate expires at ${s.notAfter.toISOString()}`,
    };
  }

  const candidates = [servingDue, stored.ca.notAfter.getTime()];
  if (stored.next) candidates.push(stored.next.stagedAt.getTime() + policy.caPropagationMs);
  else candidates.push(renewAt(stored.ca.notBefore, stored.ca.notAfter, policy.renewFraction));
  return { action: 'none', nextCheckAt: new Date(Math.min(...candidates)) };
}

/**
 * The caBundle for the MutatingWebhookConfiguration: the current CA, the staged one (so
 * certificates from it are trusted before they are served) and the previous one while it
 * is still valid (replicas may serve its certificate until they reload). Deterministic, so
 * every replica writes the same bytes.
 */
export function caBundle(stored: StoredCertificates, now: Date): string {
  const pems = [stored.ca.certPem];
  if (stored.next) pems.push(stored.next.certPem);
  if (stored.previous && stored.previous.notAfter.getTime() > now.getTime())
    pems.push(stored.previous.certPem);
  return pems.map((p) => p.trim() + '\n').join('');
}

/** Does a caBundle (PEM concatenation) contain this CA certificate? */
export function bundleContains(bundlePem: string, caPem: string): boolean {
  const norm = (s: string) => s.replace(/\s+/g, '');
  return norm(bundlePem).includes(norm(caPem));
}
