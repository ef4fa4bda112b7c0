/**
 * createPatch: for any two JSON documents the patch turns the first into the second, and an
 * insertion into a long array costs a few operations, not one per shifted element.
 */
import fc from 'fast-check';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  applyPatch,
  createPatch,
  preSerialized,
  serializePatch,
  type Operation,
} from '../../../webhook/patch.ts';

const NUM_RUNS = Number(process.env['FC_NUM_RUNS'] ?? 400);

// Small key and value alphabets, so that documents share structure and diffs are interesting.
const key = fc.constantFrom('a', 'b', 'c', 'x/y', 'm~n', '0', '');
const { tree } = fc.letrec<{ tree: unknown }>((tie) => ({
  tree: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constantFrom(null, true, false, 0, 1, 'v', 'w'),
    fc.array(tie('tree'), { maxLength: 5 }),
    fc.dictionary(key, tie('tree'), { maxKeys: 4 }),
  ),
}));
/** As it comes off the wire (plain objects). */
const json = tree.map((t) => JSON.parse(JSON.stringify(t)) as unknown);
/** A document and an edited copy (insertions, removals and changes inside arrays). */
const editedArray = fc
  .tuple(fc.array(json, { maxLength: 8 }), fc.array(fc.tuple(fc.nat(8), fc.nat(2), json), { maxLength: 4 }))
  .map(([items, edits]) => {
    const b = structuredClone(items);
    for (const [at, kind, value] of edits) {
      const i = Math.min(at, b.length);
      if (kind === 0) b.splice(i, 0, value);
      else if (kind === 1 && b.length > 0) b.splice(Math.min(i, b.length - 1), 1);
      else if (b.length > 0) b[Math.min(i, b.length - 1)] = value;
    }
    return [{ spec: { items } }, { spec: { items: b } }] as const;
  });

describe('createPatch', () => {
  test('turns any document into any other (property)', () => {
    fc.assert(
      fc.property(json, json, (a, b) => {
        const doc = { root: a };
        const target = { root: b };
        assert.deepEqual(applyPatch(doc, createPatch(doc, target)), target);
      }),
      { numRuns: NUM_RUNS },
    );
  });

  test('turns an array into an edited copy of it (property)', () => {
    fc.assert(
      fc.property(editedArray, ([a, b]) => {
        assert.deepEqual(applyPatch(a, createPatch(a, b)), b);
      }),
      { numRuns: NUM_RUNS },
    );
  });

  test('equal documents give no operations', () => {
    fc.assert(
      fc.property(json, (a) => {
        assert.deepEqual(createPatch({ root: a }, structuredClone({ root: a })), []);
      }),
      { numRuns: NUM_RUNS },
    );
  });

  test('prepending to a long array is one add per new element', () => {
    const env = Array.from({ length: 1000 }, (_, i) => ({ name: `V${i}`, value: String(i) }));
    const a = { spec: { containers: [{ name: 'app', env }] } };
    const added = [
      { name: 'ELECTOR_PATH', value: 'localhost:4040' },
      { name: 'ELECTOR_GET_URL', value: 'http://localhost:4040/' },
      { name: 'ELECTOR_SSE_URL', value: 'http://localhost:4040/sse' },
    ];
    const b = { spec: { containers: [{ name: 'app', env: [...added, ...env] }] } };
    const ops = createPatch(a, b);
    assert.deepEqual(ops, [
      { op: 'add', path: '/spec/containers/0/env/0', value: added[0] },
      { op: 'add', path: '/spec/containers/0/env/1', value: added[1] },
      { op: 'add', path: '/spec/containers/0/env/2', value: added[2] },
    ]);
    assert.deepEqual(applyPatch(a, ops), b);
  });

  test('an element inserted in the middle and one removed are one operation each', () => {
    const a = { list: [1, 2, 3, 4, 5] };
    assert.deepEqual(createPatch(a, { list: [1, 2, 9, 3, 4, 5] }), [
      { op: 'add', path: '/list/2', value: 9 },
    ]);
    assert.deepEqual(createPatch(a, { list: [1, 2, 4, 5] }), [{ op: 'remove', path: '/list/2' }]);
  });
});

describe('serializePatch', () => {
  test('is JSON.stringify of the operations, pre-serialised values spliced in (property)', () => {
    const operation = fc.oneof(
      fc.record({ op: fc.constantFrom('add', 'replace', 'test'), path: fc.string(), value: json }),
      fc.record({ op: fc.constant('remove'), path: fc.string() }),
      fc.record({ op: fc.constantFrom('move', 'copy'), from: fc.string(), path: fc.string() }),
    );
    fc.assert(
      fc.property(fc.array(fc.tuple(operation, fc.boolean()), { maxLength: 8 }), (list) => {
        const ops = list.map(([op, registered]) => {
          if (registered && 'value' in op && typeof op.value === 'object' && op.value !== null)
            preSerialized(op.value);
          return op as Operation;
        });
        assert.equal(serializePatch(ops), JSON.stringify(ops));
      }),
      { numRuns: NUM_RUNS },
    );
  });
  test('an operation with its keys in another order is serialised as it is', () => {
    const value = preSerialized({ a: [1, 2] });
    const ops = [
      { path: '/x', op: 'add', value } as Operation,
      { op: 'add', path: '/y', value, extra: 1 } as Operation,
    ];
    assert.equal(serializePatch(ops), JSON.stringify(ops));
  });
});
