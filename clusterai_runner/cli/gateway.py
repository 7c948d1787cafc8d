"""``clusterai gateway``: the gateway in the foreground, and its API keys."""

from __future__ import annotations

import json
from pathlib import Path

import click

from clusterai_runner.cli.common import EXIT_CODES, JSON_OPTION, settings_of


@click.group("gateway", epilog=EXIT_CODES, invoke_without_command=True)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The gateway's YAML configuration (backends, aliases, queue, health, cache, auth).",
)
@click.option("--listen", help="HOST:PORT to listen on [127.0.0.1:8000].")
@click.option(
    "--backend",
    "backends",
    multiple=True,
    help="A backend URL, e.g. http://192.0.2.21:8080 or ollama=http://192.0.2.22:11434.",
)
@click.option(
    "-i",
    "--inventory",
    type=click.Path(path_type=Path),
    help="Also serve through every worker of this inventory (its inference server).",
)
@click.pass_context
def gateway_command(
    ctx: click.Context,
    config_path: Path | None,
    listen: str | None,
    backends: tuple[str, ...],
    inventory: Path | None,
) -> None:
    """One OpenAI- and Ollama-compatible endpoint over every backend.

    \b
    OpenAI API: POST /v1/chat/completions, /v1/completions, /v1/embeddings; GET /v1/models.
    Ollama API: POST /api/chat, /api/generate, /api/embed; GET /api/tags, /api/ps,
    /api/version. Backends: the config file's, --backend URLs, and with -i every worker
    of the inventory (llama.cpp or Ollama, by clusterai_inference_backend).
    Every API route needs an API key (Authorization: Bearer KEY; see
    `clusterai gateway keys`) unless the config says auth: {enabled: false}, which is
    allowed on loopback addresses only. GET /healthz, /metrics; admin routes (an --admin
    key, or CLUSTERAI_GATEWAY_ADMIN_KEY): GET /admin/backends, POST
    /admin/backends/NAME/drain and /undrain. Usage records go to the state store.
    Runs until Ctrl-C or SIGTERM.
    """
    if ctx.invoked_subcommand is not None:
        return
    from clusterai_runner.gateway.config import GatewayConfig
    from clusterai_runner.gateway.service import run_gateway
    from clusterai_runner.usecases.gateway_backends import gateway_config

    def read() -> GatewayConfig:
        return gateway_config(config_path, backends, listen, inventory)

    run_gateway(read, settings_of(ctx), lambda line: click.echo(line, err=True))


@gateway_command.group("keys", epilog=EXIT_CODES)
def gateway_keys() -> None:
    """The gateway's API keys, kept hashed in the state store."""


@gateway_keys.command("create", epilog=EXIT_CODES)
@click.argument("name")
@click.option("--rpm", type=click.IntRange(1), help="Requests per minute allowed.")
@click.option("--tpm", type=click.IntRange(1), help="Tokens per minute allowed.")
@click.option("--admin", is_flag=True, help="Also allowed on the admin routes.")
@click.option(
    "--tenant",
    is_flag=True,
    help="A separate tenant: cached answers are kept apart from other keys' (cache.scope).",
)
@click.pass_context
def gateway_keys_create(
    ctx: click.Context, name: str, rpm: int | None, tpm: int | None, admin: bool, tenant: bool
) -> None:
    """Create a key and print it, once: only its hash is kept."""
    from clusterai_runner.usecases import keys as key_cases  # SQLAlchemy only here

    key = key_cases.create(settings_of(ctx), name, admin, rpm, tpm, tenant)
    click.echo(key)
    click.echo(f"key {name} created; it is shown only now", err=True)


@gateway_keys.command("generate", epilog=EXIT_CODES)
def gateway_keys_generate() -> None:
    """Print a fresh key without storing it: for a vault file that the gateway role
    gives to the gateway (gateway_api_keys)."""
    from clusterai_runner.usecases import keys as key_cases  # SQLAlchemy only here

    click.echo(key_cases.generate())


@gateway_keys.command("list", epilog=EXIT_CODES)
@JSON_OPTION
@click.pass_context
def gateway_keys_list(ctx: click.Context, as_json: bool) -> None:
    """Every key: name, prefix, limits, created and revoked times (never the key)."""
    from clusterai_runner.usecases import keys as key_cases  # SQLAlchemy only here

    keys = key_cases.list_keys(settings_of(ctx))
    if as_json:
        click.echo(json.dumps([k.to_json() for k in keys], indent=2))
        return
    if not keys:
        click.echo("no keys; create one with `clusterai gateway keys create NAME`")
    for k in keys:
        state = f"revoked {k.revoked_at}" if k.revoked_at else "active"
        limits = f"rpm={k.rpm or '-'} tpm={k.tpm or '-'}"
        click.echo(
            f"{k.name:<20} cai_{k.prefix}_…  {limits:<22} {'admin ' if k.admin else ''}"
            f"{'tenant ' if k.tenant else ''}{state}"
        )


@gateway_keys.command("revoke", epilog=EXIT_CODES)
@click.argument("name")
@click.pass_context
def gateway_keys_revoke(ctx: click.Context, name: str) -> None:
    """Revoke a key; running gateways refuse it within their auth.refresh_s."""
    from clusterai_runner.usecases import keys as key_cases  # SQLAlchemy only here

    key_cases.revoke(settings_of(ctx), name)
    click.echo(f"key {name} revoked")
