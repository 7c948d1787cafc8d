"""The ``clusterai`` command line.

Exit codes: 0 ok, 1 a run failed, 2 usage or configuration error, 3 preflight failed,
130 interrupted. Errors are one line on stderr, ``error: <what>: <why> (<how to fix>)``;
``--debug`` (or ``CLUSTERAI_DEBUG=1``) adds the traceback.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import click

from clusterai_runner import __version__
from clusterai_runner.cli.common import EXIT_CODES
from clusterai_runner.config import Settings
from clusterai_runner.errors import ClusterAIError

# Each command and the module it lives in, imported only when that command runs (or when
# `clusterai --help` lists them all): `clusterai sandbox list` does not load the state
# store's SQLAlchemy or ansible-runner, which made every command start in about a second.
COMMANDS = {
    "autoscale": "autoscale:autoscale_command",
    "cloud": "cloud:cloud_command",
    "gateway": "gateway:gateway_command",
    "models": "models:models_command",
    "runs": "runs:runs",
    "sandbox": "sandbox:sandbox",
    "scale-in": "cluster:scale_in_command",
    "scale-out": "cluster:scale_out_command",
    "status": "cluster:status_command",
    "up": "cluster:up",
    "validate": "cluster:validate_command",
    "web": "web:web_command",
}


class LazyGroup(click.Group):
    """A group whose commands are imported from ``COMMANDS`` when they are asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attribute = COMMANDS[cmd_name].split(":")
        command = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
        assert isinstance(command, click.Command) and command.name == cmd_name, cmd_name
        return command


@click.group(
    cls=LazyGroup, epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(__version__, prog_name="clusterai")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Cluster AI: turn a list of machines into one self-hosted AI cluster."""
    settings = Settings.from_env()
    if debug and not settings.debug:
        settings = Settings(**{**settings.__dict__, "debug": True})
    ctx.obj = settings


def _wants_debug(argv: Sequence[str]) -> bool:
    if "--debug" in argv:
        return True
    try:
        return Settings.from_env().debug
    except ClusterAIError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and turn every failure into one line and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = _wants_debug(args)
    try:
        result: Any = cli.main(args=args, prog_name="clusterai", standalone_mode=False)
    except ClusterAIError as error:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {error}", err=True)
        return error.exit_code
    except click.UsageError as error:
        command = error.ctx.command_path if error.ctx else "clusterai"
        click.echo(f"error: {command}: {error.format_message()} (see `{command} --help`)", err=True)
        return 2
    except click.ClickException as error:
        click.echo(f"error: {error.format_message()}", err=True)
        return error.exit_code
    except (KeyboardInterrupt, click.Abort):
        click.echo("error: interrupted", err=True)
        return 130
    except Exception as error:
        if debug:
            traceback.print_exc()
        click.echo(
            f"error: internal error: {type(error).__name__}: {error} "
            "(re-run with --debug and report the traceback)",
            err=True,
        )
        return 1
    return result if isinstance(result, int) else 0
