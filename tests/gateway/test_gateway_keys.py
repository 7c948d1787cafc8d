"""API keys (created and revoked with the CLI, stored hashed), per-key limits and usage
records, on a gateway in front of a real llama.cpp server."""

from __future__ import annotations

import json
from pathlib import Path

import ollama
import openai
import pytest

from clusterai_runner.store import Store
from tests.gateway.conftest import Server, start_gateway, stop
from tests.helpers import run_cli, wait_for

CHAT = [{"role": "user", "content": "Hi"}]


def test_keys_limits_and_usage(servers: list[Server], tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {"CLUSTERAI_STATE_DIR": str(state)}
    created = run_cli("gateway", "keys", "create", "app", "--rpm", "3", env=env)
    assert created.code == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("cai_")
    admin = run_cli("gateway", "keys", "create", "ops", "--admin", env=env).stdout.strip()
    twice = run_cli("gateway", "keys", "create", "app", env=env)
    assert (twice.code, twice.stderr) == (
        2, "error: key app: a key of that name exists (pick another name)\n"
    )  # fmt: skip
    listed = json.loads(run_cli("gateway", "keys", "list", "--json", env=env).stdout)
    assert [(k["name"], k["rpm"], k["admin"]) for k in listed] == [
        ("app", 3, False), ("ops", None, True),
    ]  # fmt: skip
    assert key not in (state / "state.db").read_bytes().decode("latin-1")  # only its hash

    gateway = start_gateway(servers, tmp_path, state, auth={"enabled": True, "refresh_s": 0.5})
    try:
        good = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
        bad = openai.OpenAI(base_url=gateway.url + "/v1", api_key="cai_0000_nope", max_retries=0)
        with good, bad:
            assert good.chat.completions.create(
                model="smollm2",
                messages=CHAT,
                max_tokens=3,  # type: ignore[arg-type]
            ).choices
            with pytest.raises(openai.AuthenticationError, match="a valid API key is required"):
                bad.models.list()
            headers = {"Authorization": f"Bearer {key}"}
            with ollama.Client(host=gateway.url, headers=headers) as client:
                assert client.generate(model="smollm2", prompt="Once", stream=False,
                                       options={"num_predict": 3}).done  # fmt: skip
            with ollama.Client(host=gateway.url) as anonymous:
                with pytest.raises(ollama.ResponseError) as raised:
                    anonymous.chat(model="smollm2", messages=CHAT, stream=False)
                assert raised.value.status_code == 401
            # Two requests so far; the limit is three a minute.
            good.chat.completions.create(model="smollm2", messages=CHAT, max_tokens=2)  # type: ignore[arg-type]
            with pytest.raises(openai.RateLimitError, match="limit of 3 requests per minute"):
                good.chat.completions.create(model="smollm2", messages=CHAT, max_tokens=2)  # type: ignore[arg-type]

            # Admin routes take the admin key, not an ordinary one.
            assert admin_status(gateway.url, admin) == 200
            assert admin_status(gateway.url, key) == 401

            revoked = run_cli("gateway", "keys", "revoke", "app", env=env)
            assert revoked.code == 0, revoked.stderr

            def refused() -> bool:
                try:
                    good.models.list()
                except openai.AuthenticationError:
                    return True
                return False

            wait_for(refused, 30, "the gateway to refuse the revoked key")
    finally:
        stop(gateway.process)  # flushes the usage records still pending

    store = Store.open(f"sqlite:///{state / 'state.db'}")
    records = store.usage()
    app_id = next(k.id for k in store.list_keys() if k.name == "app")
    mine = [r for r in records if r["key_id"] == app_id]
    statuses = sorted(r["status"] for r in mine)
    assert statuses == [200, 200, 200], gateway.log.read_text()  # the 429 never reached a route
    chat = next(r for r in mine if r["route"] == "/v1/chat/completions")
    assert chat["model"] == "smollm2" and chat["backend"] in ("llama1", "llama2")
    assert chat["prompt_tokens"] > 0 and chat["completion_tokens"] > 0 and chat["latency_ms"] > 0
    generated = next(r for r in mine if r["route"] == "/api/generate")
    assert generated["completion_tokens"] > 0


def admin_status(url: str, key: str) -> int:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url + "/admin/backends",
                                     headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        with error:
            return int(error.code)
