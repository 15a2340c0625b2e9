// The seed document's snapshot calls (create / list / delete, collection and full storage),
// made with @qdrant/js-client-grpc against Quiver's gRPC port. Prints one JSON line with every
// answer; tests/e2e/test_js_grpc_client.py checks it against what REST lists.
// Usage: QUIVER_HOST=127.0.0.1 QUIVER_GRPC_PORT=PORT QUIVER_COLLECTION=name node seed_grpc.mjs
import { QdrantClient } from "@qdrant/js-client-grpc";
import assert from "node:assert/strict";

const client = new QdrantClient({
  host: process.env.QUIVER_HOST ?? "127.0.0.1",
  port: Number(process.env.QUIVER_GRPC_PORT),
});
const snapshots = client.api("snapshots");
const name = process.env.QUIVER_COLLECTION;

// SnapshotDescription → plain JSON (int64 size is a bigint; creation_time a Timestamp)
const described = (d) => ({
  name: d.name,
  size: Number(d.size),
  checksum: d.checksum ?? null,
  creation_time: d.creationTime
    ? new Date(Number(d.creationTime.seconds) * 1000 + d.creationTime.nanos / 1e6).toISOString()
    : null,
});

// collection snapshots: create two, list, delete one, list again
const kept = (await snapshots.create({ collectionName: name })).snapshotDescription;
const gone = (await snapshots.create({ collectionName: name })).snapshotDescription;
const listed = (await snapshots.list({ collectionName: name })).snapshotDescriptions;
assert.deepEqual(listed.map((s) => s.name).sort(), [kept.name, gone.name].sort());
const deleted = await snapshots.delete({ collectionName: name, snapshotName: gone.name });
assert.equal(typeof deleted.time, "number");
const after = (await snapshots.list({ collectionName: name })).snapshotDescriptions;

// full storage snapshots: create two, delete one, list
const full = (await snapshots.createFull({})).snapshotDescription;
const fullGone = (await snapshots.createFull({})).snapshotDescription;
await snapshots.deleteFull({ snapshotName: fullGone.name });
const fullListed = (await snapshots.listFull({})).snapshotDescriptions;

// an error keeps its gRPC code and Qdrant's message
let missing = null;
try {
  await snapshots.list({ collectionName: `${name}_missing` });
} catch (err) {
  missing = { code: err.code, message: err.rawMessage ?? err.message };
}

console.log(JSON.stringify({
  created: [described(kept), described(gone)],
  listed: listed.map(described),
  deleted: gone.name,
  listed_after_delete: after.map(described),
  full_created: described(full),
  full_deleted: fullGone.name,
  full_listed: fullListed.map(described),
  missing,
}));
process.exit(0); // the client keeps its HTTP/2 session open
