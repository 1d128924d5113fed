"""The ``spl`` command line (typer): every command and group is named here, in one place, and imported when used.

The app and its shared options live in :mod:`spl.cli.app`; the command modules define functions and
sub-apps and import neither this module nor each other's registrations, so imports run one way
(app ← command modules ← main) and the order of ``spl --help`` is the order of :data:`ENTRIES`. Read
commands take ``-o json`` (or ``--json``: :func:`spl.cli.app.accept_json_flag` adds it to each command as it is
loaded); ``SYNCROPEL_HOME``, ``SPL_SERVE_URL`` and ``SPL_TOKEN`` are honoured.

Start-up time is most of what a short command costs (``spl task list`` spent ~0.2 s importing the other
command modules before the change), so a command's module is imported only when that command runs:
:class:`LazyGroup` lists every entry of :data:`ENTRIES` with its one-line help, kept here, for ``spl --help``
and shell completion, and imports the module when the command is resolved. ``tests/cli/test_cli_startup.py``
checks the lines here against the commands' own help, so they cannot drift apart.

:data:`app` (read as ``spl.cli.main.app``) is the whole tree, every module imported: for tests that walk it and
for a process that forks many commands (the test suite's fork server).
"""

from __future__ import annotations

import difflib
import enum
import functools
import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any

import typer
import typer.core
import typer.main

from spl.cli.app import accept_json_flag
from spl.cli.app import app as base_app
from spl.cli.client import CliError

__all__ = ["ENTRIES", "Entry", "LazyGroup", "completion", "load", "root_command", "run", "whole_app"]

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


@dataclass(frozen=True)
class Entry:
    """One top-level name of ``spl``: where it lives and its line in ``spl --help``.

    Attributes:
        name: What the user types (``task``, ``import``).
        module: The module under ``spl.cli`` that defines it.
        attribute: A command function, or a ``typer.Typer`` group, in that module.
        help: Its one-line help, exactly as the command's own (checked by the tests).
    """

    name: str
    module: str
    attribute: str
    help: str


ENTRIES: tuple[Entry, ...] = (
    Entry("version", "server", "version", "Print the spl version."),
    Entry(
        "init",
        "server",
        "init",
        "Create $SYNCROPEL_HOME (default ~/.syncro): identity, config, store, admin credential.",
    ),
    Entry("serve", "server", "serve", "Run the daemon (foreground by default); one daemon per home."),
    Entry(
        "status",
        "server",
        "status",
        "Show the daemon's health, identity, supervision tree, sync pairs and federation pairs (one line each).",
    ),
    Entry(
        "doctor",
        "doctor",
        "doctor",
        "Check the home, identity, credentials, daemon, manifest, store, auth and federation pairs.",
    ),
    Entry(
        "intend",
        "records",
        "intend",
        "Open a goal: emit an INTEND record (body {goal, kind: core.intent, _v: 1} plus --body).",
    ),
    Entry("do", "records", "do", "Record an action: emit a DO record with body {summary} plus --body."),
    Entry("know", "records", "know", "Record an observation: emit a KNOW record with body {summary} plus --body."),
    Entry(
        "learn",
        "records",
        "learn",
        "Record an insight or lasting decision: emit a LEARN record with body {summary} plus --body.",
    ),
    Entry("emit", "records", "emit", "Emit any record (POST /v1/records) with the body taken as-is."),
    Entry(
        "sync",
        "federation",
        "sync",
        "Sync a federation pair now, both ways, and print what moved: pull here, and ask the peer to pull.",
    ),
    Entry(
        "export",
        "portability",
        "export",
        "Export this instance (records, threads, pairs, grants, identity) into one signed bundle file.",
    ),
    Entry(
        "import",
        "portability",
        "import_",
        "Import a bundle into the daemon: everything is verified before anything is written; re-running is a no-op.",
    ),
    Entry(
        "kill",
        "fleet_control",
        "kill",
        "Freeze this instance (the kill switch): refused writes answer 503 FLEET_FROZEN_<LEVEL> until `spl unkill`.",
    ),
    Entry(
        "unkill",
        "fleet_control",
        "unkill",
        "Lift the freeze: writes are accepted again, and pairs pull what they held back at once.",
    ),
    Entry("discover", "discovery", "discover", "Fetch and verify a peer's manifest."),
    Entry(
        "completion",
        "main",
        "completion",
        "Print the shell completion script for spl (nothing is installed or written).",
    ),
    Entry("identity", "admin", "identity_app", "This instance's identity (its did:key DID and Ed25519 keypair)."),
    Entry("token", "admin", "token_app", "Bearer tokens: mint, list, revoke, and save one for this CLI."),
    Entry("namespace", "admin", "namespace_app", "Namespaces records may be emitted into (body.namespace)."),
    Entry(
        "config",
        "config",
        "config_app",
        "Show, check and change this home's config.toml (docs/configuration.md lists every key).",
    ),
    Entry("fleet", "fleet", "fleet_app", "Fleet operations across instances (federation sync pairs)."),
    Entry("thread", "records", "thread_app", "Threads: list them, show their state, print their records."),
    Entry(
        "federation",
        "federation",
        "federation_app",
        "Federation pairs with other instances (pair, list, show, lifecycle, modes, grants) and soak runs.",
    ),
    Entry(
        "aitl",
        "aitl",
        "aitl_app",
        "Decisions waiting for this operator: pair requests from peers (list, approve, reject).",
    ),
    Entry(
        "consent",
        "consent",
        "consent_app",
        "Consent grants: which of this instance's namespaces may reach which namespace of a peer, and at which hash "
        "levels (L0 = the records, L1-L3 = redacted projections).",
    ),
    Entry("debug", "debug", "debug_app", "Forensic tools: compare threads across snapshots, instances and peers."),
    Entry("actor", "actors", "actor_app", "Actors: the DIDs registered on, or taking part in, this instance."),
    Entry("task", "tasks", "task_app", "Tasks: threads opened by a task INTEND (seed 003)."),
    Entry(
        "pair", "pairing", "pair_app", "Pair a second device with this instance: a one-time code, then its own token."
    ),
)


