"""The web app in a real browser (Debian's headless Chromium through Playwright), beside a
provisioned sandbox, the way an operator uses it: `clusterai web serve -i INVENTORY`.

One walk through the product, in order: log in; the overview lists every host; a worker's
inference server stopped shows down without a reload; a scale-out started from the page
streams its log; its run's per-host timeline; the stopped server's alert silenced from
the page (Alertmanager's API has the silence); an API key made on the page answers through
the gateway with the official openai client, and the request is on the usage page; hostile
strings in the store run no script. Every page visited is saved as a screenshot under
$CLUSTERAI_WEB_SCREENSHOTS (default: .artifacts/web-screenshots in the repository).

The cluster is the one test_cli_up.py converged with `clusterai up` over a vaulted
inventory (tests/integration/cli_cluster.py): ctl1 and worker1, and worker2 booted and
not in the inventory, which the page's scale-out adds and converges.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import CLUSTERAI, REPO, address, monitoring_get, run_cli, ssh, wait_for
from tests.integration.cli_cluster import CANARIES, Vaulted

pytestmark = pytest.mark.sandbox

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "browser test password"
SHOTS = Path(os.environ.get("CLUSTERAI_WEB_SCREENSHOTS", REPO / ".artifacts/web-screenshots"))
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 1">"\''


@pytest.fixture(scope="module")
def web(cli_converged: list[Any], vaulted: Vaulted, state_dir: Path) -> Iterator[str]:
    """`clusterai web serve -i` over the cluster's vaulted inventory, on a free loopback
    port, with an admin account."""
    argv = [str(CLUSTERAI), "web", "users", "add", "admin", "--role", "admin"]
    added = subprocess.run(argv, input=PASSWORD + "\n", capture_output=True, text=True,
                           check=False)  # fmt: skip
    assert added.returncode == 0, added.stderr
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (state_dir / "web.log").open("w")
    server = subprocess.Popen(
        [str(CLUSTERAI), "web", "serve", "-i", str(vaulted.inventory), "--vault-password-file",
         str(vaulted.password_file), "--listen", f"127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool | None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return None if server.poll() is None else False

    assert wait_for(answers, 30, "the web app to listen"), (state_dir / "web.log").read_text()
    try:
        yield base
    finally:
        server.terminate()
        server.wait(10)
        log.close()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    # In CI a missing browser fails here; it is never skipped.
    assert shutil.which(CHROMIUM), f"{CHROMIUM} is missing (apt-get install -y chromium)"
    if SHOTS.exists():
        shutil.rmtree(SHOTS)
    SHOTS.mkdir(parents=True)
    with sync_playwright() as started:
        yield started


def spki_pin(host: str, port: int) -> str:
    """The SHA-256 of the server's public key, base64: Chromium accepts the certificate of
    that one key (the cluster's CA is not in its trust store), and no other."""
    import base64
    import hashlib
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    pem = ssl.get_server_certificate((host, port))
    key = x509.load_pem_x509_certificate(pem.encode()).public_key()
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)  # fmt: skip
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{len(list(SHOTS.iterdir())):02d}-{name}.png"),
                    full_page=True)  # fmt: skip


def log_in(page: Any, base: str, password: str) -> None:
    page.goto(base + "/")
    assert page.url.startswith(base + "/login")
    page.fill("input[name=name]", "admin")
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")


