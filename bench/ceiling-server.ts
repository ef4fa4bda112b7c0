/**
 * The ceiling for the webhook's stack: the same fastify over HTTPS (same key type, TLS
 * floor and body limit), one route that parses the same JSON body and returns a fixed
 * AdmissionReview. Whatever the webhook adds on top of this is its own cost.
 *
 * A request with header `x-patch-bytes: N` gets the fixed review with a patch of N base64
 * characters: an answer as large as the webhook's patched one, to tell what its size costs.
 * With a third argument, a file holding a base64 JSON patch, every review gets that patch:
 * registered with a real API server (bench/pod-create.ts), it is a webhook that does no work
 * but whose answer costs the API server what the webhook's does.
 *
 * The review's `uid` is echoed, as the API server requires (any webhook does that much).
 *
 *   node bench/ceiling-server.ts <cert.pem> <key.pem> [patch.b64]   (prints {"port": N} once listening)
 */
import Fastify, { LogController } from 'fastify';
import { readFileSync } from 'node:fs';

const [certFile, keyFile, patchFile] = process.argv.slice(2);
if (!certFile || !keyFile)
  throw new Error('usage: node bench/ceiling-server.ts <cert.pem> <key.pem> [patch.b64]');
const fixedPatch = patchFile ? readFileSync(patchFile, 'utf8').trim() : undefined;
if (fixedPatch === '') throw new Error(`${patchFile} is empty: give it a base64 JSON patch`);

const FIXED = {
  apiVersion: 'admission.k8s.io/v1',
  kind: 'AdmissionReview',
  response: { uid: '00000000-0000-4000-8000-000000000000', allowed: true },
};

const app = Fastify({
  logController: new LogController({ disableRequestLogging: true }),
  bodyLimit: 7 * 1024 * 1024,
  https: { cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8'), minVersion: 'TLSv1.2' },
});
const padded = new Map<string, unknown>();
function withPatch(bytes: string): unknown {
  let review = padded.get(bytes);
  if (review === undefined) {
    const patch = 'A'.repeat(Number(bytes));
    review = { ...FIXED, response: { ...FIXED.response, patchType: 'JSONPatch', patch } };
    padded.set(bytes, review);
  }
  return review;
}
const withFixedPatch =
  fixedPatch === undefined
    ? undefined
    : { ...FIXED, response: { ...FIXED.response, patchType: 'JSONPatch', patch: fixedPatch } };
app.post('/mutate', (request, reply) => {
  // Parsed by fastify's JSON parser, as the webhook's body is.
  const body = request.body as { request?: { uid?: unknown } } | null;
  if (typeof body !== 'object' || body === null) return reply.code(400).send({});
  const uid = typeof body.request?.uid === 'string' ? body.request.uid : FIXED.response.uid;
  const bytes = request.headers['x-patch-bytes'];
  const review = (withFixedPatch ?? (typeof bytes === 'string' ? withPatch(bytes) : FIXED)) as typeof FIXED;
  return reply.send({ ...review, response: { ...review.response, uid } });
});
await app.listen({ host: '127.0.0.1', port: 0 });
const address = app.server.address();
process.stdout.write(
  `${JSON.stringify({ port: typeof address === 'object' && address ? address.port : 0 })}\n`,
);
const close = () => void app.close().then(() => process.exit(0));
process.once('SIGTERM', close);
process.once('SIGINT', close);
