"""The ``spl`` command line (typer): every command and group is registered here, in one place.

The app and its shared options live in :mod:`spl.cli.app`; the command modules define functions and
sub-apps and import neither this module nor each other's registrations, so imports run one way
(app ← command modules ← main) and the order of ``spl --help`` is the order below. Read commands take
``-o json`` (or ``--json``: :func:`spl.cli.app.accept_json_flag` adds it once all are registered);
``SYNCROPEL_HOME``, ``SPL_SERVE_URL`` and ``SPL_TOKEN`` are honoured.

``spl --help`` must list every group, so every command module is imported on every call: they keep
their module level light (typer, the CLI's helpers, pure ``spl.core`` rules) and import what is heavy
(trio and the daemon in ``serve``, the soak engine in ``federation soak``, httpx in
:mod:`spl.cli.client`) where it is used.
"""

from __future__ import annotations

import enum
import os
import sys
from collections.abc import Callable
from typing import Any

import typer

from spl.cli import (
    actors,
    admin,
    aitl,
    config,
    consent,
    debug,
    discovery,
    doctor,
    federation,
    fleet,
    fleet_control,
    pairing,
    portability,
    records,
    rotation,
    server,
    soak,
    tasks,
)
from spl.cli.app import accept_json_flag, app
from spl.cli.client import CliError
from spl.daemon.home import HomeError

__all__ = ["app", "completion", "run"]

# What the completion scripts set to ask ``spl`` for candidates (typer's ``_<PROG>_COMPLETE`` convention).
COMPLETE_VAR = "_SPL_COMPLETE"


class Shell(enum.StrEnum):
    """The shells `spl completion` writes a script for (typer also knows PowerShell; nobody asked for it)."""

    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def completion(shell: Shell = typer.Argument(..., help="The shell to complete in: bash, zsh or fish.")) -> None:
    """Print the shell completion script for spl (nothing is installed or written).

    Load it for this shell session, or add the line to the shell's start-up file:

      bash: source <(spl completion bash)      (in ~/.bashrc)

      zsh:  source <(spl completion zsh)       (in ~/.zshrc, after compinit)

      fish: spl completion fish | source       (in ~/.config/fish/config.fish)

    Example: source <(spl completion bash)
    """
    # typer writes and answers completion scripts but exports no API for it besides --install-completion, which
    # this app leaves off; this is what that option uses (tests/cli/test_cli_basics.py pins it).
    from typer._completion_shared import get_completion_script

    typer.echo(get_completion_script(prog_name="spl", complete_var=COMPLETE_VAR, shell=shell.value))


COMMANDS: tuple[Callable[..., Any], ...] = (
    server.version,
    server.init,
    server.serve,
    server.status,
    doctor.doctor,
    records.intend,
    records.do,
    records.know,
    records.learn,
    records.emit,
    federation.sync,
    portability.export,
    portability.import_,
)
GROUPS = (
    ("identity", admin.identity_app),
    ("token", admin.token_app),
    ("namespace", admin.namespace_app),
    ("config", config.config_app),
    ("fleet", fleet.fleet_app),
    ("thread", records.thread_app),
    ("federation", federation.federation_app),
    ("aitl", aitl.aitl_app),
    ("consent", consent.consent_app),
    ("debug", debug.debug_app),
    ("actor", actors.actor_app),
    ("task", tasks.task_app),
    ("pair", pairing.pair_app),
)
# `spl kill` / `spl unkill` (the kill switch) register their commands from their own module.
COMMANDS = (*COMMANDS, *fleet_control.COMMANDS, discovery.discover, completion)
# Discovery and rotation commands live in their own modules and join the groups they belong to.
fleet.sync_app.add_typer(discovery.peers_app, name="peers")
admin.identity_app.command("publish-did-web")(discovery.publish_did_web)
admin.identity_app.command("rotate")(rotation.rotate)

# `spl federation soak` shares the group with the pair commands; the soak module stays free of them.
federation.federation_app.command("soak")(soak.soak)

for command in COMMANDS:
    app.command()(command)
for name, group in GROUPS:
    app.add_typer(group, name=name)
accept_json_flag(app)


def run() -> None:
    """Console-script entry point: turn expected failures into one-line errors.

    Exit codes (docs/cli.md): 0 ok, 1 failure (an error line on stderr), 2 usage (click's message),
    130 interrupted (Ctrl-C).
    """
    if os.environ.get(COMPLETE_VAR):
        # A completion script asking for candidates: the app runs with add_completion=False (no
        # --install-completion), so register typer's shell handlers, which answer in the format of
        # the scripts `spl completion` prints (click's own handlers speak another one).
        from typer._completion_classes import completion_init

        completion_init()
    try:
        # standalone_mode=False returns typer.Exit's code instead of raising it; the completion variable is
        # fixed so the scripts work however spl was started (`python -m spl.cli` too).
        code = app(standalone_mode=False, complete_var=COMPLETE_VAR)
        if isinstance(code, int) and code:
            sys.exit(code)
    except (CliError, HomeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        # Usage errors: typer bundles its own copy of click's exceptions, so duck-type them.
        show, exit_code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(exit_code, int):
            show()
            sys.exit(exit_code)
        raise
