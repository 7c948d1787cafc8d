"""The healing ladder (usecases/healing.py): which step, for which flag, when."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from clusterai_runner.store import AutoscaleDecision
from clusterai_runner.usecases.healing import next_step

NOW = 1_800_000_000.0
FLAG = {"kind": "model_on_cpu", "model": "qwen:latest", "detail": "75% of 4.0 GB"}


def backend(api: str, *flags: dict[str, str]) -> dict[str, Any]:
    return {"api": api, "url": "http://192.0.2.7:11434", "flags": list(flags)}


def taken(step: str, ago: float, host: str = "gpu1", model: str = "qwen:latest") -> Any:
    at = datetime.fromtimestamp(NOW - ago).astimezone().isoformat()
    return AutoscaleDecision(1, at, "heal", "healing", host, "", {"step": step, "model": model},
                             "succeeded", "", None, 1.0)  # fmt: skip


def test_the_first_allowed_step_then_the_next_while_the_flag_outlives_it() -> None:
    gateway = {"gpu1": backend("ollama", FLAG), "gpu2": backend("ollama")}
    allowed = ("reload", "restart", "drain")
    first = next_step(gateway, allowed, [], 300, NOW)
    assert first is not None and (first.backend, first.model, first.step) == (
        "gpu1", "qwen:latest", "reload")  # fmt: skip
    assert first.reason == "model_on_cpu for qwen:latest on gpu1 (75% of 4.0 GB): reload"
    # The reload's effect is not known yet; then the flag outlived it.
    assert next_step(gateway, allowed, [taken("reload", 100)], 300, NOW) is None
    after = next_step(gateway, allowed, [taken("reload", 400)], 300, NOW)
    assert after is not None and after.step == "restart"
    history = [taken("drain", 400), taken("restart", 800), taken("reload", 1200)]
    assert next_step(gateway, allowed, history, 300, NOW) is None  # the operator's turn
    # A flag that comes back long after the last step starts the ladder again.
    again = next_step(gateway, allowed, [taken("drain", 5000)], 300, NOW)
    assert again is not None and again.step == "reload"
    # Another model's or worker's steps are theirs.
    other = next_step(gateway, allowed, [taken("reload", 100, model="llama3")], 300, NOW)
    assert other is not None and other.step == "reload"


def test_a_llamacpp_worker_has_no_reload_and_nothing_allowed_is_nothing_done() -> None:
    drop = {"kind": "throughput_drop", "model": "smollm2", "detail": "2.0 tokens/s"}
    gateway = {"worker1": backend("openai", drop)}
    heal = next_step(gateway, ("reload", "restart"), [], 300, NOW)
    assert heal is not None and (heal.step, heal.flag) == ("restart", "throughput_drop")
    assert next_step(gateway, ("reload",), [], 300, NOW) is None
    assert next_step(gateway, (), [], 300, NOW) is None
