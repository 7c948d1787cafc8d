"""Operations started from the page: validate, scale out, scale in (drained first), pull a
model. Each runs the same use case as the CLI in a background thread, with a cancel token;
its progress (each host's checks, each task result) is kept as lines the page tails, and
the playbook run itself is stored like any other, so its timeline is on the runs page.

Jobs live in the web app's process (gunicorn serves it from one process with threads), the
last 50 kept. One job that changes the cluster runs at a time: a second is refused (409)
until the first ends, as two playbooks editing one inventory would collide.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.wrappers import Response

from clusterai_runner.errors import ClusterAIError, UsageError
from clusterai_runner.web.extensions import settings, store

# The use cases that run playbooks and SSH load Ansible and asyncssh: imported where a job
# starts, so that the app also runs where they are not installed (the web role's control
# host), with the jobs refused there.
if TYPE_CHECKING:
    from clusterai_runner.usecases.converge import CancelToken, TaskEvent
    from clusterai_runner.usecases.scale import ScaleResult
    from clusterai_runner.usecases.validate import HostReport

bp = Blueprint("jobs", __name__, url_prefix="/jobs")
KEEP = 50


@dataclass
class Job:
    id: int
    kind: str  # validate, scale-out, scale-in, pull
    target: str
    user: str
    started_at: float = field(default_factory=time.time)
    status: str = "running"  # running, successful, failed, canceled
    lines: list[str] = field(default_factory=list)
    run_id: int | None = None
    cancel: CancelToken = field(default_factory=lambda: _token())

    def say(self, line: str) -> None:
        self.lines.append(f"{time.strftime('%H:%M:%S')} {line}")


def _token() -> CancelToken:
    from clusterai_runner.usecases.converge import CancelToken

    return CancelToken()


class Jobs:
    def __init__(self, app: Flask) -> None:
        self.app = app
        self.jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def get(self, job_id: int) -> Job | None:
        return self.jobs.get(job_id)

    def newest(self) -> list[Job]:
        return sorted(self.jobs.values(), key=lambda j: -j.id)

    def start(self, kind: str, target: str, user: str, work: Callable[[Job], str]) -> Job:
        """Run ``work`` (which returns the job's final status) in a thread."""
        with self._lock:
            busy = [j for j in self.jobs.values() if j.status == "running" and j.kind != "validate"]
            if busy and kind != "validate":
                other = busy[0]
                what = f"job {other.id} ({other.kind} {other.target})"
                raise UsageError(what, "is still running", "wait for it to end, or cancel it")
            job = Job(next(self._ids), kind, target, user)
            self.jobs[job.id] = job
            for old in sorted(self.jobs)[:-KEEP]:
                if self.jobs[old].status != "running":
                    del self.jobs[old]

        def body() -> None:
            try:
                job.status = work(job)
            except ClusterAIError as error:
                job.say(f"error: {error}")
                job.status = "canceled" if error.exit_code == 130 else "failed"
            except Exception as error:  # the page must learn that the thread died
                job.say(f"internal error: {type(error).__name__}: {error}")
                job.status = "failed"
            job.say(f"{kind} {job.status}")
            with self.app.app_context():
                store.current.add_audit(job.user, f"job.{kind}", job.target,
                                        "ok" if job.status == "successful" else job.status,
                                        f"job {job.id}, run {job.run_id or '-'}")  # fmt: skip

        threading.Thread(target=body, name=f"clusterai-job-{job.id}", daemon=True).start()
        return job


def init_app(app: Flask) -> None:
    app.extensions["clusterai_jobs"] = Jobs(app)


def _jobs() -> Jobs:
    jobs: Jobs = current_app.extensions["clusterai_jobs"]
    return jobs


def _inventory() -> Path:
    inventory: Path | None = current_app.config["CLUSTERAI_INVENTORY"]
    if inventory is None:
        raise UsageError("jobs", "no inventory is configured", "clusterai web serve -i INVENTORY")
    return inventory


def _vault() -> dict[str, Any]:
    vault = current_app.config["CLUSTERAI_VAULT"]
    return {"vault": vault} if vault is not None else {}


def _on_event(job: Job) -> Callable[[TaskEvent], None]:
    def seen(event: TaskEvent) -> None:
        if event.status == "started":
            job.say(f"task: {event.task}")
        else:
            reason = f": {event.message}" if event.status in ("failed", "unreachable") else ""
            job.say(f"{event.host} {event.status}{reason}")

    return seen


def _report(job: Job) -> Callable[[HostReport], None]:
    def seen(report: HostReport) -> None:
        job.say(f"{report.name} ({report.address}): {report.status}")
        for check in report.checks:
            if check.status != "pass":
                job.say(f"  {check.status} {check.name}: {check.detail} {check.fix}".rstrip())

    return seen


def _reports(job: Job) -> Callable[[list[HostReport]], None]:
    def seen(reports: list[HostReport]) -> None:
        for report in reports:
            _report(job)(report)

    return seen


def _ended(job: Job, result: ScaleResult) -> str:
    if result.record is None:
        return "failed"
    job.run_id = result.record.id
    return result.record.outcome.status


def _page(status: int = 200, **extra: object) -> tuple[str, int]:
    return render_template("jobs.html", jobs=_jobs().newest(),
                           has_inventory=current_app.config["CLUSTERAI_INVENTORY"] is not None,
                           **extra), status  # fmt: skip


@bp.get("/")
def index() -> tuple[str, int]:
    return _page()


def _started(kind: str, target: str, work: Callable[[Job], str]) -> Response | tuple[str, int]:
    g.audit_target = f"{kind} {target}"
    try:
        job = _jobs().start(kind, target, g.user.name, work)
    except ClusterAIError as error:
        g.audit_detail = str(error)
        return _page(409 if "still running" in str(error) else 400, error=str(error))
    g.audit_detail = f"job {job.id}"
    return redirect(url_for("jobs.show", job_id=job.id))


def _validate_work(
    inventory: Path, limit: str | None, vault: dict[str, Any]
) -> Callable[[Job], str]:
    from clusterai_runner.usecases import validate as validate_usecase

    targets = validate_usecase.validate_targets(inventory, limit, **vault)

    def work(job: Job) -> str:
        job.say(f"checking {len(targets)} hosts over SSH")
        reports = validate_usecase.validate(targets, on_done=_report(job))
        return "failed" if any(r.status == "fail" for r in reports) else "successful"

    return work


@bp.post("/validate")
def validate() -> Response | tuple[str, int]:
    limit = request.form.get("limit", "").strip() or None
    try:
        work = _validate_work(_inventory(), limit, _vault())
    except ClusterAIError as error:
        return _page(400, error=str(error))
    return _started("validate", limit or "all hosts", work)


@bp.post("/scale-out")
def scale_out() -> Response | tuple[str, int]:
    form = request.form
    name = form.get("name", "").strip()
    address = form.get("address", "").strip()
    group = form.get("group", "workers").strip() or "workers"
    port_text = form.get("port", "").strip()
    try:
        inventory = _inventory()
        from clusterai_runner.usecases import scale

        if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
            raise UsageError(f"port {port_text!r}", "is not a port", "from 1 to 65535")
        hosts = scale.new_hosts([name], [address] if address else [],
                                form.get("user", "").strip() or None,
                                int(port_text) if port_text else None)  # fmt: skip
    except ClusterAIError as error:
        return _page(400, error=str(error))
    conf, opened, vault = settings(), store.current, _vault()
    accept = form.get("accept_new_host_keys") == "on"

    def work(job: Job) -> str:
        job.say(f"adding {name} to {group} and checking it over SSH")
        result = scale.scale_out(conf, inventory, group, hosts, store=opened,
                                 accept_new_host_keys=accept, on_event=_on_event(job),
                                 on_validated=_reports(job),
                                 cancel=job.cancel, **vault)  # fmt: skip
        return _ended(job, result)

    return _started("scale-out", name, work)


@bp.post("/scale-in")
def scale_in() -> Response | tuple[str, int]:
    names = [n for n in request.form.get("names", "").replace(",", " ").split() if n]
    drain_text = request.form.get("drain_timeout", "60").strip() or "60"
    try:
        inventory = _inventory()
        from clusterai_runner.usecases import scale

        if not names:
            raise UsageError("scale-in", "no host named", "name the workers to take out")
        if not drain_text.isdigit() or not 0 <= int(drain_text) <= 3600:
            raise UsageError(f"drain timeout {drain_text!r}", "is out of range", "0 to 3600 s")
        scale.scale_in_targets(settings(), inventory, names, store.current, **_vault())
    except ClusterAIError as error:
        return _page(400, error=str(error))
    conf, opened, vault = settings(), store.current, _vault()
    wipe = request.form.get("wipe") == "on"

    def work(job: Job) -> str:
        job.say(f"draining {', '.join(names)} at the gateway, then stopping their services")
        result = scale.scale_in(conf, inventory, names, store=opened,
                                drain_timeout=int(drain_text), wipe=wipe,
                                on_event=_on_event(job), cancel=job.cancel, **vault)  # fmt: skip
        return _ended(job, result)

    return _started("scale-in", " ".join(names), work)


@bp.post("/pull")
def pull() -> Response | tuple[str, int]:
    model = request.form.get("model", "").strip()
    hosts = [n for n in request.form.get("hosts", "").replace(",", " ").split() if n]
    try:
        inventory = _inventory()
        from clusterai_runner.usecases import models

        targets = [h.name for h in models.pull_targets(inventory, model, hosts or None,
                                                        **_vault())]  # fmt: skip
    except ClusterAIError as error:
        return _page(400, error=str(error))
    conf, opened, vault = settings(), store.current, _vault()

    def work(job: Job) -> str:
        job.say(f"putting {model} on {', '.join(targets)}")
        record = models.pull(conf, inventory, model, targets, store=opened,
                             on_event=_on_event(job), cancel=job.cancel, **vault)  # fmt: skip
        job.run_id = record.id
        return record.outcome.status

    return _started("pull", f"{model} on {' '.join(targets)}", work)


def _job_or_404(job_id: int) -> Job:
    job = _jobs().get(job_id)
    if job is None:
        abort(404, f"There is no job {job_id} (jobs live until the web app restarts).")
    return job


@bp.get("/<int:job_id>")
def show(job_id: int) -> str:
    return render_template("job.html", job=_job_or_404(job_id))


@bp.get("/<int:job_id>/fragments/log")
def log(job_id: int) -> str:
    job = _job_or_404(job_id)
    after = max(0, request.args.get("after", default=0, type=int))
    lines = job.lines[after:]
    return render_template("_job_log.html", job=job, lines=lines, first=after)


@bp.post("/<int:job_id>/cancel")
def cancel(job_id: int) -> Response:
    job = _job_or_404(job_id)
    g.audit_target = f"job {job_id}"
    job.cancel.cancel()
    job.say(f"cancel asked by {g.user.name}")
    return redirect(url_for("jobs.show", job_id=job_id))
