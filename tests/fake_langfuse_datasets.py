"""The media and dataset endpoints of the fake Langfuse receiver (tests/fake_langfuse.py).

Read from the SDK's own source (langfuse 5.0.4 and 4.18.0: ``_task_manager/media_manager.py``,
``_client/client.py`` create_dataset / create_dataset_item / get_dataset / run_experiment,
``api/*/raw_client.py``) and from the requests it makes:

- media: ``POST /api/public/media`` (an upload URL for a content hash; none when that media is
  already uploaded), ``PUT`` to that URL (the bytes, no auth, as to S3), ``PATCH
  /api/public/media/{id}`` (the upload's status); ``GET /media/{id}`` serves the bytes back
  (the signed URL a dataset item's media reference carries);
- datasets: ``POST /api/public/v2/datasets``, ``GET /api/public/v2/datasets/{name}``,
  ``POST /api/public/dataset-items`` (upsert by id), ``GET /api/public/dataset-items?datasetName=``
  (pages, with the ``mediaReferences`` the server derives from the reference strings in an item);
- dataset runs: ``POST /api/public/dataset-run-items`` (SDK 4). SDK 5 posts none: the server
  derives run items from the experiment attributes of the spans; ``run_items(spans)`` does the
  same, so a test reads one list whatever the SDK.
"""
from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

MEDIA_PATH = "/api/public/media"
UPLOAD_PREFIX = "/upload/"  # where the fake's upload URLs point (no auth, like a signed S3 URL)
MEDIA_BYTES_PREFIX = "/media/"  # the URL a media reference carries
DATASETS_PATH = "/api/public/v2/datasets"
ITEMS_PATH = "/api/public/dataset-items"
RUN_ITEMS_PATH = "/api/public/dataset-run-items"
_REFERENCE = re.compile(r"@@@langfuseMedia:type=([^|]+)\|id=([^|]+)\|source=([^@]+)@@@")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def media_id_of(sha256_b64: str) -> str:
    """The media id Langfuse derives from a content hash (the SDK checks it matches its own)."""
    return sha256_b64.replace("+", "-").replace("/", "_")[:22]


