"""How the CLI opens an inventory's ansible-vault encrypted values, and hands the same
secret to ansible-playbook, without writing the password anywhere.

Either a password file (or an executable script that prints the password, as Ansible
runs it) that the operator keeps, passed to ansible-playbook as ``--vault-password-file``,
or a password typed at a prompt (``--ask-vault-pass``), which stays in this process's
memory and reaches ansible-playbook through its own prompt (ansible-runner answers it
over the pseudo-terminal). Without either, ``ANSIBLE_VAULT_PASSWORD_FILE`` works as it
does for ansible-playbook.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusterai_runner.errors import UsageError

# ansible-playbook --ask-vault-pass asks exactly this.
PROMPT = r"^Vault password:\s*?$"


@dataclass(frozen=True)
class Vault:
    password_file: Path | None = None
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        path = self.password_file
        if path is not None and not (path.is_file() and os.access(path, os.R_OK)):
            raise UsageError(
                f"--vault-password-file {path}", "is not a readable file", "give the file's path"
            )

    def secrets(self, loader: Any) -> list[tuple[str, Any]]:
        """Vault secrets for Ansible's DataLoader (``loader.set_vault_secrets``)."""
        from ansible.errors import AnsibleError
        from ansible.parsing.vault import VaultSecret, get_file_vault_secret

        if self.password is not None:
            return [("default", VaultSecret(self.password.encode()))]
        path = self.password_file or _configured_file()
        if path is None:
            return []
        try:
            secret = get_file_vault_secret(filename=str(path), loader=loader)
            secret.load()
        except AnsibleError as exc:
            where = f"--vault-password-file {path}" if self.password_file else str(path)
            raise UsageError(where, str(exc).splitlines()[0], "check the file") from exc
        return [("default", secret)]

    def runner_arguments(self) -> tuple[list[str], dict[str, str]]:
        """ansible-playbook's options for this vault, and the prompt answers for
        ansible-runner (the password is never on a command line)."""
        if self.password is not None:
            return ["--ask-vault-pass"], {PROMPT: self.password}
        if self.password_file is not None:
            return ["--vault-password-file", shlex.quote(str(self.password_file))], {}
        return [], {}


NO_VAULT = Vault()


def _configured_file() -> Path | None:
    """ANSIBLE_VAULT_PASSWORD_FILE (or ansible.cfg's vault_password_file), as
    ansible-playbook would read it."""
    from ansible import constants

    value = os.environ.get("ANSIBLE_VAULT_PASSWORD_FILE") or constants.DEFAULT_VAULT_PASSWORD_FILE
    return Path(os.path.expanduser(str(value))) if value else None
