#!/usr/bin/python
# Copyright: Cluster AI contributors
# Apache License 2.0
"""Ansible module: make an Ollama server hold the models it should, through its HTTP API."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ollama_model
short_description: Pull or remove models on an Ollama server
description:
  - Makes an Ollama server hold the listed models, through its HTTP API
    (C(GET /api/tags), C(POST /api/pull), C(DELETE /api/delete)).
  - Idempotent; a model already present is not pulled again. With O(prune=true),
    models that are not listed are removed; otherwise they are left alone.
  - A name without a tag means the C(latest) tag, as in Ollama itself.
  - Supports check mode, reporting what it would pull or remove.
  - With O(store_url), models come from the cluster's model store on the control host
    instead of the outside registry: the module fetches the manifest and each blob the
    server lacks (resuming a partial download), checks each blob's SHA-256 before using
    it, pushes it with C(POST /api/blobs/DIGEST) and makes the model with
    C(POST /api/create). A blob that does not match its digest is refused; the store is
    told to check its copy (it fetches a bad one anew) and the blob is fetched once more.
    Names with a registry host of their own are pulled by the server as without a store.
version_added: "0.1.0"
options:
  name:
    description: Models to pull (O(state=present)) or remove (O(state=absent)).
    type: list
    elements: str
    required: true
  state:
    description: Whether the models should be present or absent.
    type: str
    choices: [present, absent]
    default: present
  prune:
    description:
      - Remove every model the server holds that O(name) does not list.
      - Only with O(state=present).
    type: bool
    default: false
  api_url:
    description: Base URL of the Ollama API.
    type: str
    default: http://127.0.0.1:11434
  timeout:
    description:
      - Seconds to wait for the server to say something. A pull streams its progress,
        so this bounds the silence between two progress lines, not the whole pull.
    type: int
    default: 300
  insecure:
    description: Allow pulling from a registry over plain HTTP (Ollama's C(insecure)).
    type: bool
    default: false
  store_url:
    description:
      - Base URL of the cluster's model store (C(clusterai_runner/model_store.py)), or any
        registry that speaks Ollama's registry protocol. Empty, the server pulls itself.
    type: str
    default: ""
  store_token:
    description: The bearer token the model store wants, if any.
    type: str
    default: ""
  download_dir:
    description:
      - Where blobs from the store are downloaded before they are pushed to the server;
        a partial download left there is resumed by the next run.
    type: path
    default: /var/tmp/clusterai-models
author:
  - Cluster AI contributors
"""

EXAMPLES = r"""
- name: Pull the models this group serves, keep the others
  ollama_model:
    name: [llama3.2:3b, nomic-embed-text]
    api_url: http://192.0.2.21:11434

- name: Hold exactly these models, removing the rest
  ollama_model:
    name: [llama3.2:3b]
    prune: true
    api_url: http://192.0.2.21:11434

- name: Remove a model
  ollama_model:
    name: [mistral]
    state: absent
"""

RETURN = r"""
pulled:
  description: Models pulled by this run (or that would be, in check mode).
  returned: always
  type: list
  elements: str
removed:
  description: Models removed by this run (or that would be, in check mode).
  returned: always
  type: list
  elements: str
models:
  description: Models the server holds after the run (predicted in check mode).
  returned: always
  type: list
  elements: str
fetched:
  description: Bytes fetched from the model store by this run.
  returned: always
  type: int
refused:
  description: Blobs from the store refused because they did not match their digest.
  returned: always
  type: list
  elements: str
"""

import hashlib
import json
import socket
from functools import partial
from pathlib import Path
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url


class OllamaError(Exception):
    """The Ollama API refused a request or could not be reached."""


def normalize(name: str) -> str:
    """Ollama's own naming: no tag means ``latest``; names compare case-insensitively."""
    name = name.strip()
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        name += ":latest"
    return name.lower()


class OllamaAPI:
    def __init__(self, base_url: str, timeout: int) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _open(
        self, method: str, path: str, body: dict[str, Any] | None = None, label: str = ""
    ) -> Any:
        url = self.base_url + path
        data = json.dumps(body).encode() if body is not None else None
        try:
            return open_url(
                url,
                data=data,
                method=method,
                headers={"Content-Type": "application/json"},
                timeout=self.timeout,
            )
        except Exception as exc:  # urllib raises several kinds; all mean the same here
            detail = ""
            read = getattr(exc, "read", None)
            if callable(read):
                try:
                    detail = json.loads(read()).get("error", "")
                except ValueError:
                    detail = ""
            raise OllamaError(f"{label or method + ' ' + url}: {detail or exc}") from exc

    def models(self) -> list[str]:
        response = self._open("GET", "/api/tags")
        try:
            payload = json.loads(response.read())
            return sorted({normalize(m["name"]) for m in payload.get("models", [])})
        except (ValueError, KeyError, TypeError) as exc:
            raise OllamaError(
                f"GET {self.base_url}/api/tags: not an Ollama answer ({exc})"
            ) from exc

    def pull(self, name: str, insecure: bool) -> None:
        body = {"model": name, "insecure": insecure, "stream": True}
        _follow(self._open("POST", "/api/pull", body, label=f"pull {name}"), f"pull {name}")

    def delete(self, name: str) -> None:
        self._open("DELETE", "/api/delete", {"model": name}, label=f"remove {name}")

    def has_blob(self, digest: str) -> bool:
        try:
            self._open("HEAD", f"/api/blobs/{digest}")
        except OllamaError:
            return False
        return True

    def push_blob(self, digest: str, path: Path) -> None:
        with path.open("rb") as body:
            try:
                open_url(
                    f"{self.base_url}/api/blobs/{digest}",
                    data=body,
                    method="POST",
                    headers={"Content-Length": str(path.stat().st_size)},
                    timeout=self.timeout,
                )
            except Exception as exc:
                raise OllamaError(f"push {digest} to {self.base_url}: {exc}") from exc

    def create(self, name: str, recipe: dict[str, Any]) -> None:
        response = self._open("POST", "/api/create", {"model": name, **recipe, "stream": True},
                              label=f"create {name}")  # fmt: skip
        _follow(response, f"create {name}")


