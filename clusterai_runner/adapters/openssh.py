"""The one builder of OpenSSH ``ssh`` command lines: validate's fallback for hosts whose
options only OpenSSH understands, the sandbox's readiness checks, and the tests.

Host key checking is always on (``StrictHostKeyChecking=yes``, or ``accept-new`` when
asked), and ssh takes the first value given for an option, so the options set here come
before any the inventory adds.
"""

from __future__ import annotations

from collections.abc import Sequence


def openssh_argv(
    host: str,
    *remote: str,
    port: int = 22,
    user: str | None = None,
    key_file: str | None = None,
    known_hosts: str | None = None,
    accept_new: bool = False,
    connect_timeout: float | None = None,
    multiplex: bool = True,
    quiet: bool = False,
    extra: Sequence[str] = (),
) -> list[str]:
    """``ssh`` to ``host`` running ``remote`` (nothing: a login), never asking a question.

    ``known_hosts`` replaces the user's and the global known_hosts files; ``multiplex``
    False keeps ssh off any ControlMaster; ``extra`` are the inventory's own arguments.
    """
    argv = ["ssh", "-o", "BatchMode=yes"]
    argv += ["-o", f"StrictHostKeyChecking={'accept-new' if accept_new else 'yes'}"]
    if known_hosts is not None:
        argv += ["-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
    if connect_timeout is not None:
        argv += ["-o", f"ConnectTimeout={max(1, int(connect_timeout))}"]
    if not multiplex:
        argv += ["-o", "ControlMaster=no", "-o", "ControlPath=none"]
    if quiet:
        argv += ["-o", "LogLevel=ERROR"]
    if key_file is not None:
        argv += ["-i", key_file, "-o", "IdentitiesOnly=yes"]
    argv += ["-p", str(port)]
    if user is not None:
        argv += ["-l", user]
    return [*argv, *extra, host, *remote]
