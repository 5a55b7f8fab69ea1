'use strict';
// Node.js client of dedup.v1.DedupService, loaded from the contract itself
// (protos/dedup/v1/dedup.proto and the google.rpc files vendored beside it).
//
//   const { DedupClient } = require('@imgdedup/client');
//   const client = new DedupClient('127.0.0.1:50051');
//   const r = await client.checkDuplicate({ image: fs.readFileSync('a.jpg'), add_to_index: true });
//
// Every call has a deadline (deadlineMs, 30 s by default). Unary calls are retried on UNAVAILABLE
// with exponential backoff (gRPC's own retry policy; nothing is retried once the server
// answered anything else). Errors are DedupError: the gRPC code, and the google.rpc details
// (BadRequest, RetryInfo, ErrorInfo, QuotaFailure, ResourceInfo...) decoded into objects.

const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

// The protos: packed beside this file (npm pack), else the repository's protos/ folder.
const PROTO_DIR = [path.join(__dirname, 'protos'), path.join(__dirname, '..', '..', 'protos')].find((d) =>
  fs.existsSync(path.join(d, 'dedup', 'v1', 'dedup.proto')),
);
const LOADER_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: [PROTO_DIR] };

const definition = protoLoader.loadSync(path.join(PROTO_DIR, 'dedup', 'v1', 'dedup.proto'), LOADER_OPTIONS);
const proto = grpc.loadPackageDefinition(definition);

// google.rpc.Status and its detail messages, for decoding `grpc-status-details-bin` and the
// `error` of a failed BulkCheck item.
const rpcRoot = new protobuf.Root();
rpcRoot.resolvePath = (origin, target) => {
  const vendored = path.join(PROTO_DIR, target);
  return fs.existsSync(vendored) ? vendored : protobuf.util.path.resolve(origin, target);
};
rpcRoot.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto'], { keepCase: true });
const Status = rpcRoot.lookupType('google.rpc.Status');

function retryConfig(attempts) {
  return JSON.stringify({
    methodConfig: [
      {
        name: [{ service: 'dedup.v1.DedupService' }],
        retryPolicy: {
          maxAttempts: attempts,
          initialBackoff: '0.1s',
          maxBackoff: '2s',
          backoffMultiplier: 2,
          retryableStatusCodes: ['UNAVAILABLE'],
        },
      },
    ],
  });
}

/** One google.protobuf.Any -> { type: 'google.rpc.BadRequest', ...fields } (or the raw bytes). */
function decodeAny(any) {
  const typeName = String(any.type_url || '').split('/').pop();
  let type;
  try {
    type = rpcRoot.lookupType(typeName);
  } catch {
    return { type: typeName, value: any.value };
  }
  const message = type.toObject(type.decode(any.value), { longs: String, enums: String, defaults: true });
  return { type: typeName, ...message };
}

/** A google.rpc.Status (bytes, or an object as the loader gives it) -> { code, message, details }. */
function decodeStatus(status) {
  const s = Buffer.isBuffer(status) ? Status.toObject(Status.decode(status), { defaults: true }) : status;
  return { code: s.code, message: s.message, details: (s.details || []).map(decodeAny) };
}

class DedupError extends Error {
  constructor(code, message, details = [], metadata = undefined) {
    super(message);
    this.name = 'DedupError';
    this.code = code; // a grpc.status number
    this.codeName = Object.keys(grpc.status).find((k) => grpc.status[k] === code) || String(code);
    this.details = details; // decoded google.rpc details
    this.metadata = metadata;
  }

  /** The details of one type, e.g. err.detail('google.rpc.BadRequest'), or undefined. */
  detail(type) {
    return this.details.find((d) => d.type === type);
  }

  /** RetryInfo's delay in milliseconds, when the server said when to retry. */
  get retryDelayMs() {
    const info = this.detail('google.rpc.RetryInfo');
    if (!info || !info.retry_delay) return undefined;
    return Number(info.retry_delay.seconds || 0) * 1000 + Math.round(Number(info.retry_delay.nanos || 0) / 1e6);
  }

  static fromServiceError(err) {
    const raw = err.metadata && err.metadata.get('grpc-status-details-bin')[0];
    const details = raw ? decodeStatus(raw).details : [];
    return new DedupError(err.code, err.details || err.message, details, err.metadata);
  }
}

