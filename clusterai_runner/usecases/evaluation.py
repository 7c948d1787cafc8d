"""The evaluation gate of a model rollout: a small set of prompts (``evals/smoke.yml``, or
the operator's own file), each with rules its answer must meet, sent to one server for a
model; and the verdict on a new model against the old one: the new one must pass every case
the old one passes.

Rules: ``contains`` (text, or a list of texts, the answer must hold, any case), ``json``
(the answer is JSON, a Markdown code fence around it allowed), ``max_latency_s`` (the whole
answer within that many seconds). ``max_tokens`` bounds what the model may generate
(default 64). Prompts go to the server's OpenAI-compatible ``/v1/chat/completions`` at
temperature 0 (Ollama and llama.cpp's server both have it).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clusterai_runner.adapters.http import JsonApi, ServiceUnavailable
from clusterai_runner.config import REPO
from clusterai_runner.errors import UsageError

DEFAULT = REPO / "evals" / "smoke.yml"
FIELDS = {"name", "prompt", "contains", "json", "max_latency_s", "max_tokens"}
FIX = "see evals/smoke.yml for the form"


@dataclass(frozen=True)
class Case:
    name: str
    prompt: str
    contains: tuple[str, ...] = ()
    json: bool = False
    max_latency_s: float | None = None
    max_tokens: int = 64


@dataclass
class Outcome:
    case: str
    passed: bool
    problems: list[str] = field(default_factory=list)
    latency_s: float = 0.0
    answer: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"case": self.case, "passed": self.passed, "problems": self.problems,
                "latency_s": round(self.latency_s, 3), "answer": self.answer[:500]}  # fmt: skip


def load(path: Path) -> list[Case]:
    """The cases of an evaluation file, checked: one line naming the file and field where
    something is wrong (exit 2)."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UsageError(str(path), f"cannot be read ({exc.strerror or exc})", FIX) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UsageError(str(path), f"is not YAML{where}", FIX) from exc
    listed = raw.get("cases") if isinstance(raw, dict) else None
    if not isinstance(listed, list) or not listed:
        raise UsageError(str(path), "holds no list of cases under `cases:`", FIX)
    cases: list[Case] = []
    for index, item in enumerate(listed):
        where = f"{path}: cases[{index}]"
        if not isinstance(item, dict):
            raise UsageError(where, "is not a mapping", FIX)
        unknown = sorted(set(item) - FIELDS)
        if unknown:
            raise UsageError(f"{where}.{unknown[0]}", "is not a rule",
                             f"use {', '.join(sorted(FIELDS))}")  # fmt: skip
        cases.append(_case(where, item, {c.name for c in cases}))
    return cases


def _case(where: str, item: dict[str, Any], seen: set[str]) -> Case:
    name, prompt = item.get("name"), item.get("prompt")
    if not isinstance(name, str) or not name.strip() or name in seen:
        raise UsageError(f"{where}.name", "must be a name of its own", "give each case one")
    if not isinstance(prompt, str) or not prompt.strip():
        raise UsageError(f"{where}.prompt", "must be the text to send", FIX)
    contains = item.get("contains", [])
    contains = [contains] if isinstance(contains, str) else contains
    if not isinstance(contains, list) or not all(isinstance(c, str) and c for c in contains):
        raise UsageError(f"{where}.contains", "must be a text or a list of texts", FIX)
    wants_json = item.get("json", False)
    if not isinstance(wants_json, bool):
        raise UsageError(f"{where}.json", "must be true or false", FIX)
    latency = item.get("max_latency_s")
    if latency is not None and (isinstance(latency, bool) or not isinstance(latency, int | float)
                                or latency <= 0):  # fmt: skip
        raise UsageError(f"{where}.max_latency_s", "must be a number of seconds above 0", FIX)
    tokens = item.get("max_tokens", 64)
    if isinstance(tokens, bool) or not isinstance(tokens, int) or not 1 <= tokens <= 4096:
        raise UsageError(f"{where}.max_tokens", "must be a whole number from 1 to 4096", FIX)
    if not contains and not wants_json and latency is None:
        raise UsageError(where, "has no rule", "give it contains, json or max_latency_s")
    return Case(name, prompt, tuple(contains), wants_json,
                float(latency) if latency is not None else None, tokens)  # fmt: skip


def is_json(text: str) -> bool:
    fenced = re.fullmatch(r"\s*```(?:json)?\s*(.*?)\s*```\s*", text, re.S)
    try:
        json.loads(fenced.group(1) if fenced else text)
    except ValueError:
        return False
    return True


def check(case: Case, answer: str, latency_s: float) -> list[str]:
    """What the answer does wrong by the case's rules (nothing: it passes)."""
    problems = [f"no {text!r}" for text in case.contains if text.lower() not in answer.lower()]
    if case.json and not is_json(answer):
        problems.append("not JSON")
    if case.max_latency_s is not None and latency_s > case.max_latency_s:
        problems.append(f"{latency_s:.1f} s, over {case.max_latency_s:g} s")
    return problems


def run(
    server: str, model: str, cases: list[Case], headers: dict[str, str] | None = None
) -> list[Outcome]:
    """Each case sent to ``model`` on the server at ``server`` (its base URL), in turn."""
    timeout = max((c.max_latency_s or 60.0) for c in cases) + 30.0
    api = JsonApi(f"{model} at {server}", server, headers=headers or {}, timeout=timeout)
    outcomes = []
    for case in cases:
        body = {"model": model, "temperature": 0, "max_tokens": case.max_tokens, "stream": False,
                "messages": [{"role": "user", "content": case.prompt}]}  # fmt: skip
        started = time.monotonic()
        try:
            answer = api.post("/v1/chat/completions", body)
            text = str(answer["choices"][0]["message"]["content"] or "")
        except ServiceUnavailable as exc:
            outcomes.append(Outcome(case.name, False, [str(exc)], time.monotonic() - started))
            continue
        except (KeyError, IndexError, TypeError):
            outcomes.append(Outcome(case.name, False, ["not a chat completion"],
                                    time.monotonic() - started))  # fmt: skip
            continue
        latency = time.monotonic() - started
        problems = check(case, text, latency)
        outcomes.append(Outcome(case.name, not problems, problems, latency, text))
    return outcomes


def verdict(old: list[Outcome], new: list[Outcome], old_name: str, new_name: str) -> str:
    """Why the new model fails the gate, or "" when it passes: every case the old model
    passes, the new one must pass too."""
    worse = [n for o, n in zip(old, new, strict=True) if o.passed and not n.passed]
    if not worse:
        return ""
    said = "; ".join(f"{n.case} ({', '.join(n.problems)})" for n in worse)
    return f"{new_name} fails what {old_name} passes: {said}"