def _follow(response: Any, label: str) -> None:
    """Read a streamed answer (NDJSON progress) to its end: an error line raises, and so
    does a stream that stops before ``success``."""
    status = ""
    for raw in response:
        line = raw.strip()
        if not line:
            continue
        try:
            event = json.loads(line)
        except ValueError as exc:
            raise OllamaError(f"{label}: unreadable progress line {line[:80]!r}") from exc
        if "error" in event:
            raise OllamaError(f"{label}: {event['error']}")
        status = event.get("status", status)
    if status != "success":
        raise OllamaError(
            f"{label}: the server stopped before success (last status: {status or 'none'})"
        )


# The layers that become files of the model (pushed as blobs), and the small ones that are
# fields of /api/create.
WEIGHTS = {"application/vnd.ollama.image.model", "application/vnd.ollama.image.projector"}
ADAPTER = "application/vnd.ollama.image.adapter"
FIELDS = {
    "application/vnd.ollama.image.template": "template",
    "application/vnd.ollama.image.system": "system",
    "application/vnd.ollama.image.license": "license",
    "application/vnd.ollama.image.params": "parameters",
    "application/vnd.ollama.image.messages": "messages",
}


class BlobMismatch(OllamaError):
    """A blob whose SHA-256 is not its digest."""


class ModelStore:
    """The cluster's model store (or a registry), in Ollama's registry protocol."""

    def __init__(self, base_url: str, token: str, timeout: int) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.headers = {"User-Agent": f"clusterai-ollama-model ({socket.gethostname()})"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.fetched = 0

    @staticmethod
    def repository(name: str) -> tuple[str, str]:
        """``smollm2:135m`` -> (``library/smollm2``, ``135m``)."""
        model, _, tag = name.rpartition(":")
        return (model if "/" in model else "library/" + model), tag

    def _get(self, path: str, extra: dict[str, str] | None = None) -> Any:
        url = self.base_url + path
        try:
            return open_url(url, headers={**self.headers, **(extra or {})}, timeout=self.timeout)
        except Exception as exc:
            raise OllamaError(f"GET {url}: {_reason(exc)}") from exc

    def manifest(self, name: str) -> dict[str, Any]:
        repository, tag = self.repository(name)
        accept = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
        response = self._get(f"/v2/{repository}/manifests/{tag}", accept)
        try:
            manifest: dict[str, Any] = json.loads(response.read())
            manifest["layers"][0]["digest"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise OllamaError(f"{name}: the store's manifest is not a model's ({exc})") from exc
        return manifest

    def small(self, name: str, digest: str) -> bytes:
        repository, _ = self.repository(name)
        data: bytes = self._get(f"/v2/{repository}/blobs/{digest}").read()
        self.fetched += len(data)
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise BlobMismatch(f"{name}: blob {digest} from the store does not match its digest")
        return data

    def download(self, name: str, digest: str, dest: Path) -> None:
        """The blob to ``dest``, resuming ``dest.partial``; kept only if its digest matches."""
        repository, _ = self.repository(name)
        partial = dest.with_name(dest.name + ".partial")
        hasher = hashlib.sha256()
        have = 0
        if partial.exists():
            with partial.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    hasher.update(chunk)
                    have += len(chunk)
        extra = {"Range": f"bytes={have}-"} if have else {}
        try:
            response = self._get(f"/v2/{repository}/blobs/{digest}", extra)
        except OllamaError:
            if not have:
                raise
            response = None  # 416: the partial file is the whole blob
        if response is not None:
            mode = "ab"
            if have and response.getcode() != 206:
                hasher, mode = hashlib.sha256(), "wb"
            with partial.open(mode) as out:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    hasher.update(chunk)
                    self.fetched += len(chunk)
        if "sha256:" + hasher.hexdigest() != digest:
            partial.unlink()
            raise BlobMismatch(f"{name}: blob {digest} from the store does not match its digest")
        partial.replace(dest)

    def verify(self, name: str, digest: str) -> None:
        """Ask the store to check its copy (and fetch a bad one anew)."""
        url = f"{self.base_url}/clusterai/v1/verify"
        try:
            open_url(url, data=json.dumps({"model": name, "digest": digest}).encode(),
                     method="POST", headers={**self.headers, "Content-Type": "application/json"},
                     timeout=self.timeout)  # fmt: skip
        except Exception as exc:
            raise OllamaError(f"POST {url} ({name}, {digest}): {_reason(exc)}") from exc


def _reason(exc: Exception) -> str:
    """An HTTP error's own message (the store's JSON ``error``), else the exception."""
    read = getattr(exc, "read", None)
    if callable(read):
        try:
            return f"{getattr(exc, 'code', '')} {json.loads(read()).get('error', '')}".strip()
        except (ValueError, AttributeError):
            pass
    return str(exc)


def _refetched(store: ModelStore, name: str, digest: str, refused: list[str], fetch: Any) -> Any:
    """``fetch()``; if the blob it gets does not match its digest, the blob is refused, the
    store told to check its copy (it fetches a bad one anew), and ``fetch()`` runs again."""
    try:
        return fetch()
    except BlobMismatch:
        refused.append(digest)
        store.verify(name, digest)
        return fetch()


def install_from_store(
    api: OllamaAPI, store: ModelStore, name: str, folder: Path, refused: list[str]
) -> None:
    """Make ``name`` on the server from the store's blobs: each weights blob the server
    lacks is downloaded, checked and pushed; the small layers become fields of
    /api/create."""
    recipe: dict[str, Any] = {}
    for layer in store.manifest(name)["layers"]:
        kind, digest = layer.get("mediaType", ""), str(layer["digest"])
        if kind in WEIGHTS or kind == ADAPTER:
            if not api.has_blob(digest):
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
                path = folder / digest.replace(":", "-")
                _refetched(
                    store, name, digest, refused, partial(store.download, name, digest, path)
                )
                try:
                    api.push_blob(digest, path)
                finally:
                    path.unlink()
            files = recipe.setdefault("adapters" if kind == ADAPTER else "files", {})
            files[digest.replace(":", "-") + ".gguf"] = digest
        elif kind in FIELDS:
            text = _refetched(store, name, digest, refused, partial(store.small, name, digest))
            text = text.decode()
            structured = kind.endswith(("params", "messages"))
            recipe[FIELDS[kind]] = json.loads(text) if structured else text
    api.create(name, recipe)


def plan(
    held: list[str], wanted: list[str], state: str, prune: bool
) -> tuple[list[str], list[str]]:
    """What to pull and what to remove, given what the server holds."""
    held_set = set(held)
    wanted_names = list(dict.fromkeys(normalize(n) for n in wanted))
    if state == "absent":
        return [], [n for n in wanted_names if n in held_set]
    to_pull = [n for n in wanted_names if n not in held_set]
    to_remove = sorted(held_set - set(wanted_names)) if prune else []
    return to_pull, to_remove


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "list", "elements": "str", "required": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "prune": {"type": "bool", "default": False},
            "api_url": {"type": "str", "default": "http://127.0.0.1:11434"},
            "timeout": {"type": "int", "default": 300},
            "insecure": {"type": "bool", "default": False},
            "store_url": {"type": "str", "default": ""},
            "store_token": {"type": "str", "default": "", "no_log": True},
            "download_dir": {"type": "path", "default": "/var/tmp/clusterai-models"},
        },
        supports_check_mode=True,
    )
    p = module.params
    if p["prune"] and p["state"] == "absent":
        module.fail_json(msg="ollama_model: prune=true only goes with state=present")
    if any(not n.strip() for n in p["name"]):
        module.fail_json(msg="ollama_model: name holds an empty model name")

    api = OllamaAPI(p["api_url"], p["timeout"])
    store = ModelStore(p["store_url"], p["store_token"], p["timeout"]) if p["store_url"] else None
    pulled: list[str] = []
    removed: list[str] = []
    refused: list[str] = []
    try:
        held = api.models()
        to_pull, to_remove = plan(held, p["name"], p["state"], p["prune"])
        if module.check_mode:
            pulled, removed = to_pull, to_remove
        else:
            for name in to_pull:
                if store is not None and name.count("/") < 2:
                    install_from_store(api, store, name, Path(p["download_dir"]), refused)
                else:
                    api.pull(name, p["insecure"])
                pulled.append(name)
            for name in to_remove:
                api.delete(name)
                removed.append(name)
        models = sorted((set(held) | set(pulled)) - set(removed))
    except OllamaError as exc:
        module.fail_json(
            msg=f"ollama_model: {exc}",
            pulled=pulled,
            removed=removed,
            refused=refused,
            fetched=store.fetched if store else 0,
        )
    module.exit_json(
        changed=bool(pulled or removed),
        pulled=pulled,
        removed=removed,
        models=models,
        refused=refused,
        fetched=store.fetched if store else 0,
    )


if __name__ == "__main__":
    main()
