/**
 * The ceiling for the webhook's stack: the same fastify over HTTPS (same key type, TLS
 * floor and body limit), one route that parses the same JSON body and returns a fixed
 * AdmissionReview. Whatever the webhook adds on top of this is its own cost.
 *
 * A request with header `x-patch-bytes: N` gets the fixed review with a patch of N base64
 * characters: an answer as large as the webhook's patched one, to tell what its size costs.
 *
 *   node bench/ceiling-server.ts <cert.pem> <key.pem>   (prints {"port": N} once listening)
 */
import Fastify, { LogController } from 'fastify';
import { readFileSync } from 'node:fs';

const [certFile, keyFile] = process.argv.slice(2);
if (!certFile || !keyFile) throw new Error('usage: node bench/ceiling-server.ts <cert.pem> <key.pem>');

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
app.post('/mutate', (request, reply) => {
  // Parsed by fastify's JSON parser, as the webhook's body is; touch it so it is used.
  if (typeof request.body !== 'object' || request.body === null) return reply.code(400).send({});
  const bytes = request.headers['x-patch-bytes'];
  return reply.send(typeof bytes === 'string' ? withPatch(bytes) : FIXED);
});
await app.listen({ host: '127.0.0.1', port: 0 });
const address = app.server.address();
process.stdout.write(
  `${JSON.stringify({ port: typeof address === 'object' && address ? address.port : 0 })}\n`,
);
const close = () => void app.close().then(() => process.exit(0));
process.once('SIGTERM', close);
process.once('SIGINT', close);
