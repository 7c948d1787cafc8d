"""The cluster's model store: model blobs kept once on the control host by their SHA-256,
served to the workers over HTTP in the registry protocol Ollama speaks.

A worker asks the store for a model's manifest (``GET /v2/NAMESPACE/MODEL/manifests/TAG``)
and then for each blob the manifest lists (``GET /v2/NAMESPACE/MODEL/blobs/sha256:HEX``,
with ``Range`` to resume a broken transfer). A model the store does not hold is fetched
from the upstream registry on the first request, once, whichever worker asks and however
many ask at the same time: each model crosses the outside link once per cluster. Every
blob is checked against its digest as it is written; a worker that finds a blob does not
match (a disk that rotted it) says so with ``POST /clusterai/v1/verify``, and the store
hashes its copy again and fetches it anew when it is bad.

On disk the store is laid out as Ollama's own models directory (``blobs/sha256-HEX``,
``manifests/REGISTRY/NAMESPACE/MODEL/TAG``), so a directory copied from a machine that ran
``ollama pull`` can seed it (``clusterai models import``).

This module runs on the control host with the system Python alone (the ``model_store``
role copies this one file): it imports nothing but the standard library.

    python3 model_store.py serve --root DIR --listen ADDRESS:PORT [--upstream URL]
                                 [--token-file FILE]
    python3 model_store.py import PATH --root DIR [--name NAME]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import re
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO

VERSION = "1"
DEFAULT_REGISTRY = "registry.ollama.ai"
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
MODEL_LAYER = "application/vnd.ollama.image.model"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
CHUNK = 1 << 20
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_PART = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


class StoreError(Exception):
    """A request the store cannot serve; ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class DigestMismatch(StoreError):
    def __init__(self, source: str, digest: str, got: str) -> None:
        super().__init__(502, f"{source}: the blob's SHA-256 is {got}, not {digest}")


@dataclass(frozen=True)
class ModelName:
    """``[REGISTRY/][NAMESPACE/]MODEL[:TAG]``, as Ollama names models."""

    registry: str
    namespace: str
    model: str
    tag: str

    @classmethod
    def parse(cls, text: str) -> ModelName:
        name, tag = text.strip(), ""
        if ":" in name.rsplit("/", 1)[-1]:
            name, tag = name.rsplit(":", 1)
        parts = name.lower().split("/")
        if len(parts) > 3 or not all(parts):
            raise StoreError(400, f"model {text!r}: not [registry/][namespace/]model[:tag]")
        registry = parts[0] if len(parts) == 3 else DEFAULT_REGISTRY
        namespace = parts[-2] if len(parts) >= 2 else "library"
        tag = tag or "latest"
        if not all(_PART.fullmatch(p) for p in (namespace, parts[-1])) or not _TAG.fullmatch(tag):
            raise StoreError(400, f"model {text!r}: not [registry/][namespace/]model[:tag]")
        return cls(registry, namespace, parts[-1], tag)

    def __str__(self) -> str:
        """The short form Ollama shows (``smollm2:135m``, ``me/model:1``)."""
        prefix = "" if self.namespace == "library" else self.namespace + "/"
        if self.registry != DEFAULT_REGISTRY:
            prefix = f"{self.registry}/{self.namespace}/"
        return f"{prefix}{self.model}:{self.tag}"

    @property
    def repository(self) -> str:
        return f"{self.namespace}/{self.model}"


def check_digest(digest: str) -> str:
    if not _DIGEST.fullmatch(digest):
        raise StoreError(400, f"digest {digest!r}: not sha256: and 64 lowercase hex digits")
    return digest