def _module(name: str) -> Any:
    return sys.modules[__name__] if name == "main" else importlib.import_module(f"spl.cli.{name}")


@functools.cache
def _join_groups(group: str) -> None:
    """Commands that live in one module and join a group defined in another (once per process)."""
    if group == "identity":
        admin, discovery, rotation = _module("admin"), _module("discovery"), _module("rotation")
        admin.identity_app.command("publish-did-web")(discovery.publish_did_web)
        admin.identity_app.command("rotate")(rotation.rotate)
    elif group == "fleet":
        _module("fleet").sync_app.add_typer(_module("discovery").peers_app, name="peers")
    elif group == "federation":
        # `spl federation soak` shares the group with the pair commands; the soak module stays free of them.
        _module("federation").federation_app.command("soak")(_module("soak").soak)


def _register(target: typer.Typer, entry: Entry) -> None:
    """Register ``entry`` on ``target`` as ``spl`` always has: a function as a command, a Typer as a group."""
    _join_groups(entry.name)
    found = getattr(_module(entry.module), entry.attribute)
    if isinstance(found, typer.Typer):
        target.add_typer(found, name=entry.name)
    else:
        target.command(entry.name)(found)


# typer builds on its own copy of click (``typer._click``, private): the click objects below are typed Any.


def load(entry: Entry) -> Any:
    """``entry``'s click command, its module imported now, built the way typer builds it inside the whole tree."""
    holder = typer.Typer()
    holder.callback()(_no_options)  # a callback keeps the holder a group, even with a single command
    _register(holder, entry)
    accept_json_flag(holder)
    group = typer.main.get_command(holder)
    assert isinstance(group, typer.core.TyperGroup)
    return group.commands[entry.name]


def _no_options() -> None:
    """The holder group's callback: it only makes typer build a group."""


class LazyGroup(typer.core.TyperGroup):
    """The ``spl`` root: lists every :data:`ENTRIES` name, imports a command's module when it is resolved.

    While it lists its commands (``spl --help``, the completion of a top-level name) the ones not loaded yet
    are stand-ins carrying their one-line help, so listing imports nothing.
    """

    _listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return list(dict.fromkeys([*self.commands, *(entry.name for entry in ENTRIES)]))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        entry = next((entry for entry in ENTRIES if entry.name == cmd_name), None)
        if entry is None:
            return None
        if self._listing:
            return typer.core.TyperCommand(name=entry.name, help=entry.help)
        command = self.commands[cmd_name] = load(entry)
        return command

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        """As typer's, with its "Did you mean 'task'?" drawn from every name, loaded or not (typer's looks only
        at the loaded ones)."""
        name = args[0] if args else ""
        names = self.list_commands(ctx)
        if name and not name.startswith("-") and name not in names and not ctx.resilient_parsing:
            matches = difflib.get_close_matches(name, names)
            if matches:
                ctx.fail(f"No such command {name!r}. Did you mean {', '.join(repr(m) for m in matches)}?")
        return super().resolve_command(ctx, args)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def shell_complete(self, ctx: Any, incomplete: str) -> list[Any]:
        self._listing = True
        try:
            return super().shell_complete(ctx, incomplete)
        finally:
            self._listing = False


def root_command() -> Any:
    """The ``spl`` command as it runs: the root's options (``--version``) and a :class:`LazyGroup` of commands."""
    base_app.info.cls = LazyGroup
    return typer.main.get_command(base_app)


@functools.cache
def whole_app() -> typer.Typer:
    """The root app with every entry registered (every command module imported)."""
    for entry in ENTRIES:
        _register(base_app, entry)
    accept_json_flag(base_app)
    return base_app


def __getattr__(name: str) -> Any:
    """``spl.cli.main.app``: the whole tree (:func:`whole_app`), built on first use."""
    if name == "app":
        return whole_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _one_line_failures() -> tuple[type[Exception], ...]:
    """The failures :func:`run` shows as one line. An ``except`` clause evaluates its classes only when an
    exception is raised, so the home module (~30 ms of imports) is not loaded by commands that never use it."""
    from spl.daemon.home import HomeError

    return (CliError, HomeError)


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
        code = root_command()(standalone_mode=False, complete_var=COMPLETE_VAR)
        if isinstance(code, int) and code:
            sys.exit(code)
    except _one_line_failures() as exc:
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
