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
"""

import json
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
        response = self._open("POST", "/api/pull", body, label=f"pull {name}")
        status = ""
        for raw in response:
            line = raw.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError as exc:
                raise OllamaError(f"pull {name}: unreadable progress line {line[:80]!r}") from exc
            if "error" in event:
                raise OllamaError(f"pull {name}: {event['error']}")
            status = event.get("status", status)
        if status != "success":
            raise OllamaError(
                f"pull {name}: the server stopped before success (last status: {status or 'none'})"
            )

    def delete(self, name: str) -> None:
        self._open("DELETE", "/api/delete", {"model": name}, label=f"remove {name}")


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
        },
        supports_check_mode=True,
    )
    p = module.params
    if p["prune"] and p["state"] == "absent":
        module.fail_json(msg="ollama_model: prune=true only goes with state=present")
    if any(not n.strip() for n in p["name"]):
        module.fail_json(msg="ollama_model: name holds an empty model name")

    api = OllamaAPI(p["api_url"], p["timeout"])
    pulled: list[str] = []
    removed: list[str] = []
    try:
        held = api.models()
        to_pull, to_remove = plan(held, p["name"], p["state"], p["prune"])
        if module.check_mode:
            pulled, removed = to_pull, to_remove
        else:
            for name in to_pull:
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
        )
    module.exit_json(
        changed=bool(pulled or removed),
        pulled=pulled,
        removed=removed,
        models=models,
    )


if __name__ == "__main__":
    main()
