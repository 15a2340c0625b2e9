// The seed document's TypeScript snapshot examples (as plain JS), run against a Quiver server.
// Usage: QUIVER_URL=http://127.0.0.1:PORT node seed_examples.mjs
import { QdrantClient } from "@qdrant/js-client-rest";
import assert from "node:assert/strict";

const url = new URL(process.env.QUIVER_URL);
const client = new QdrantClient({ host: url.hostname, port: Number(url.port) });
const name = "js_collection";

await client.createCollection(name, { vectors: { size: 4, distance: "Cosine" } });
await client.upsert(name, {
  wait: true,
  points: Array.from({ length: 20 }, (_, i) => ({ id: i, vector: [i, 1, 2, 3], payload: { i } })),
});

const snap = await client.createSnapshot(name);
assert.ok(snap.name.endsWith(".snapshot") && snap.checksum.length === 64);
const listed = await client.listSnapshots(name);
assert.deepEqual(listed.map((s) => s.name), [snap.name]);

// recover from a URL (the server downloads from itself), then with a priority
const location = `${url.origin}/collections/${name}/snapshots/${snap.name}`;
assert.equal(await client.recoverSnapshot("js_restored", { location }), true);
assert.equal(await client.recoverSnapshot("js_restored", { location, priority: "snapshot" }), true);
assert.equal((await client.count("js_restored", { exact: true })).count, 20);

const full = await client.createFullSnapshot();
assert.ok(full.name.startsWith("full-snapshot-"));
assert.ok((await client.listFullSnapshots()).some((s) => s.name === full.name));
assert.equal(await client.deleteFullSnapshot(full.name), true);

assert.equal(await client.deleteSnapshot(name, snap.name), true);
assert.deepEqual(await client.listSnapshots(name), []);

// everyday calls, to prove the JS client is happy with the rest of the API too
const hits = await client.query(name, { query: [1, 1, 2, 3], limit: 3, with_payload: true });
assert.equal(hits.points.length, 3);
const page = await client.scroll(name, { limit: 5 });
assert.equal(page.points.length, 5);
assert.equal(page.next_page_offset, 5);
console.log("js seed examples: ok");