def test_an_operator_walks_through_the_web_app(web: str, playwright: Any) -> None:
    """Two deployments of one app: the control host's (the web role: hosts from its
    Prometheus, alerts, keys and usage in the gateway's store) and this machine's
    `clusterai web serve -i` (jobs that run playbooks, their runs)."""
    import openai

    from clusterai_runner.config import Settings
    from clusterai_runner.store import Store

    # worker2 booted: test_cli_up.py's scale-outs grew the sandbox to three hosts and took
    # worker2 out of the cluster again (`sandbox up` answers with the sandbox as it is).
    grown = run_cli("sandbox", "up", "--hosts", "3", "--name", "cliup", "--json")
    assert grown.code == 0, grown.stderr
    sandbox = json.loads(grown.stdout)
    control, worker1 = address(sandbox, "ctl1"), address(sandbox, "worker1")
    ctl = f"https://{control}:8443"
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True,
        args=["--no-sandbox", f"--ignore-certificate-errors-spki-list={spki_pin(control, 8443)}"],
    )  # fmt: skip
    dialogs: list[str] = []
    try:
        cluster_page, local_page = browser.new_page(), browser.new_page()
        for page in (cluster_page, local_page):
            page.on("dialog", lambda d: (dialogs.append(d.message), d.accept()))
        admin = (Path(sandbox["inventory"]).parent / "web-admin-password").read_text().strip()
        page = cluster_page
        log_in(page, ctl, admin)

        # Every host the control host's Prometheus scrapes: ctl1 and worker1 (worker2 is
        # booted and not in the inventory).
        page.wait_for_selector('tr[data-host="worker1"] td[data-inference="up"]',
                               timeout=60_000)  # fmt: skip
        assert {"ctl1", "worker1"} <= set(page.locator("tr[data-host]").evaluate_all(
            "rows => rows.map(r => r.dataset.host)"))  # fmt: skip
        shot(page, "overview")

        # worker1's server stops: the page shows it down without a reload, within two
        # health intervals (Prometheus probes every 15 s; the page asks every 5 s).
        assert ssh(sandbox, worker1, "systemctl stop clusterai-llamacpp").returncode == 0
        stopped = time.monotonic()
        try:
            page.wait_for_selector('tr[data-host="worker1"] td[data-inference="down"]',
                                   timeout=2 * 15_000 + 5_000)  # fmt: skip
            shot(page, "overview-worker1-down")

            # A scale-out from this machine's app (it has the inventory), its log streamed.
            log_in(local_page, web, PASSWORD)
            local_page.goto(web + "/jobs/")
            shot(local_page, "jobs")
            local_page.fill("#scale-out input[name=name]", "worker2")
            local_page.fill("#scale-out input[name=address]", address(sandbox, "worker2"))
            local_page.click("#scale-out button[type=submit]")
            local_page.wait_for_url(f"{web}/jobs/*")
            local_page.wait_for_selector("#job-log tr >> text=task:", timeout=180_000)
            shot(local_page, "job-running")
            local_page.wait_for_selector("#job-log tr.end", timeout=600_000)
            ended = local_page.inner_text("#job-log tr.end")
            assert "ended: successful" in ended, local_page.inner_text("#job-log")[-3000:]
            shot(local_page, "job-done")
            local_page.click("#job-log tr.end a")
            local_page.wait_for_selector("svg.timeline")
            labels = set(local_page.locator("svg.timeline text.label").all_text_contents())
            assert {"ctl1", "worker2"} <= labels, labels
            assert local_page.locator("svg.timeline rect.bar").count() > 20
            shot(local_page, "run-timeline")

            # The new worker on the Models page: what it should serve, it serves (the page
            # shows the status watch's latest look, every 5 s).
            def as_desired() -> bool | None:
                local_page.goto(web + "/models/")
                row = local_page.locator('tr[data-models-host="worker2"]')
                return True if row.count() and "as desired" in row.inner_text() else None

            try:
                wait_for(as_desired, 30, "worker2 as desired on the Models page")
            finally:
                shot(local_page, "models")

            # The stopped server's alert, silenced (InferenceDown fires after 30 s on
            # this cluster: cli_cluster.INFERENCE_DOWN_FOR).
            def alert_shown() -> bool | None:
                page.goto(ctl + "/alerts/")
                found = page.locator('tr[data-alert="InferenceDown"][data-state="active"]')
                return True if found.count() else None

            wait_for(alert_shown, max(30.0, 150 - (time.monotonic() - stopped)), "the alert")
            shot(page, "alert-firing")
            page.goto(ctl + "/")  # the overview lists it among the alerts firing
            page.wait_for_selector('a[data-firing="InferenceDown"]', timeout=20_000)
            page.goto(ctl + "/alerts/")
            row = page.locator('tr[data-alert="InferenceDown"][data-state="active"]').first
            row.locator("input[name=comment]").fill("worker1 under maintenance")
            row.locator("button[type=submit]").click()
            page.wait_for_selector("p.flash.ok >> text=Silenced")
            shot(page, "alert-silenced")
            silences = json.loads(
                monitoring_get(
                    sandbox,
                    f"https://{control}:9093/api/v2/silences",
                    password=CANARIES["monitoring_password"],  # the vaulted inventory's
                )
            )
            mine = [s for s in silences if s["comment"] == "worker1 under maintenance"]
            assert mine and mine[0]["status"]["state"] == "active", silences
            assert mine[0]["createdBy"] == "admin"
            assert {(m["name"], m["value"]) for m in mine[0]["matchers"]} == {
                ("alertname", "InferenceDown"), ("instance", "worker1")}  # fmt: skip
        finally:
            assert ssh(sandbox, worker1, "systemctl start clusterai-llamacpp").returncode == 0

        # An API key made on the control host's page, used through its gateway with the
        # official client; the request on the usage page.
        page.goto(ctl + "/keys/")
        page.fill("form.card input[name=name]", "from-the-browser")
        page.click("form.card button[type=submit]")
        key = page.inner_text("#new-key").strip()
        shot(page, "key-created")
        client = openai.OpenAI(base_url=f"http://{control}:8000/v1", api_key=key)

        def answered() -> str | None:
            try:
                reply = client.chat.completions.create(
                    model="smollm2", max_tokens=8, temperature=0,
                    messages=[{"role": "user", "content": "Hello from the browser test."}],
                )  # fmt: skip
            except (openai.AuthenticationError, openai.APIStatusError):
                return None
            return reply.choices[0].message.content

        assert wait_for(answered, 60, "an answer with the page's key")

        def on_usage_page() -> bool | None:
            page.goto(ctl + "/usage/?window=1h&by=key")
            return True if page.locator('tr[data-group="from-the-browser"]').count() else None

        wait_for(on_usage_page, 30, "the request on the usage page")
        assert page.locator('figure[data-chart="requests"] polyline').count() >= 1
        shot(page, "usage")
        page.goto(ctl + "/")  # the gateway's rates, from the control host's Prometheus
        assert "requests/s" in page.inner_text("[data-gateway-rates]")
        for path, name in (("/gateway/", "gateway"), ("/hosts/worker1", "host-worker1"),
                           ("/runs/", "runs-control-host"), ("/audit", "audit")):  # fmt: skip
            page.goto(ctl + path)
            shot(page, name)

        # Hostile strings in a store render as text: no script runs.
        # Closed at once: a connection left to the garbage collector closes whenever it
        # runs, and SQLite's -wal and -shm files go with it, in another module's test.
        store = Store.open(Settings.from_env().store_url)
        try:
            run_id = store.start_run(HOSTILE, HOSTILE, HOSTILE)
            store.add_event(run_id, HOSTILE, HOSTILE, "failed", HOSTILE)
            store.finish_run(run_id, "failed", 2, {HOSTILE: {"failed": 1}})
        finally:
            store.close()
        local_page.goto(f"{web}/runs/{run_id}")
        local_page.wait_for_selector("svg.timeline")
        shot(local_page, "hostile-run")
        assert "<script>" in local_page.inner_text("main")  # shown as text
        local_page.goto(f"{web}/runs/")
        assert local_page.evaluate("window.__pwned") is None
        assert dialogs == []
    finally:
        browser.close()
