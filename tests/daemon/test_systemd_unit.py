"""docs/spl.service: ``systemd-analyze`` accepts it and rates it well sandboxed, and spl runs under its
``MemoryDenyWriteExecute=yes`` (PyNaCl and cffi included).

The analyzer runs where it is installed and the tests skip cleanly elsewhere. ``verify`` checks that ExecStart's
binary exists, so it runs on a copy of the unit pointing at this checkout's ``spl``.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from spl.daemon.bootstrap import initialise
from spl.daemon.home import Home

UNIT = Path(__file__).resolve().parents[2] / "docs" / "spl.service"
ANALYZER = shutil.which("systemd-analyze")
MAX_EXPOSURE = 2.0
needs_analyzer = pytest.mark.skipif(ANALYZER is None, reason="systemd-analyze is not installed")


@needs_analyzer
def test_the_unit_is_rated_exposure_2_or_less() -> None:
    assert ANALYZER is not None
    result = subprocess.run(
        [ANALYZER, "security", "--offline=true", str(UNIT)], capture_output=True, text=True, timeout=60
    )
    summary = re.search(r"Overall exposure level for spl.service: (\d+\.\d+)", result.stdout)
    assert summary is not None, result.stdout + result.stderr
    assert float(summary.group(1)) <= MAX_EXPOSURE, result.stdout


@needs_analyzer
def test_the_unit_verifies_clean(tmp_path: Path) -> None:
    assert ANALYZER is not None
    spl = Path(sys.executable).with_name("spl")
    if not spl.exists():
        pytest.skip(f"no spl console script next to {sys.executable}")
    unit = tmp_path / "spl.service"
    unit.write_text(UNIT.read_text().replace("/opt/spl/.venv/bin/spl", str(spl)))
    result = subprocess.run([ANALYZER, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


# What systemd's MemoryDenyWriteExecute=yes installs, as a classic seccomp filter (x86-64): mmap asking for a
# mapping both writable and executable, and mprotect/pkey_mprotect adding PROT_EXEC, fail with EPERM.
MDWE_LAUNCHER = textwrap.dedent(
    """
    import ctypes, mmap, os, struct, sys

    ALLOW, DENY = 0x7FFF0000, 0x00050000 | 1  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | EPERM
    LD, JEQ, JSET, AND, RET = 0x20, 0x15, 0x45, 0x54, 0x06  # BPF_LD|W|ABS, JMP|JEQ, JMP|JSET, ALU|AND, RET
    PROGRAM = [
        (LD, 0, 0, 4), (JEQ, 0, 10, 0xC000003E),  # not x86-64: allow
        (LD, 0, 0, 0), (JEQ, 3, 0, 9), (JEQ, 5, 0, 10), (JEQ, 4, 0, 329), (RET, 0, 0, ALLOW),
        (LD, 0, 0, 32), (AND, 0, 0, 6), (JEQ, 3, 2, 6),  # mmap: PROT_WRITE and PROT_EXEC together
        (LD, 0, 0, 32), (JSET, 1, 0, 4), (RET, 0, 0, ALLOW), (RET, 0, 0, DENY),  # mprotect: PROT_EXEC
    ]
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in PROGRAM))

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    libc = ctypes.CDLL(None, use_errno=True)
    program = Program(len(PROGRAM), ctypes.addressof(code))
    if libc.prctl(38, 1, 0, 0, 0) or libc.prctl(22, 2, ctypes.byref(program), 0, 0):  # NO_NEW_PRIVS, SECCOMP
        sys.exit(f"seccomp: errno {ctypes.get_errno()}")
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        sys.exit("the filter is not in force")
    except PermissionError:
        print("filter in force", file=sys.stderr, flush=True)
    os.execv(sys.argv[1], sys.argv[1:])
    """
)


@pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() != "x86_64", reason="the filter is written for x86-64 Linux"
)
def test_spl_serves_and_signs_under_memory_deny_write_execute(tmp_path: Path) -> None:
    home = Home.resolve(tmp_path / "home")
    initialise(home)
    launcher = tmp_path / "mdwe.py"
    launcher.write_text(MDWE_LAUNCHER)
    env = {**os.environ, "SYNCROPEL_HOME": str(home.root)}
    serve = [sys.executable, "-m", "spl.cli", "serve", "--port", "0", "--log-level", "warning"]
    with subprocess.Popen(
        [sys.executable, str(launcher), sys.executable, *serve[1:]], env=env, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stderr is not None
            assert process.stderr.readline() == "filter in force\n"
            deadline = time.monotonic() + 30
            url = None
            while url is None and process.poll() is None and time.monotonic() < deadline:
                running = home.running()
                url = running.url if running is not None and running.pid == process.pid else None
                time.sleep(0.02)  # polling a child process: there is nothing to wait on
            assert url, f"spl did not serve under the filter: {process.stderr.read() if process.poll() else ''}"
            # The daemon signed its manifest at start (PyNaCl through cffi, under the filter); minting a token
            # writes to the store.
            manifest = httpx.get(f"{url}/.well-known/syncropel", timeout=10)
            assert manifest.status_code == 200 and '"Ed25519"' in manifest.text, manifest.text
            token = home.read_secret(home.admin_token_path)
            minted = httpx.post(
                f"{url}/v1/tokens",
                json={"scopes": ["records:read"], "label": "mdwe"},
                headers={"authorization": f"Bearer {token}"},
                timeout=10,
            )
            assert minted.status_code in (200, 201), minted.text
        finally:
            process.terminate()
            assert process.wait(20) == 0
