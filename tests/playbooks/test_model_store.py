"""The model store (clusterai_runner/model_store.py) between a registry and Ollama servers.

The registry is tests/fixtures/fake_registry.py (the outside link: it records every byte
it sends), the servers tests/fixtures/fake_ollama.py; the store runs in a thread of this
process, and the ``ollama_model`` module runs as Ansible runs it on a host. The sandbox
test (tests/integration/test_ollama.py) runs the same parts as services on hosts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from clusterai_runner import model_store
from clusterai_runner.model_store import ModelName, StoreError
from tests.fixtures import fake_ollama, fake_registry
from tests.helpers import REPO

MODULE = REPO / "plugins" / "modules" / "ollama_model.py"
SIZE = 3 << 20
TOKEN = "store-token-for-tests"


class Cluster:
    """A registry, a store in front of it, and Ollama servers the module fills."""

    def __init__(self, tmp_path: Path, stack: ExitStack) -> None:
        self.tmp_path = tmp_path
        self.stack = stack
        self.registry = fake_registry.Registry()
        self.registry.add("library/smollm2", "135m", SIZE)
        self.upstream = stack.enter_context(fake_registry.in_thread(self.registry))
        self.root = tmp_path / "store"
        self.store = model_store.Store(self.root, model_store.Upstream(self.upstream))
        bound = model_store.server(self.store, "127.0.0.1:0", TOKEN)
        threading.Thread(target=bound.serve_forever, daemon=True).start()
        stack.callback(bound.server_close)
        stack.callback(bound.shutdown)
        self.url = f"http://127.0.0.1:{bound.server_address[1]}"

    def ollama(self, name: str) -> tuple[str, Path]:
        folder = self.tmp_path / name
        return self.stack.enter_context(fake_ollama.in_thread(folder)), folder

    def module(self, api_url: str, **args: Any) -> dict[str, Any]:
        """ollama_model once, as Ansible runs it on a host; its result."""
        arguments = self.tmp_path / "args.json"
        incoming = str(self.tmp_path / "incoming")
        defaults = {"name": ["smollm2:135m"], "api_url": api_url, "store_url": self.url,
                    "store_token": TOKEN, "download_dir": incoming}  # fmt: skip
        arguments.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {**defaults, **args}}))
        done = subprocess.run([sys.executable, str(MODULE), str(arguments)],
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def model_layer(self) -> dict[str, Any]:
        manifest = json.loads(self.registry.manifests["library/smollm2:135m"])
        layer: dict[str, Any] = manifest["layers"][0]
        return layer


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with ExitStack() as stack:
        yield Cluster(tmp_path, stack)


def test_two_servers_get_a_model_that_crossed_the_outside_link_once(cluster: Cluster) -> None:
    results, urls = [], []
    for name in ("worker1", "worker2"):
        url, folder = cluster.ollama(name)
        urls.append(url)
        results.append((cluster.module(url), folder))
    layer = cluster.model_layer()
    for result, folder in results:
        assert result["changed"] is True and result["pulled"] == ["smollm2:135m"], result
        assert result["refused"] == [] and result["fetched"] > SIZE
        model = json.loads((folder / "manifests.json").read_text())["smollm2:135m"]
        assert model["recipe"]["files"] == {layer["digest"].replace(":", "-") + ".gguf":
                                            layer["digest"]}  # fmt: skip
        assert model["recipe"]["template"] == "{{ .Prompt }}"
        assert model["recipe"]["parameters"] == {"temperature": 0.2}
        log = (folder / "requests.log").read_text()
        assert f"POST /api/blobs/{layer['digest']}" in log and "POST /api/pull" not in log
    blobs = cluster.registry.gets("/blobs/")
    assert len(blobs) == 4 and len({h.path for h in blobs}) == 4, blobs
    assert all(h.agent.startswith("clusterai-model-store/") for h in cluster.registry.hits)
    assert cluster.registry.sent("/blobs/") == sum(len(b) for b in cluster.registry.blobs.values())
    (held,) = cluster.store.held()
    assert held["name"] == "smollm2:135m" and held["complete"] and held["size"] > SIZE

    again = cluster.module(urls[0])
    assert again["changed"] is False and again["fetched"] == 0


def test_a_corrupted_blob_is_refused_and_fetched_again(cluster: Cluster) -> None:
    url, _ = cluster.ollama("worker1")
    assert cluster.module(url)["changed"] is True
    layer = cluster.model_layer()
    blob = cluster.root / "blobs" / layer["digest"].replace(":", "-")
    data = bytearray(blob.read_bytes())
    data[SIZE // 2] ^= 0xFF  # one flipped byte, the size unchanged
    blob.write_bytes(bytes(data))

    url, folder = cluster.ollama("worker2")
    result = cluster.module(url)
    assert result["changed"] is True and result["refused"] == [layer["digest"]], result
    assert model_store.sha256_of(blob) == layer["digest"]
    fetched = [h for h in cluster.registry.gets("/blobs/") if layer["digest"] in h.path]
    assert len(fetched) == 2, fetched  # once at first, once after the corruption
    assert "smollm2:135m" in json.loads((folder / "manifests.json").read_text())


def test_a_partial_download_is_resumed_with_a_range_request(cluster: Cluster) -> None:
    layer = cluster.model_layer()
    incoming = cluster.tmp_path / "incoming"
    incoming.mkdir()
    half = SIZE // 2
    whole = cluster.registry.blobs[layer["digest"]]
    (incoming / (layer["digest"].replace(":", "-") + ".partial")).write_bytes(whole[:half])
    url, _ = cluster.ollama("worker1")
    result = cluster.module(url)
    assert result["changed"] is True, result
    small = sum(len(b) for d, b in cluster.registry.blobs.items() if d != layer["digest"]) - len(
        cluster.registry.blobs[json.loads(cluster.registry.manifests["library/smollm2:135m"])
                               ["config"]["digest"]])  # fmt: skip
    assert result["fetched"] == len(whole) - half + small
    assert not list(incoming.iterdir())


def test_the_store_refuses_what_it_cannot_serve(cluster: Cluster) -> None:
    url, folder = cluster.ollama("worker1")
    unknown = cluster.module(url, name=["nonesuch:1b"])
    assert unknown["failed"] and "the upstream registry answered 404" in unknown["msg"], unknown
    wrong = cluster.module(url, store_token="wrong")
    assert wrong["failed"] and "401" in wrong["msg"] and "Bearer" in wrong["msg"], wrong
    assert "smollm2:135m" not in json.loads((folder / "manifests.json").read_text())

    def get(path: str) -> tuple[int, str]:
        request = urllib.request.Request(cluster.url + path,
                                         headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())["error"]

    assert get("/v2/library/smollm2/blobs/sha256:abc") == (
        400, "digest 'sha256:abc': not sha256: and 64 lowercase hex digits")  # fmt: skip
    assert get("/v2/library/smollm2/blobs/sha256:" + "0" * 64)[0] == 404
    assert get("/healthz") == (200, '{"status": "ok"}')

    # A manifest's HEAD asks whether the model is known (what a rollout's plan checks):
    # the registry's answer, and no blob fetched.
    def head(path: str) -> int:
        request = urllib.request.Request(cluster.url + path, method="HEAD",
                                         headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    assert head("/v2/library/smollm2/manifests/135m") == 200
    assert head("/v2/library/smollm2/manifests/999b") == 404
    assert cluster.registry.gets("/blobs/") == [] and cluster.store.held() == []


def test_model_names_and_ranges() -> None:
    assert str(ModelName.parse("smollm2:135m")) == "smollm2:135m"
    assert ModelName.parse("Me/Model").repository == "me/model"
    assert ModelName.parse("me/model").tag == "latest"
    host = ModelName.parse("registry.example:5000/me/model:v1")
    assert (host.registry, str(host)) == (
        "registry.example:5000",
        "registry.example:5000/me/model:v1",
    )
    for bad in ("", "a/b/c/d", "a b", "../x", "x:bad/tag"):
        with pytest.raises(StoreError):
            ModelName.parse(bad)
    assert model_store.byte_range("", 10) is None
    assert model_store.byte_range("bytes=4-", 10) == (4, 9)
    assert model_store.byte_range("bytes=-3", 10) == (7, 9)
    assert model_store.byte_range("bytes=2-100", 10) == (2, 9)
    with pytest.raises(StoreError, match="outside the blob's 10 bytes"):
        model_store.byte_range("bytes=10-", 10)


def test_import_seeds_the_store_from_a_directory_or_a_gguf_file(tmp_path: Path) -> None:
    registry = fake_registry.Registry()
    registry.add("library/smollm2", "135m", 4096)
    source = registry.models_dir(tmp_path / "ollama-models")
    store = model_store.Store(tmp_path / "store", model_store.Upstream(""))
    assert store.import_path(source) == (["smollm2:135m"], True)
    assert store.import_path(source) == (["smollm2:135m"], False)
    assert [m["name"] for m in store.held() if m["complete"]] == ["smollm2:135m"]

    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + bytes(100))
    assert store.import_path(gguf, "tiny:q4") == (["tiny:q4"], True)
    (tiny,) = [m for m in store.held() if m["name"] == "tiny:q4"]
    assert model_store.sha256_of(gguf) in tiny["blobs"]

    bad = source / "blobs" / next(iter(registry.blobs)).replace(":", "-")
    bad.write_bytes(b"not what the name says")
    other = model_store.Store(tmp_path / "other", model_store.Upstream(""))
    with pytest.raises(StoreError, match=r"its SHA-256 is sha256:[0-9a-f]{64}, not its name"):
        other.import_path(source)
    assert not (tmp_path / "other").exists()
    with pytest.raises(StoreError, match="neither a GGUF file nor an Ollama models directory"):
        other.import_path(tmp_path)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(StoreError, match="not a GGUF file"):
        other.import_path(text)
    with pytest.raises(StoreError, match="not in the store and it has no upstream"):
        other.manifest(ModelName.parse("smollm2:135m"))
