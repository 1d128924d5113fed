"""What ``spl`` imports before it does anything: a command's module only when that command runs.

``spl --help`` lists every command from the lines in ``spl.cli.main.ENTRIES``; these tests hold those lines to
the commands' own help, check that listing and short commands import no other command module, and that the
client's HTTP stack leaves out trio and the CA bundle for a plain-http daemon without breaking either for
code that does use them.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from typing import Any

import pytest
import typer.main

from spl.cli.main import ENTRIES, load, whole_app

# Modules that are not command modules: the app, its helpers, and the entry point itself.
SHARED = {"spl.cli", "spl.cli.app", "spl.cli.client", "spl.cli.main", "spl.cli.output", "spl.cli.__main__"}


def first_paragraph(help_text: str) -> str:
    """The line ``spl --help`` shows for a command: its help's first paragraph on one line."""
    return " ".join(inspect.cleandoc(help_text).split("\n\n")[0].split())


def test_the_listed_names_are_the_whole_tree_in_order() -> None:
    tree: Any = typer.main.get_command(whole_app())
    assert list(tree.commands) == [entry.name for entry in ENTRIES]


@pytest.mark.parametrize("entry", ENTRIES, ids=[entry.name for entry in ENTRIES])
def test_each_listed_line_is_the_commands_own_help(entry: Any) -> None:
    command = load(entry)
    assert command.name == entry.name
    assert entry.help == first_paragraph(command.help or ""), f"update {entry.name!r} in spl.cli.main.ENTRIES"


def _modules_after(*args: str) -> set[str]:
    """The ``spl.*`` and third-party modules a fresh interpreter has imported after running ``spl ARGS``."""
    program = (
        "import sys\n"
        f"sys.argv = ['spl', *{list(args)!r}]\n"
        "from spl.cli.main import run\n"
        "try:\n    run()\nexcept SystemExit:\n    pass\n"
        "print('\\n'.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True)
    return set(done.stderr.split())


def test_help_lists_every_command_without_importing_any_command_module() -> None:
    program = "import sys\nsys.argv = ['spl', '--help']\nfrom spl.cli.main import run\nrun()\n"
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, env={"COLUMNS": "200"}
    )
    listed = {line.split()[1] for line in done.stdout.splitlines() if line.startswith("│ ") and len(line.split()) > 2}
    assert {entry.name for entry in ENTRIES} <= listed, done.stdout
    loaded = {name for name in _modules_after("--help") if name.startswith("spl.cli.")}
    assert loaded <= SHARED, loaded - SHARED
    assert not {"httpx", "trio", "spl.daemon.home"} & _modules_after("--help")


def test_one_command_imports_its_own_module_only() -> None:
    loaded = {name for name in _modules_after("completion", "bash") if name.startswith("spl.cli.")}
    assert loaded <= SHARED, loaded - SHARED
    tasks = {name for name in _modules_after("task", "--help") if name.startswith("spl.cli.")}
    assert "spl.cli.tasks" in tasks and not {"spl.cli.debug", "spl.cli.actors", "spl.cli.soak"} & tasks


def test_the_client_imports_httpx_without_trio_and_trio_still_works_through_httpcore() -> None:
    program = """
import sys
from spl.cli.client import load_httpx
httpx = load_httpx()
import httpcore._synchronization as sync
assert "trio" not in sys.modules, "load_httpx imported trio"
assert "httpx._main" not in sys.modules, "load_httpx imported httpx's command line"
httpx.Client(verify=False).close()
import trio
assert sync.trio.Lock is trio.Lock  # the stand-in answers from the real module

async def main():
    lock = sync.AsyncLock()  # httpcore picks trio's lock under trio.run
    async with lock:
        return "locked"

print(trio.run(main))
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "locked", done.stderr


def test_a_plain_http_daemon_gets_no_ca_bundle_and_https_the_default_verification() -> None:
    from spl.cli.client import tls_for

    bare = tls_for("http://127.0.0.1:9100")
    assert not isinstance(bare, bool)
    assert bare.cert_store_stats()["x509_ca"] == 0  # nothing loaded: the cost this avoids
    assert bare.check_hostname and bare.verify_mode.name == "CERT_REQUIRED"  # if ever used, it fails closed
    assert tls_for("https://spl.example:9100") is True
    assert tls_for("HTTPS://spl.example") is True


def test_a_mistyped_command_is_a_usage_error_with_a_suggestion_from_every_name() -> None:
    """Typer suggests from the commands it has loaded; here none is loaded yet, and `tsk` still finds `task`."""
    program = "import sys\nsys.argv = ['spl', 'tsk']\nfrom spl.cli.main import run\nrun()\n"
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "No such command 'tsk'. Did you mean 'task'?" in done.stderr, done.stderr
