"""The writer lease: which replica writes a collection, kept in etcd (docs/scale-out.md).

Milvus has no compare-and-set, so the lease lives in the etcd that every Milvus server
deployment already runs (a standalone server embeds one on port 2379; a cluster has its own).
This talks to etcd's v3 API through its JSON gateway (POST /v3/kv/txn, /v3/lease/...), so no
etcd client library is needed: one small HTTP request per call, on a worker thread.

Keys, under `/imgdedup/<collection_prefix>/`:
- `writer`: the address of the replica that holds the lease (its writer_listen, or
  writer_advertise); bound to an etcd lease of `ttl_s`, so it vanishes `ttl_s` after its holder
  stops renewing it. It is created only if absent (a transaction on its create revision), so at
  most one replica holds it; its create revision is the holder's epoch.
- `clean`: written by a writer that stopped cleanly (after its last write), taken (read and
  deleted) by the next holder in the same transaction that makes it the writer. A holder that
  finds no `clean` rebuilds the cluster rows from the image rows, as a restart after a crash does.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass

log = logging.getLogger(__name__)


class LeaseStoreError(Exception):
    """etcd did not answer, or answered with an error."""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _text(b64: str) -> str:
    return base64.b64decode(b64).decode()


@dataclass(frozen=True, slots=True)
class Holder:
    address: str
    epoch: int  # the key's create revision: grows with every new holder


@dataclass(frozen=True, slots=True)
class Won:
    epoch: int
    lease_id: str
    clean: bool  # the previous writer stopped cleanly (False for the first one: it rebuilds once)


class EtcdLease:
    """The lease of one collection's writer in etcd at `url` (http://host:2379)."""

    def __init__(self, url: str, collection_prefix: str, ttl_s: float, timeout_s: float = 3.0):
        self.url = url.rstrip("/")
        self.ttl = max(2, round(ttl_s))  # etcd leases are in whole seconds
        self.timeout_s = timeout_s
        root = f"/imgdedup/{collection_prefix}/"
        self.writer_key, self.clean_key = root + "writer", root + "clean"

    def _post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                return json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise LeaseStoreError(f"etcd at {self.url}{path}: HTTP {exc.code}: {detail}") from None
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise LeaseStoreError(f"etcd at {self.url}{path}: {exc}") from None

    async def _call(self, path: str, body: dict) -> dict:
        return await asyncio.to_thread(self._post, path, body)

    async def holder(self) -> Holder | None:
        answer = await self._call("/v3/kv/range", {"key": _b64(self.writer_key)})
        kvs = answer.get("kvs") or []
        if not kvs:
            return None
        return Holder(_text(kvs[0].get("value", "")), int(kvs[0]["create_revision"]))

    async def try_acquire(self, address: str) -> Won | None:
        """Become the writer if nobody is: a new etcd lease, and the writer key created under it
        only if absent. None: another replica holds it (or took it first)."""
        granted = await self._call("/v3/lease/grant", {"TTL": self.ttl})
        lease_id = granted.get("ID")
        if not lease_id:
            raise LeaseStoreError(f"etcd at {self.url} granted no lease: {granted}")
        try:
            return await self._take(address, lease_id)
        except BaseException:
            # Perhaps taken (the answer lost): give it up at once rather than after its TTL.
            await asyncio.shield(self.revoke(lease_id))
            raise

    async def _take(self, address: str, lease_id: str) -> Won | None:
        key, clean = _b64(self.writer_key), _b64(self.clean_key)
        answer = await self._call("/v3/kv/txn", {
            "compare": [{"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            "success": [
                {"request_put": {"key": key, "value": _b64(address), "lease": lease_id}},
                {"request_range": {"key": clean}},
                {"request_delete_range": {"key": clean}},
            ],
            "failure": [],
        })
        if not answer.get("succeeded"):
            await self.revoke(lease_id)
            return None
        epoch = int(answer["header"]["revision"])  # the put's revision: the key's create revision
        found = answer["responses"][1].get("response_range", {}).get("kvs") or []
        return Won(epoch, lease_id, clean=bool(found))

    async def keep_alive(self, lease_id: str) -> float:
        """Renew the lease; returns the seconds it now has left (0: it has expired)."""
        answer = await self._call("/v3/lease/keepalive", {"ID": lease_id})
        try:
            return float((answer.get("result") or {}).get("TTL") or 0)
        except (TypeError, ValueError):
            raise LeaseStoreError(f"etcd at {self.url} answered a keepalive with {answer}") from None

    async def release(self, won: Won, *, clean: bool) -> None:
        """Give the lease up at once (the writer key goes with it), saying whether this writer
        stopped cleanly: only if it still holds the key (the same epoch)."""
        if clean:
            await self._call("/v3/kv/txn", {
                "compare": [{"key": _b64(self.writer_key), "target": "CREATE", "result": "EQUAL", "create_revision": str(won.epoch)}],
                "success": [{"request_put": {"key": _b64(self.clean_key), "value": _b64(str(won.epoch))}}],
                "failure": [],
            })
        await self.revoke(won.lease_id)

    async def revoke(self, lease_id: str) -> None:
        try:
            await self._call("/v3/lease/revoke", {"ID": lease_id})
        except LeaseStoreError as exc:  # it expires on its own
            log.warning("revoking the writer lease failed: %s", exc)
