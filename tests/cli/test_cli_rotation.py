"""``spl identity rotate`` with no daemon running: the home is rotated in place (issue 14).

The online form (through the daemon) is covered end to end by tests/e2e/test_identity_rotation.py.
"""

from __future__ import annotations

from pathlib import Path

from cli_support import base_env, one_error_line, run_spl

from spl.core.rotation import verify_chain
from spl.daemon.home import Home


def test_rotate_offline_keeps_the_did_and_chains_the_new_key(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    did = run_spl("init", "-o", "json", env=env).ok().json()["did"]
    rotated = run_spl("identity", "rotate", "-o", "json", env=env).ok().json()
    assert rotated["did"] == did and rotated["previous_key"] == did and rotated["key"] != did
    assert [key["id"] for key in rotated["keys"]] == [did, rotated["key"]]
    home = Home.resolve(tmp_path / "home")
    assert verify_chain(did, home.load_rotations()) == (did, rotated["key"])
    text = run_spl("identity", "rotate", env=env).ok().out
    assert f"did:          {did}" in text and "retired key:" in text
    # The home's own view (no daemon): the key is the chain's current one, which is how it should be.
    shown = run_spl("identity", "show", "-o", "json", env=env).ok().json()
    assert shown["did"] == did and shown["key_matches_config"] is True and shown["signing_key"] != did


def test_rotate_refuses_a_home_whose_key_was_replaced_by_hand(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    run_spl("init", env=env).ok()
    Home.resolve(tmp_path / "home").key_path.write_bytes(bytes(range(32)))
    assert "cannot rotate" in one_error_line(run_spl("identity", "rotate", env=env))