def layers(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The blobs a manifest names: its config, then its layers."""
    found = ([manifest["config"]] if manifest.get("config") else []) + list(
        manifest.get("layers") or []
    )
    for layer in found:
        check_digest(str(layer.get("digest")))
    return found


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def download(
    url: str, dest: Path, digest: str, headers: dict[str, str], timeout: float = 60
) -> int:
    """Fetch one blob to ``dest``, resuming ``dest.partial`` with a range request where an
    earlier try left one, and keep it only when its SHA-256 is ``digest``. Returns the
    bytes that crossed the link this time."""
    partial = dest.with_name(dest.name + ".partial")
    hasher = hashlib.sha256()
    have = 0
    if partial.exists():
        with partial.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                hasher.update(chunk)
                have += len(chunk)
    request = urllib.request.Request(url, headers=dict(headers))
    if have:
        request.add_header("Range", f"bytes={have}-")
    fetched = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            mode = "ab"
            if have and response.status != 206:  # the server sent it all: start over
                hasher, have, mode = hashlib.sha256(), 0, "wb"
            with partial.open(mode) as out:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    hasher.update(chunk)
                    fetched += len(chunk)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not have:  # 416: nothing after what we hold, it is complete
            raise StoreError(502, f"GET {url}: {exc.code} {exc.reason}") from exc
    except (OSError, urllib.error.URLError) as exc:
        raise StoreError(502, f"GET {url}: {getattr(exc, 'reason', exc)}") from exc
    got = "sha256:" + hasher.hexdigest()
    if got != digest:
        partial.unlink(missing_ok=True)
        raise DigestMismatch(f"GET {url}", digest, got)
    partial.replace(dest)
    return fetched


class Upstream:
    """The registry models come from when the store does not hold them."""

    def __init__(
        self, url: str, timeout: float = 60, log: Callable[[str], None] | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.log = log or (lambda line: None)
        self.headers = {"User-Agent": f"clusterai-model-store/{VERSION}"}

    def base(self, name: ModelName) -> str:
        return self.url if name.registry == DEFAULT_REGISTRY else f"https://{name.registry}"

    def manifest(self, name: ModelName) -> bytes:
        if not self.url:
            raise StoreError(404, f"model {name}: not in the store and it has no upstream"
                                  " registry (clusterai models import PATH seeds it)")  # fmt: skip
        url = f"{self.base(name)}/v2/{name.repository}/manifests/{name.tag}"
        request = urllib.request.Request(url, headers={**self.headers, "Accept": MANIFEST_TYPE})
        self.log(f"upstream GET {url}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw: bytes = response.read()
        except urllib.error.HTTPError as exc:
            status = 404 if exc.code == 404 else 502
            raise StoreError(status, f"model {name}: the upstream registry answered"
                                     f" {exc.code} {exc.reason} ({url})") from exc  # fmt: skip
        except (OSError, urllib.error.URLError) as exc:
            why = getattr(exc, "reason", exc)
            raise StoreError(502, f"model {name}: upstream registry {url}: {why}") from exc
        try:
            layers(json.loads(raw))
        except (ValueError, TypeError, AttributeError, StoreError) as exc:
            raise StoreError(502, f"model {name}: {url} is not a model manifest ({exc})") from exc
        return raw

    def blob(self, name: ModelName, digest: str, dest: Path) -> int:
        url = f"{self.base(name)}/v2/{name.repository}/blobs/{digest}"
        self.log(f"upstream GET {url}")
        return download(url, dest, digest, self.headers, self.timeout)


class Store:
    """The blobs and manifests on disk, and the one fetch per model from upstream."""

    def __init__(self, root: Path, upstream: Upstream) -> None:
        self.root = root
        self.upstream = upstream
        self.blobs = root / "blobs"
        self.manifests = root / "manifests"
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def blob_path(self, digest: str) -> Path:
        return self.blobs / check_digest(digest).replace(":", "-")

    def manifest_path(self, name: ModelName) -> Path:
        return self.manifests / name.registry / name.namespace / name.model / name.tag

    def manifest(self, name: ModelName) -> bytes:
        """The model's manifest, every blob it names in the store: fetched from upstream
        the first time (one fetch however many ask at once)."""
        path = self.manifest_path(name)
        with self._lock(str(path)):
            raw = path.read_bytes() if path.exists() else self.upstream.manifest(name)
            for layer in layers(json.loads(raw)):
                blob = self.blob_path(layer["digest"])
                if not blob.exists():
                    self.blobs.mkdir(parents=True, exist_ok=True)
                    with self._lock(layer["digest"]):
                        if not blob.exists():
                            self.upstream.blob(name, layer["digest"], blob)
            if not path.exists():  # the manifest last: one on disk means its blobs are
                write_atomically(path, raw)
        return raw

    def known(self, name: ModelName) -> bytes:
        """The model's manifest, from the store or else from upstream, without fetching a
        blob (a registry's HEAD): raises 404 for a model neither knows."""
        path = self.manifest_path(name)
        return path.read_bytes() if path.exists() else self.upstream.manifest(name)

    def verify(self, name: ModelName, digest: str) -> str:
        """Hash a blob again; a bad one is deleted and fetched anew. ``ok`` or ``refetched``."""
        blob = self.blob_path(digest)
        with self._lock(digest):
            if blob.exists() and sha256_of(blob) == digest:
                return "ok"
            blob.unlink(missing_ok=True)
            self.upstream.blob(name, digest, blob)
            return "refetched"

    def held(self) -> list[dict[str, Any]]:
        found = []
        for path in sorted(p for p in self.manifests.glob("*/*/*/*") if p.is_file()):
            registry, namespace, model, tag = path.relative_to(self.manifests).parts
            raw = path.read_bytes()
            blobs = layers(json.loads(raw))
            found.append({
                "name": str(ModelName(registry, namespace, model, tag)),
                "digest": hashlib.sha256(raw).hexdigest(),
                "size": sum(int(b.get("size") or 0) for b in blobs),
                "blobs": [b["digest"] for b in blobs],
                "complete": all(self.blob_path(b["digest"]).exists() for b in blobs),
            })  # fmt: skip
        return found

    def import_path(self, source: Path, name: str | None = None) -> tuple[list[str], bool]:
        """Seed the store from an Ollama models directory (``manifests/``, ``blobs/``) or
        a GGUF file (a model of one layer, named ``name`` or after the file). Every blob
        is hashed first: one whose name is not its digest stops the import before it
        writes. The models' names, and whether anything was written."""
        plans = plan_import(source, name, hashed=True)
        changed = False
        for plan in plans:
            manifest = plan.manifest
            if manifest is None:  # a GGUF file: a config and a manifest of our own
                config = json.dumps({"model_format": "gguf", "model_type": "",
                                     "file_type": ""}).encode()  # fmt: skip
                config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
                changed |= write_atomically(self.blob_path(config_digest), config)
                (file, digest), size = plan.files[0], plan.files[0][0].stat().st_size
                manifest = json.dumps({
                    "schemaVersion": 2,
                    "mediaType": MANIFEST_TYPE,
                    "config": {"mediaType": CONFIG_TYPE, "digest": config_digest,
                               "size": len(config)},
                    "layers": [{"mediaType": MODEL_LAYER, "digest": digest, "size": size}],
                }).encode()  # fmt: skip
            for file, digest in plan.files:
                changed |= self._copy_blob(file, digest)
            changed |= write_atomically(self.manifest_path(plan.model), manifest)
        return [str(p.model) for p in plans], changed

    def _copy_blob(self, file: Path, digest: str) -> bool:
        dest = self.blob_path(digest)
        if dest.exists() and dest.stat().st_size == file.stat().st_size:
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".partial")
        with file.open("rb") as source, partial.open("wb") as out:
            while chunk := source.read(CHUNK):
                out.write(chunk)
        if sha256_of(partial) != digest:  # the file changed while it was copied
            partial.unlink()
            raise StoreError(400, f"{file}: changed while it was copied; import it again")
        partial.replace(dest)
        return True


@dataclass(frozen=True)
class ImportPlan:
    """One model to import: its name, its manifest (None: a GGUF file's, made at import)
    and its blobs' files with their digests (empty digests: not hashed)."""

    model: ModelName
    manifest: bytes | None
    files: list[tuple[Path, str]]


def plan_import(source: Path, name: str | None = None, hashed: bool = True) -> list[ImportPlan]:
    """What importing ``source`` brings, checked: an Ollama models directory's manifests
    parse and each blob they name is there (with ``hashed``, its SHA-256 is its name), or
    a file starts as a GGUF file does. Anything else raises (400), before a write."""
    if source.is_file():
        with source.open("rb") as handle:
            if handle.read(4) != b"GGUF":
                raise StoreError(400, f"{source}: not a GGUF file (no GGUF magic number)")
        model = ModelName.parse(name or source.name.removesuffix(".gguf"))
        return [ImportPlan(model, None, [(source, sha256_of(source) if hashed else "")])]
    if not (source / "manifests").is_dir():
        raise StoreError(400, f"{source}: neither a GGUF file nor an Ollama models directory"
                              " (with manifests/ and blobs/)")  # fmt: skip
    plans = []
    for path in sorted(p for p in (source / "manifests").glob("*/*/*/*") if p.is_file()):
        raw = path.read_bytes()
        try:
            model = ModelName(*path.relative_to(source / "manifests").parts)
            blobs = layers(json.loads(raw))
        except (ValueError, TypeError, AttributeError, StoreError) as exc:
            raise StoreError(400, f"{path}: not a model manifest ({exc})") from exc
        files = []
        for layer in blobs:
            file = source / "blobs" / layer["digest"].replace(":", "-")
            if not file.is_file():
                raise StoreError(400, f"{path}: names {layer['digest']}, which {file.parent}"
                                      " does not hold")  # fmt: skip
            if hashed and (got := sha256_of(file)) != layer["digest"]:
                raise StoreError(400, f"{file}: its SHA-256 is {got}, not its name")
            files.append((file, layer["digest"]))
        plans.append(ImportPlan(model, raw, files))
    if not plans:
        raise StoreError(400, f"{source}/manifests holds no model manifest")
    return plans


def write_atomically(path: Path, data: bytes) -> bool:
    """``data`` in ``path``, whole or not at all; False when it held that already."""
    if path.exists() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)
    return True


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """``Range: bytes=A-B`` (one range) as (first, last) within ``size``; None: the whole
    file. A range that cannot be served raises (416)."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first:
        start, end = int(first), min(int(last) if last else size - 1, size - 1)
    else:
        start, end = max(size - int(last), 0), size - 1
    if start >= size or start > end:
        raise StoreError(416, f"range {header!r} is outside the blob's {size} bytes")
    return start, end


class Handler(BaseHTTPRequestHandler):
    store: Store
    token: str = ""
    server_version = f"clusterai-model-store/{VERSION}"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def log(self, status: int, sent: int) -> None:
        agent = self.headers.get("User-Agent", "-")
        line = f'{self.client_address[0]} "{self.command} {self.path}" {status} {sent} "{agent}"'
        print(line, file=sys.stderr, flush=True)

    def _reply(
        self, status: int, body: bytes, kind: str = "application/json", digest: str = ""
    ) -> None:
        """One whole answer (its headers alone to a HEAD), logged."""
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        if digest:
            self.send_header("Docker-Content-Digest", digest)
        self.end_headers()
        sent = 0 if self.command == "HEAD" else len(body)
        if sent:
            self.wfile.write(body)
        self.log(status, sent)

    def _error(self, status: int, message: str) -> None:
        self._reply(status, json.dumps({"errors": [{"code": str(status), "message": message}],
                                        "error": message}).encode())  # fmt: skip

    def _json(self, payload: Any) -> None:
        self._reply(200, json.dumps(payload).encode())

    def _manifest(self, raw: bytes) -> None:
        self._reply(200, raw, MANIFEST_TYPE, "sha256:" + hashlib.sha256(raw).hexdigest())

    def _allowed(self) -> bool:
        if not self.token or self.path == "/healthz":
            return True
        offered = self.headers.get("Authorization", "")
        return hmac.compare_digest(offered.encode(), f"Bearer {self.token}".encode())

    def _route(self) -> Iterator[tuple[str, str, str]]:
        match = re.fullmatch(r"/v2/([^/]+)/([^/]+)/(manifests|blobs)/([^/?]+)", self.path)
        if match:
            yield match.group(3), f"{match.group(1)}/{match.group(2)}", match.group(4)

    def do_HEAD(self) -> None:
        """As GET, but a manifest's HEAD only asks whether the model is known (here or
        upstream): no blob is fetched."""
        for kind, repository, reference in self._route():
            if kind == "manifests" and self._allowed():
                try:
                    self._manifest(self.store.known(ModelName.parse(f"{repository}:{reference}")))
                except StoreError as exc:
                    self._error(exc.status, str(exc))
                return
        self.do_GET()

    def do_GET(self) -> None:
        try:
            if not self._allowed():
                raise StoreError(401, "the store wants Authorization: Bearer and its token")
            if self.path == "/healthz":
                self._json({"status": "ok"})
                return
            if self.path == "/clusterai/v1/models":
                self._json({"models": self.store.held()})
                return
            for kind, repository, reference in self._route():
                if kind == "manifests":
                    self._manifest(
                        self.store.manifest(ModelName.parse(f"{repository}:{reference}"))
                    )
                else:
                    ModelName.parse(repository)  # a path that names a repository, or a 400
                    self._send_blob(check_digest(reference))
                return
            raise StoreError(404, f"{self.path}: no such path")
        except StoreError as exc:
            self._error(exc.status, str(exc))
        except (ValueError, OSError) as exc:
            self._error(500, f"{self.path}: {exc}")

    def do_POST(self) -> None:
        try:
            if not self._allowed():
                raise StoreError(401, "the store wants Authorization: Bearer and its token")
            if self.path != "/clusterai/v1/verify":
                raise StoreError(404, f"{self.path}: no such path")
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                name, digest = ModelName.parse(str(body["model"])), str(body["digest"])
            except (ValueError, KeyError, TypeError) as exc:
                raise StoreError(400, 'the body must be {"model": NAME, "digest": DIGEST}'
                                 ) from exc  # fmt: skip
            self._json({"digest": digest, "status": self.store.verify(name, check_digest(digest))})
        except StoreError as exc:
            self._error(exc.status, str(exc))

    def _send_blob(self, digest: str) -> None:
        path = self.store.blob_path(digest)
        if not path.exists():
            raise StoreError(404, f"blob {digest}: not in the store (ask for a manifest that"
                                  " names it first)")  # fmt: skip
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            wanted = byte_range(self.headers.get("Range", ""), size)
            start, end = wanted or (0, size - 1)
            self.send_response(206 if wanted else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Docker-Content-Digest", digest)
            self.send_header("Content-Length", str(end - start + 1))
            if wanted:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            sent = 0
            if self.command != "HEAD" and end >= start:
                sent = self._sendfile(handle, start, end - start + 1)
        self.log(206 if wanted else 200, sent)

    def _sendfile(self, handle: BinaryIO, offset: int, count: int) -> int:
        self.wfile.flush()
        sent: int = self.connection.sendfile(handle, offset, count)
        return sent


def log(line: str) -> None:
    """The service's log: one line per request or upstream fetch, on standard error
    (the journal, under systemd)."""
    print(line, file=sys.stderr, flush=True)


def server(store: Store, listen: str, token: str = "") -> ThreadingHTTPServer:
    """The store's HTTP server on ADDRESS:PORT (port 0: a free one), not yet serving."""
    host, _, port = listen.rpartition(":")

    class Bound(Handler):  # the store is a class attribute: one class per server
        pass

    Bound.store, Bound.token = store, token
    bound = ThreadingHTTPServer((host.strip("[]") or "127.0.0.1", int(port)), Bound)
    bound.daemon_threads = True
    return bound


def serve(root: Path, listen: str, upstream: str, token: str) -> None:
    bound = server(Store(root, Upstream(upstream, log=log)), listen, token)
    log(f"model store {VERSION}: {root} on {listen}, upstream {upstream or 'none'}")
    bound.serve_forever()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="model_store", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve the store on ADDRESS:PORT")
    run.add_argument("--root", type=Path, required=True)
    run.add_argument("--listen", required=True)
    run.add_argument("--upstream", default=f"https://{DEFAULT_REGISTRY}")
    run.add_argument("--token-file", type=Path)
    seed = commands.add_parser("import", help="seed the store from a directory or GGUF file")
    seed.add_argument("path", type=Path)
    seed.add_argument("--root", type=Path, required=True)
    seed.add_argument("--name")
    args = parser.parse_args(argv)
    if args.command == "serve":
        token = args.token_file.read_text().strip() if args.token_file else ""
        serve(args.root, args.listen, args.upstream, token)
        return 0
    try:
        names, changed = Store(args.root, Upstream("")).import_path(args.path, args.name)
    except (StoreError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"imported": names, "changed": changed}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