class DedupClient {
  /**
   * @param {string} address host:port
   * @param {object} [options]
   * @param {grpc.ChannelCredentials} [options.credentials] default: plaintext
   * @param {string} [options.token] bearer token, sent as `authorization: Bearer ...`
   * @param {number} [options.deadlineMs] per call (default 30000; BulkCheck: per stream, default 1 h)
   * @param {number} [options.maxAttempts] unary tries on UNAVAILABLE (default 5; 1: no retries)
   * @param {string} [options.namespace] the namespace of every call whose request names none
   *   (default: '', the server's `default` namespace)
   */
  constructor(address, { credentials, token, deadlineMs = 30000, streamDeadlineMs = 3600000, maxAttempts = 5, channelOptions = {}, namespace = '' } = {}) {
    this.namespace = namespace;
    this.deadlineMs = deadlineMs;
    this.streamDeadlineMs = streamDeadlineMs;
    this.token = token;
    this.stub = new proto.dedup.v1.DedupService(address, credentials || grpc.credentials.createInsecure(), {
      'grpc.max_send_message_length': 64 * 1024 * 1024,
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
      'grpc.enable_retries': maxAttempts > 1 ? 1 : 0,
      'grpc.service_config': retryConfig(Math.max(2, maxAttempts)),
      ...channelOptions,
    });
  }

  _metadata() {
    const md = new grpc.Metadata();
    if (this.token) md.set('authorization', `Bearer ${this.token}`);
    return md;
  }

  _unary(method, request, deadlineMs) {
    return new Promise((resolve, reject) => {
      const deadline = new Date(Date.now() + (deadlineMs || this.deadlineMs));
      this.stub[method](request, this._metadata(), { deadline }, (err, response) => {
        if (err) reject(DedupError.fromServiceError(err));
        else resolve(response);
      });
    });
  }

  /** Is `image` (bytes) a duplicate of a stored image? Stores it with add_to_index. */
  checkDuplicate(request, { deadlineMs } = {}) {
    return this._unary('CheckDuplicate', this._scoped(request), deadlineMs);
  }

  /**
   * Many checks over one stream: yields one response per request, in order. A failed item has
   * `outcome === 'error'` and `error` decoded ({ code, message, details }); the stream goes on.
   * @param {Iterable|AsyncIterable} requests
   */
  async *bulkCheck(requests, { deadlineMs } = {}) {
    const call = this.stub.BulkCheck(this._metadata(), { deadline: new Date(Date.now() + (deadlineMs || this.streamDeadlineMs)) });
    let ended = false;
    let writeError;
    const closed = new Promise((resolve) => call.once('close', resolve));
    const writing = (async () => {
      for await (const r of requests) {
        if (ended) return;
        // Backpressure: wait for 'drain', or for the call to end (then stop writing).
        if (!call.write(this._scoped(r))) await Promise.race([new Promise((resolve) => call.once('drain', resolve)), closed]);
      }
      if (!ended) call.end();
    })().catch((err) => {
      // The caller's requests failed (a file that could not be read...): end the stream.
      writeError = err;
      call.cancel();
    });
    try {
      for await (const response of call) {
        if (response.outcome === 'error') response.error = decodeStatus(response.error);
        yield response;
      }
      await writing;
    } catch (err) {
      if (writeError) throw writeError;
      throw err.code !== undefined ? DedupError.fromServiceError(err) : err;
    } finally {
      ended = true;
      call.cancel();
    }
    if (writeError) throw writeError;
  }

  /** One page of clusters (AIP-158): { clusters, next_page_token, total_size }. */
  listClusters({ pageSize = 0, pageToken = '', minSize } = {}, { deadlineMs } = {}) {
    const request = this._scoped({ page_size: pageSize, page_token: pageToken });
    if (minSize !== undefined) request.min_size = minSize;
    return this._unary('ListClusters', request, deadlineMs);
  }

  /** Every cluster, page after page. */
  async *clusters({ pageSize = 100, minSize } = {}) {
    let pageToken = '';
    do {
      const page = await this.listClusters({ pageSize, pageToken, minSize });
      yield* page.clusters;
      pageToken = page.next_page_token;
    } while (pageToken);
  }

  getCluster(clusterId, { deadlineMs } = {}) {
    return this._unary('GetCluster', this._scoped({ cluster_id: clusterId }), deadlineMs);
  }

  deleteImages(imageIds, { deadlineMs } = {}) {
    return this._unary('DeleteImages', this._scoped({ image_ids: imageIds }), deadlineMs);
  }

  getInfo({ deadlineMs } = {}) {
    return this._unary('GetInfo', this._scoped({}), deadlineMs);
  }

  /** Every namespace the token opens, with its counts: { namespaces: [{ name, indexed_images, clusters }] }. */
  listNamespaces({ deadlineMs } = {}) {
    return this._unary('ListNamespaces', {}, deadlineMs);
  }

  /** Delete every image and cluster of `namespace`; `confirm` must repeat its name. */
  deleteNamespace(namespace, confirm, { deadlineMs } = {}) {
    return this._unary('DeleteNamespace', { namespace, confirm }, deadlineMs);
  }

  /** The request with this client's namespace, unless it names one. */
  _scoped(request) {
    return request.namespace ? request : { ...request, namespace: this.namespace };
  }

  close() {
    this.stub.close();
  }
}

module.exports = { DedupClient, DedupError, decodeStatus, proto, grpc, PROTO_DIR };
