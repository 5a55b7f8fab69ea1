'use strict';
// The Node.js client against a real server: checks and matches, a BulkCheck stream with a bad
// item that goes on, ListClusters paging, errors with their google.rpc details decoded,
// deadlines, bearer tokens, and retries on UNAVAILABLE.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');

const { DedupClient, DedupError, grpc } = require('..');
const { startServer, photos } = require('./helpers');

let server;
let client;
let images;

before(async () => {
  images = photos();
  server = await startServer();
  client = new DedupClient(server.target);
});

after(async () => {
  if (client) client.close();
  if (server) assert.equal(await server.stop(), 0, server.output.join(''));
});

test('CheckDuplicate stores a photo and finds its copy', async () => {
  const stored = await client.checkDuplicate({ image_id: 'astronaut', image: images.astronaut, add_to_index: true });
  assert.equal(stored.stored, true);
  assert.equal(stored.is_duplicate, false);
  const copy = await client.checkDuplicate({ image: images['astronaut-small'] });
  assert.equal(copy.is_duplicate, true);
  assert.equal(copy.matches[0].image_id, 'astronaut');
  assert.ok(copy.matches[0].similarity > copy.threshold);
  assert.equal(copy.stored, false);
});

test('BulkCheck answers every item in order; a bad item gets its own error and the stream goes on', async () => {
  const requests = [
    { image_id: 'coffee', image: images.coffee, add_to_index: true },
    { image_id: 'garbage', image: Buffer.from('not an image at all'), add_to_index: true },
    { image_id: 'coffee-flip', image: images['coffee-flip'], add_to_index: true },
    { image_id: 'chelsea', image: images.chelsea, add_to_index: true },
    { image_id: 'chelsea-small', image: images['chelsea-small'], add_to_index: true },
  ];
  const got = [];
  for await (const r of client.bulkCheck(requests)) got.push(r);
  assert.deepEqual(got.map((r) => Number(r.index)), [0, 1, 2, 3, 4]);
  assert.deepEqual(got.map((r) => r.outcome), ['result', 'error', 'result', 'result', 'result']);
  const bad = got[1].error;
  assert.equal(bad.code, grpc.status.INVALID_ARGUMENT);
  const badRequest = bad.details.find((d) => d.type === 'google.rpc.BadRequest');
  assert.equal(badRequest.field_violations[0].field, 'image');
  assert.ok(bad.details.some((d) => d.type === 'google.rpc.ErrorInfo' && d.domain === 'imgdedup'));
  assert.equal(got[2].result.is_duplicate, true);
  assert.equal(got[2].result.matches[0].image_id, 'coffee');
  assert.equal(got[4].result.matches[0].image_id, 'chelsea');
});

test('BulkCheck: a failure in the caller\'s requests ends the stream with that error, not a hang', async () => {
  async function* requests() {
    yield { image_id: 'b-ok', image: images.astronaut };
    throw new Error('could not read the next file');
  }
  const got = [];
  await assert.rejects(async () => {
    for await (const r of client.bulkCheck(requests(), { deadlineMs: 60000 })) got.push(r);
  }, /could not read the next file/);
  assert.ok(got.length <= 1);
  const info = await client.getInfo(); // the client still works
  assert.equal(info.model_name, 'sscd_disc_mixup');
});

test('ListClusters pages through every cluster (AIP-158)', async () => {
  await client.checkDuplicate({ image_id: 'rocket', image: images.rocket, add_to_index: true });
  await client.checkDuplicate({ image_id: 'rocket-flip', image: images['rocket-flip'], add_to_index: true });
  const first = await client.listClusters({ pageSize: 1, minSize: 2 });
  assert.equal(first.clusters.length, 1);
  assert.ok(first.next_page_token);
  assert.equal(Number(first.total_size), 3); // astronaut was stored alone; coffee, chelsea, rocket pairs
  const all = [];
  for await (const c of client.clusters({ pageSize: 1, minSize: 2 })) all.push(c);
  assert.equal(all.length, 3);
  assert.deepEqual(all.map((c) => c.representative_id).sort(), ['chelsea', 'coffee', 'rocket']);
  const one = await client.getCluster(all[0].cluster_id);
  assert.equal(one.cluster_id, all[0].cluster_id);
  assert.equal(one.members.length, 2);
});

