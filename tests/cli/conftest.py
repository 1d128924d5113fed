"""Fixtures for the CLI tests; the helpers live in ``cli_support``."""

from __future__ import annotations

import pytest
from cli_support import Cli, DaemonLike, cli_for


@pytest.fixture
def cli(daemon: DaemonLike) -> Cli:
    """``spl`` bound to the auth-off ``daemon`` (SYNCROPEL_HOME and SPL_SERVE_URL set)."""
    return cli_for(daemon)


@pytest.fixture
def secure_cli(secure_daemon: DaemonLike) -> Cli:
    """``spl`` bound to the auth-on ``secure_daemon``, with no token configured."""
    return cli_for(secure_daemon)