class DatasetState:
    """What the SDK sent to the media and dataset endpoints (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.upload_url_requests: list[dict] = []  # POST /api/public/media bodies
        self.uploads: list[tuple[str, bytes]] = []  # (media id, bytes) of every PUT
        self.patches: list[tuple[str, dict]] = []  # (media id, body) of every PATCH
        self.media: dict[str, dict] = {}  # id -> content_type, bytes (None until uploaded)
        self.datasets: dict[str, dict] = {}  # name -> dataset
        self.items: dict[str, dict] = {}  # id -> item as stored
        self.item_creates: list[dict] = []  # POST /api/public/dataset-items bodies
        self.run_item_posts: list[dict] = []  # SDK 4's POST /api/public/dataset-run-items bodies

    # -- queries ---------------------------------------------------------------------------
    def media_bytes(self, media_id: str) -> bytes | None:
        """The uploaded bytes of a media id."""
        with self.lock:
            entry = self.media.get(media_id)
            return entry["bytes"] if entry else None

    def media_links(self) -> list[dict]:
        """One entry per upload-URL request: media id, trace/observation or dataset item, field."""
        with self.lock:
            return [{"media_id": media_id_of(r["sha256Hash"]), "trace_id": r.get("traceId"),
                     "observation_id": r.get("observationId"), "dataset_id": r.get("datasetId"),
                     "dataset_item_id": r.get("datasetItemId"), "field": r.get("field")}
                    for r in self.upload_url_requests]

    def dataset_items(self, name: str) -> list[dict]:
        """The stored items of a dataset, in creation order."""
        with self.lock:
            return [i for i in self.items.values() if i["datasetName"] == name]

    def run_items(self, spans: list[dict]) -> list[dict]:
        """Dataset run items: SDK 4's posts, or (SDK 5) those derived from the item-run spans."""
        with self.lock:
            posted = [{"run_name": p.get("runName"), "dataset_item_id": p.get("datasetItemId"),
                       "trace_id": p.get("traceId"), "observation_id": p.get("observationId")}
                      for p in self.run_item_posts]
        if posted:
            return posted
        derived = []
        for span in spans:
            attrs = span["attributes"]
            # The item's root observation carries its own id as the root: the task span.
            if attrs.get("langfuse.experiment.item.root_observation_id") == span["span_id"] \
                    and attrs.get("langfuse.experiment.dataset.id"):
                derived.append({"run_name": attrs.get("langfuse.experiment.name"),
                                "dataset_item_id": attrs.get("langfuse.experiment.item.id"),
                                "trace_id": span["trace_id"], "observation_id": span["span_id"]})
        return derived

    # -- request handling ------------------------------------------------------------------
    def handle(self, server: Any, handler: Any, method: str, body: bytes = b"") -> bool:
        """Answer a media or dataset request; False when the path is none of these."""
        parts = urlsplit(handler.path)
        path = parts.path
        if path.startswith(UPLOAD_PREFIX) or (method == "GET" and path.startswith(MEDIA_BYTES_PREFIX)):
            if server.mode == "500":
                handler._reply(500, b'{"message":"internal error"}')
            elif method == "PUT":
                self._store_upload(path[len(UPLOAD_PREFIX):], body)
                handler._reply(200, b"")
            else:
                data = self.media_bytes(path[len(MEDIA_BYTES_PREFIX):])
                handler._reply(200 if data is not None else 404, data or b"", "image/jpeg")
            return True
        known = (path == MEDIA_PATH or path.startswith(MEDIA_PATH + "/") or path.startswith(DATASETS_PATH)
                 or path == ITEMS_PATH or path == RUN_ITEMS_PATH)
        if not known:
            return False
        if handler._refused():
            return True
        payload = json.loads(body) if body else {}
        if method == "POST" and path == MEDIA_PATH:
            self._upload_url(server, handler, payload)
        elif method == "PATCH" and path.startswith(MEDIA_PATH + "/"):
            with self.lock:
                self.patches.append((path.rsplit("/", 1)[1], payload))
            handler._reply(204, b"")
        elif method == "POST" and path == DATASETS_PATH:
            handler._reply(200, json.dumps(self._create_dataset(payload)).encode())
        elif method == "GET" and path.startswith(DATASETS_PATH + "/"):
            found = self.datasets.get(unquote(path[len(DATASETS_PATH) + 1:]))
            handler._reply(200 if found else 404, json.dumps(
                found or {"message": "Dataset not found", "error": "LangfuseNotFoundError"}).encode())
        elif method == "POST" and path == ITEMS_PATH:
            item = self._create_item(payload)
            status = 404 if item is None else 200
            handler._reply(status, json.dumps(item or {"message": "Dataset not found"}).encode())
        elif method == "GET" and path == ITEMS_PATH:
            handler._reply(200, json.dumps(self._list_items(server, parse_qs(parts.query))).encode())
        elif method == "POST" and path == RUN_ITEMS_PATH:
            handler._reply(200, json.dumps(self._create_run_item(payload)).encode())
        else:
            handler._reply(404, b'{"message":"not found"}')
        return True

    def _upload_url(self, server: Any, handler: Any, body: dict) -> None:
        media_id = media_id_of(body["sha256Hash"])
        with self.lock:
            self.upload_url_requests.append(body)
            entry = self.media.setdefault(media_id, {"content_type": body.get("contentType"), "bytes": None,
                                                     "sha256": body["sha256Hash"]})
            uploaded = entry["bytes"] is not None
        url = None if uploaded else f"{server.base_url}{UPLOAD_PREFIX}{media_id}"
        handler._reply(200, json.dumps({"mediaId": media_id, "uploadUrl": url}).encode())

    def _store_upload(self, media_id: str, data: bytes) -> None:
        with self.lock:
            self.uploads.append((media_id, data))
            self.media.setdefault(media_id, {"content_type": "image/jpeg", "sha256": None})["bytes"] = data

    def _create_dataset(self, body: dict) -> dict:
        with self.lock:
            name = body["name"]
            if name not in self.datasets:
                self.datasets[name] = {"id": f"ds-{uuid.uuid4().hex[:12]}", "name": name,
                                       "description": body.get("description"), "metadata": body.get("metadata"),
                                       "inputSchema": None, "expectedOutputSchema": None,
                                       "projectId": "proj-test", "createdAt": _now(), "updatedAt": _now()}
            return self.datasets[name]

    def _create_item(self, body: dict) -> dict | None:
        with self.lock:
            self.item_creates.append(body)
            dataset = self.datasets.get(body.get("datasetName"))
            if dataset is None:
                return None
            item_id = body.get("id") or str(uuid.uuid4())
            old = self.items.get(item_id, {})
            self.items[item_id] = item = {
                "id": item_id, "status": body.get("status") or "ACTIVE", "input": body.get("input"),
                "expectedOutput": body.get("expectedOutput"), "metadata": body.get("metadata"),
                "sourceTraceId": body.get("sourceTraceId"), "sourceObservationId": body.get("sourceObservationId"),
                "datasetId": dataset["id"], "datasetName": dataset["name"],
                "createdAt": old.get("createdAt", _now()), "updatedAt": _now()}
            return {**item, "mediaReferences": []}

    def _references(self, server: Any, value: Any, field: str, path: str = "$") -> list[dict]:
        """The media references in an item's field, as the server's findMediaReferences lists them."""
        found = []
        if isinstance(value, dict):
            for key, inner in value.items():
                found += self._references(server, inner, field, f"{path}['{key}']")
        elif isinstance(value, list):
            for i, inner in enumerate(value):
                found += self._references(server, inner, field, f"{path}[{i}]")
        elif isinstance(value, str):
            match = _REFERENCE.fullmatch(value)
            if match:
                ctype, media_id = match.group(1), match.group(2)
                size = len(self.media.get(media_id, {}).get("bytes") or b"")
                found.append({"field": field, "referenceString": value, "jsonPath": path, "media": {
                    "mediaId": media_id, "contentType": ctype, "contentLength": size,
                    "url": f"{server.base_url}{MEDIA_BYTES_PREFIX}{media_id}", "urlExpiry": "2099-01-01T00:00:00Z"}})
        return found

    def _list_items(self, server: Any, query: dict) -> dict:
        name = unquote(query.get("datasetName", [""])[0])
        page, limit = int(query.get("page", ["1"])[0]), int(query.get("limit", ["50"])[0])
        with self.lock:
            items = [i for i in self.items.values() if i["datasetName"] == name]
            chunk = items[(page - 1) * limit: page * limit]
            data = [{**i, "mediaReferences": self._references(server, i["input"], "input")
                     + self._references(server, i["metadata"], "metadata")} for i in chunk]
        pages = max(1, -(-len(items) // limit))
        return {"data": data, "meta": {"page": page, "limit": limit, "totalItems": len(items), "totalPages": pages}}

    def _create_run_item(self, body: dict) -> dict:
        with self.lock:
            self.run_item_posts.append(body)
            item = self.items.get(body.get("datasetItemId"), {})
        run_id = "run-" + base64.b32encode(str(body.get("runName")).encode()).decode()[:12].lower()
        return {"id": f"dri-{uuid.uuid4().hex[:12]}", "datasetRunId": run_id, "datasetRunName": body.get("runName"),
                "datasetItemId": body.get("datasetItemId"), "traceId": body.get("traceId"),
                "observationId": body.get("observationId"), "createdAt": _now(), "updatedAt": _now(),
                "datasetId": item.get("datasetId")}