test('namespaces: a client of one namespace sees only its images; list and delete a namespace', async () => {
  const market = new DedupClient(server.target, { namespace: 'market' });
  try {
    const stored = await market.checkDuplicate({ image_id: 'astronaut', image: images.astronaut, add_to_index: true });
    assert.equal(stored.stored, true);
    assert.equal(stored.is_duplicate, false); // the default namespace's astronaut is not in market
    assert.equal((await market.checkDuplicate({ image: images['astronaut-small'] })).matches[0].image_id, 'astronaut');
    const items = [];
    for await (const r of market.bulkCheck([{ image_id: 'coffee', image: images.coffee, add_to_index: true }])) items.push(r);
    assert.equal(items[0].result.stored, true);
    assert.equal(Number((await market.getInfo()).indexed_images), 2);
    assert.equal((await market.getInfo()).namespace, 'market');
    const names = (await client.listNamespaces()).namespaces.map((n) => n.name);
    assert.ok(names.includes('market'), names.join());
    await assert.rejects(market.deleteNamespace('market', 'wrong'), (err) => err.codeName === 'FAILED_PRECONDITION');
    assert.equal(Number((await market.deleteNamespace('market', 'market')).deleted_images), 2);
    assert.equal(Number((await market.getInfo()).indexed_images), 0);
  } finally {
    market.close();
  }
});

test('errors carry their google.rpc details, decoded', async () => {
  await assert.rejects(client.checkDuplicate({ image: Buffer.alloc(0) }), (err) => {
    assert.ok(err instanceof DedupError);
    assert.equal(err.codeName, 'INVALID_ARGUMENT');
    assert.equal(err.detail('google.rpc.BadRequest').field_violations[0].reason, 'EMPTY_IMAGE');
    return true;
  });
  await assert.rejects(client.getCluster('no-such-cluster'), (err) => {
    assert.equal(err.code, grpc.status.NOT_FOUND);
    assert.equal(err.detail('google.rpc.ResourceInfo').resource_name, 'no-such-cluster');
    return true;
  });
  await assert.rejects(client.listClusters({ pageSize: 10, pageToken: 'garbage' }), (err) => {
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
    return true;
  });
});

test('a call has a deadline', async () => {
  await assert.rejects(client.getInfo({ deadlineMs: 1 }), (err) => {
    assert.equal(err.code, grpc.status.DEADLINE_EXCEEDED);
    return true;
  });
  const info = await client.getInfo();
  assert.equal(info.model_name, 'sscd_disc_mixup');
});

test('bearer tokens: refused without, served with', async () => {
  const guarded = await startServer([], { DEDUP_AUTH_TOKENS: 'node-secret' });
  try {
    const anonymous = new DedupClient(guarded.target, { maxAttempts: 1 });
    await assert.rejects(anonymous.getInfo(), (err) => err.code === grpc.status.UNAUTHENTICATED);
    anonymous.close();
    const holder = new DedupClient(guarded.target, { token: 'node-secret' });
    assert.equal((await holder.getInfo()).model_name, 'sscd_disc_mixup');
    holder.close();
  } finally {
    assert.equal(await guarded.stop(), 0);
  }
});

test('a unary call is retried on UNAVAILABLE, and only on UNAVAILABLE', async () => {
  // A stand-in DedupService (named so: a real server answers UNAVAILABLE only at moments a test
  // cannot choose, while starting or losing Milvus) that fails the first two GetInfo calls with
  // UNAVAILABLE, then answers; GetCluster always fails with NOT_FOUND.
  const { proto } = require('..');
  const calls = { GetInfo: 0, GetCluster: 0 };
  const standIn = new grpc.Server();
  standIn.addService(proto.dedup.v1.DedupService.service, {
    GetInfo(call, callback) {
      calls.GetInfo += 1;
      if (calls.GetInfo <= 2) callback({ code: grpc.status.UNAVAILABLE, details: 'starting' });
      else callback(null, { model_name: 'stand-in' });
    },
    GetCluster(call, callback) {
      calls.GetCluster += 1;
      callback({ code: grpc.status.NOT_FOUND, details: 'no such cluster' });
    },
  });
  const port = await new Promise((resolve, reject) =>
    standIn.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  try {
    const retrying = new DedupClient(`127.0.0.1:${port}`);
    assert.equal((await retrying.getInfo()).model_name, 'stand-in');
    assert.equal(calls.GetInfo, 3);
    await assert.rejects(retrying.getCluster('x'), (err) => err.code === grpc.status.NOT_FOUND);
    assert.equal(calls.GetCluster, 1);
    retrying.close();
    calls.GetInfo = 0;
    const once = new DedupClient(`127.0.0.1:${port}`, { maxAttempts: 1 });
    await assert.rejects(once.getInfo(), (err) => err.code === grpc.status.UNAVAILABLE);
    assert.equal(calls.GetInfo, 1);
    once.close();
  } finally {
    standIn.forceShutdown();
  }
});
