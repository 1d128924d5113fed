"""Tokens and the admin credential, against a real auth-on daemon."""

from __future__ import annotations

import re
import stat

import httpx
from cli_support import Cli, DaemonLike

TOKEN = re.compile(r"^spl_local_sa_[0-9a-f]{16}_[0-9a-f]{64}$")


def test_admin_credential_needs_no_configuration(secure_cli: Cli, secure_daemon: DaemonLike) -> None:
    assert httpx.get(f"{secure_daemon.url}/v1/threads", timeout=10).status_code == 401
    identity = secure_cli("identity", "show", "-o", "json").ok().json()
    assert identity["is_authenticated"] is True and identity["scopes"] == ["admin"]
    record = secure_cli("intend", "secured goal", "-o", "json").ok().json()
    lines = secure_cli("thread", "records", record["thread"]).ok().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(record["id"])
    assert secure_cli("status", "-o", "json").ok().json()["auth_required"] is True
    assert "admin" in secure_cli("token", "list").ok().out


def test_token_mint_list_revoke_and_save(secure_cli: Cli, secure_daemon: DaemonLike) -> None:
    minted = secure_cli("token", "mint", "--scopes", "records:read", "--label", "ci reader")
    plaintext = minted.ok().out.strip()
    assert TOKEN.match(plaintext), minted.out
    assert "shown only once" in minted.err and plaintext not in minted.err

    as_json = secure_cli("token", "mint", "--scopes", "records:read,records:write", "--env", "ci", "-o", "json")
    writer = as_json.ok().json()
    assert writer["token"].startswith("spl_ci_") and writer["scopes"] == ["records:read", "records:write"]

    listing = secure_cli("token", "list", "-o", "json").ok()
    assert plaintext not in listing.out and writer["token"] not in listing.out
    infos = {info["label"]: info for info in listing.json()["data"]}
    reader = infos["ci reader"]
    assert reader["scopes"] == ["records:read"] and reader["status"] == "active"
    text = secure_cli("token", "list").ok().out
    assert reader["token_id"] in text and plaintext not in text

    # The reader token reads but may not write.
    as_reader = {"SPL_TOKEN": plaintext}
    secure_cli("thread", "list", env=as_reader).ok()
    denied = secure_cli("intend", "nope", env=as_reader)
    assert denied.code == 1 and denied.err.startswith("error: SCOPE_FORBIDDEN:")

    # A saved token is used instead of the admin credential (mode 0600, never echoed).
    saved = secure_cli("token", "save", writer["token"]).ok()
    assert writer["token"] not in saved.out + saved.err
    home = secure_daemon.home
    assert stat.S_IMODE(home.saved_token_path.stat().st_mode) == 0o600
    secure_cli("intend", "as the writer").ok()
    forbidden = secure_cli("token", "list")
    assert forbidden.code == 1 and forbidden.err.startswith("error: SCOPE_FORBIDDEN:")
    home.saved_token_path.unlink()

    revoked = secure_cli("token", "revoke", reader["token_id"]).ok()
    assert reader["token_id"] in revoked.out
    after = secure_cli("thread", "list", env=as_reader)
    assert after.code == 1 and len(after.err.splitlines()) == 1
    assert re.match(r"error: (AUTH_REQUIRED|TOKEN_REVOKED): ", after.err)
    response = httpx.get(f"{secure_daemon.url}/v1/threads", headers={"x-api-key": plaintext}, timeout=10)
    assert response.status_code == 401

    listed = secure_cli("token", "list", "-o", "json").ok().json()["data"]
    statuses = {info["token_id"]: info["status"] for info in listed}
    assert statuses[reader["token_id"]] == "revoked"
    assert reader["token_id"] not in secure_cli("token", "list").ok().out
    assert reader["token_id"] in secure_cli("token", "list", "--all").ok().out

    unknown = secure_cli("token", "revoke", "0" * 64)
    assert unknown.code == 1 and unknown.err.startswith("error: NOT_FOUND:")
    pasted = secure_cli("token", "revoke", plaintext)
    assert pasted.code == 1 and plaintext not in pasted.err and "token_id" in pasted.err


def test_bad_scope_is_refused_locally(secure_cli: Cli) -> None:
    result = secure_cli("token", "mint", "--scopes", "records:read,root")
    assert result.code == 1 and "unknown scope(s) root" in result.err and result.out == ""
