"""The ``spl`` command line (typer): every command and group is registered here, in one place.

The app and its shared options live in :mod:`spl.cli.app`; the command modules define functions and
sub-apps and import neither this module nor each other's registrations, so imports run one way
(app ← command modules ← main) and the order of ``spl --help`` is the order below. Read commands take
``-o json``; ``SYNCROPEL_HOME``, ``SPL_SERVE_URL`` and ``SPL_TOKEN`` are honoured.

``spl --help`` must list every group, so every command module is imported on every call: they keep
their module level light (typer, the CLI's helpers, pure ``spl.core`` rules) and import what is heavy
(trio and the daemon in ``serve``, the soak engine in ``federation soak``, httpx in
:mod:`spl.cli.client`) where it is used.
"""

from __future__ import annotations

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
    doctor,
    federation,
    fleet,
    fleet_control,
    portability,
    records,
    server,
    soak,
    tasks,
)
from spl.cli.app import app
from spl.cli.client import CliError
from spl.daemon.home import HomeError

__all__ = ["app", "run"]

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
)
# `spl kill` / `spl unkill` (the kill switch) register their commands from their own module.
COMMANDS = (*COMMANDS, *fleet_control.COMMANDS)

# `spl federation soak` shares the group with the pair commands; the soak module stays free of them.
federation.federation_app.command("soak")(soak.soak)

for command in COMMANDS:
    app.command()(command)
for name, group in GROUPS:
    app.add_typer(group, name=name)


def run() -> None:
    """Console-script entry point: turn expected failures into one-line errors."""
    try:
        code = app(standalone_mode=False)  # returns typer.Exit's code instead of raising it
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
