"""Issue 14 acceptance 2: device pairing end to end between two homes (docs/pairing.md).

One real daemon with authentication on (the instance) and two client homes that run no daemon (a laptop and a
phone): ``spl pair --device laptop`` prints a code, ``spl pair redeem`` in the laptop's home saves the laptop's
own token, the laptop emits with it; a second redeem, a wrong code and an expired one are refused; ``spl pair
revoke laptop`` cuts the laptop alone while the admin and the phone keep working.

The rest drives the app in-process (milliseconds each): the redeem rate limit (429 with ``Retry-After``, and a
right code refused too once the limit is hit), hostile bodies, the scope rules, and pairings surviving a restart.
"""

from __future__ import annotations

import stat
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from cli_support import Result, base_env, run_spl
from e2e_support import assert_error, make_daemon
from inprocess import InProcessDaemon, copy_home, run_in_process

from spl.core.errors import StorageFull
from spl.core.pairing import PER_SOURCE_BURST
from spl.daemon.launcher import DaemonProcess
from spl.transport.routes_pairing import REDEEM_PATH

WAIT = 15.0


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    process = make_daemon(tmp_path_factory.mktemp("pairing-instance") / "home", insecure=False)
    try:
        yield process
    finally:
        process.stop()


def on_instance(instance: DaemonProcess, *args: str) -> Result:
    """``spl`` run in the instance's own home (its admin credential goes to its own daemon)."""
    env = instance.env()
    env["SPL_SERVE_URL"] = instance.url
    return run_spl(*args, env=env)


def on_device(home: Path, *args: str, url: str | None = None) -> Result:
    """``spl`` run in a device's home: no daemon there, only what ``spl pair redeem`` saved."""
    env = base_env(home)
    if url is not None:
        env["SPL_SERVE_URL"] = url
    return run_spl(*args, env=env)


def status_of(instance: DaemonProcess, device: str) -> str:
    listing = httpx.get(f"{instance.url}/v1/pairings", headers={"x-api-key": instance.admin_token}, timeout=10)
    return str(next(entry["status"] for entry in listing.json()["data"] if entry["device"] == device))


def test_a_second_device_pairs_emits_and_is_cut_off_alone(instance: DaemonProcess, tmp_path: Path) -> None:
    laptop, phone, tablet = tmp_path / "laptop", tmp_path / "phone", tmp_path / "tablet"

    # A code that lives one second, made first so that it has expired by the time it is tried.
    short = on_instance(instance, "pair", "--device", "tablet", "--ttl", "1s", "-o", "json").ok().json()

    # On the instance: a code, a deep link, and (in text) a QR code.
    created = on_instance(
        instance, "pair", "--device", "laptop", "--scopes", "records:read,records:write", "-o", "json"
    ).ok()
    offer = created.json()
    assert offer["status"] == "pending" and offer["scopes"] == ["records:read", "records:write"]
    code, link = offer["code"], offer["link"]
    assert link.startswith("syncropel://pair?url=") and code in link
    lifetime = datetime.fromisoformat(offer["expires_at"]) - datetime.fromisoformat(offer["created_at"])
    assert lifetime.total_seconds() == pytest.approx(600, abs=1)  # ten minutes unless --ttl says otherwise
    text = on_instance(instance, "pair", "--device", "phone", "--scopes", "records:write").ok()
    assert "pairing code for phone" in text.out and "█" in text.out  # the QR code, drawn in the terminal
    phone_code = next(line.split(": ", 1)[1] for line in text.out.splitlines() if line.startswith("pairing code"))

    # On the laptop: redeem with the code alone, no credential; its token is saved in its home.
    redeemed = on_device(laptop, "pair", "redeem", code, "--url", instance.url, "-o", "json").ok().json()
    assert redeemed["device"] == "laptop" and "token" not in redeemed
    saved = laptop / "token"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    laptop_token = saved.read_text().strip()

    # The laptop emits with its own token, and the instance knows it as the laptop's.
    emitted = on_device(laptop, "intend", "hello from the laptop", "-o", "json", url=instance.url).ok().json()
    assert emitted["act"] == "INTEND"
    who = httpx.get(f"{instance.url}/v1/identity", headers={"x-api-key": laptop_token}, timeout=10).json()
    tokens = httpx.get(f"{instance.url}/v1/tokens", headers={"x-api-key": instance.admin_token}, timeout=10).json()
    laptop_info = next(info for info in tokens["data"] if info["token_id"] == redeemed["token_id"])
    assert laptop_info["label"] == "device:laptop" and laptop_info["status"] == "active"
    assert who["service_account_id"] == laptop_info["service_account_id"]
    assert sorted(who["scopes"]) == ["records:read", "records:write"]

    # The same code again, a wrong code, and an expired code: refused, and nothing is saved.
    again = on_device(phone, "pair", "redeem", code, "--url", instance.url)
    assert again.code == 1 and "PAIRING_CODE_USED" in again.err and not (phone / "token").exists()
    wrong = on_device(phone, "pair", "redeem", "0000-0000-0000-0000", "--url", instance.url)
    assert wrong.code == 1 and "PAIRING_CODE_UNKNOWN" in wrong.err
    deadline = time.monotonic() + WAIT
    while status_of(instance, "tablet") != "expired":
        assert time.monotonic() < deadline, "the one-second code never expired"
        time.sleep(0.1)  # polling the instance's own answer: the wait is the code's lifetime
    late = on_device(tablet, "pair", "redeem", short["link"])  # the whole link: the URL comes with it
    assert late.code == 1 and "PAIRING_CODE_EXPIRED" in late.err and not (tablet / "token").exists()

    # A second device pairs through the link alone.
    phone_link = f"syncropel://pair?url={httpx.URL(instance.url)}&code={phone_code}"
    on_device(phone, "pair", "redeem", phone_link, "--label", "pixel").ok()

    # Revoking the laptop cuts the laptop only.
    revoked = on_instance(instance, "pair", "revoke", "laptop", "-o", "json").ok().json()
    assert revoked["status"] == "revoked" and revoked["token_revoked"] is True
    refused = on_device(laptop, "intend", "after the revoke", url=instance.url)
    assert refused.code == 1 and "TOKEN_REVOKED" in refused.err
    on_device(phone, "intend", "the phone still works", url=instance.url).ok()
    on_instance(instance, "intend", "and so does the admin").ok()
    states = {
        entry["device"]: entry["status"]
        for entry in on_instance(instance, "pair", "list", "-o", "json").ok().json()["data"]
    }
    assert states == {"laptop": "revoked", "phone": "redeemed", "tablet": "expired"}


# -- in-process: limits, hostile input, scopes, restarts ----------------------------------------------------------


def admin(daemon: InProcessDaemon) -> dict[str, str]:
    return {"x-api-key": daemon.admin_token, "content-type": "application/json"}


async def offer(daemon: InProcessDaemon, device: str, **fields: Any) -> dict[str, Any]:
    response = await daemon.post(
        "/v1/pairings", json={"device": device, "scopes": ["records:read"], **fields}, headers=admin(daemon)
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_failed_redeems_are_rate_limited_before_the_code_is_looked_at(
    secure_in_process_daemon: InProcessDaemon,
) -> None:
    daemon = secure_in_process_daemon
    good = await offer(daemon, "laptop")
    for guess in range(int(PER_SOURCE_BURST)):
        answer = await daemon.post(REDEEM_PATH, json={"code": f"{guess:016d}"})
        assert_error(answer, 404, "PAIRING_CODE_UNKNOWN")
    limited = await daemon.post(REDEEM_PATH, json={"code": "0" * 16})
    assert_error(limited, 429, "PAIRING_RATE_LIMITED")
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    # Once limited, even the right code gets 429: a guesser learns nothing more by guessing faster.
    assert_error(await daemon.post(REDEEM_PATH, json={"code": good["code"]}), 429, "PAIRING_RATE_LIMITED")
    listing = await daemon.get("/v1/pairings", headers=admin(daemon))
    assert [entry["status"] for entry in listing.json()["data"]] == ["pending"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"code": 12345}, 400, "INVALID_PAIRING_CODE"),
        ({"code": "A" * 70}, 400, "INVALID_PAIRING_CODE"),
        ({"code": "ABCD-EFGH-JKMN-PQRU"}, 400, "INVALID_PAIRING_CODE"),  # U is not in the alphabet
        ({}, 400, "INVALID_PAIRING_CODE"),
        ({"code": "0" * 16, "device": "x"}, 400, "INVALID_REQUEST"),  # only the code and a label
        ({"code": "0" * 16, "label": "\u202eevil"}, 400, "INVALID_LABEL"),
        (["0" * 16], 400, "INVALID_REQUEST"),
    ],
)
async def test_hostile_redeem_bodies_are_refused_with_a_reason(
    secure_in_process_daemon: InProcessDaemon, body: Any, status: int, code: str
) -> None:
    assert_error(await secure_in_process_daemon.post(REDEEM_PATH, json=body), status, code)


async def test_a_huge_redeem_body_is_refused_unread(secure_in_process_daemon: InProcessDaemon) -> None:
    answer = await secure_in_process_daemon.post(REDEEM_PATH, json={"code": "0" * 16, "label": "x" * 4096})
    assert_error(answer, 413)


async def test_who_may_offer_what(secure_in_process_daemon: InProcessDaemon) -> None:
    daemon = secure_in_process_daemon
    writer = await daemon.mint_token(["records:write"], "ci")
    body = {"device": "laptop", "scopes": ["records:write"]}
    assert_error(await daemon.post("/v1/pairings", json=body), 401)
    assert_error(await daemon.post("/v1/pairings", json=body, headers={"x-api-key": writer}), 403, "SCOPE_FORBIDDEN")
    assert_error(await daemon.get("/v1/pairings", headers={"x-api-key": writer}), 403, "SCOPE_FORBIDDEN")
    for wrong, code in (
        ({"device": "laptop", "scopes": ["records:everything"]}, "INVALID_SCOPES"),
        ({"device": "laptop", "scopes": []}, "INVALID_SCOPES"),
        ({"device": "../etc", "scopes": ["records:read"]}, "INVALID_DEVICE_NAME"),
        ({"device": "laptop", "scopes": ["records:read"], "ttl_secs": 0}, "INVALID_TTL"),
        ({"device": "laptop", "scopes": ["records:read"], "ttl_secs": 10**9}, "INVALID_TTL"),
        ({"device": "laptop", "scopes": ["records:read"], "url": "javascript:alert(1)"}, "INVALID_URL"),
    ):
        assert_error(await daemon.post("/v1/pairings", json=wrong, headers=admin(daemon)), 400, code)
    await offer(daemon, "laptop")
    assert_error(
        await daemon.post("/v1/pairings", json={"device": "laptop", "scopes": ["records:read"]}, headers=admin(daemon)),
        409,
        "PAIRING_EXISTS",
    )
    assert_error(await daemon.delete("/v1/pairings/nobody", headers=admin(daemon)), 404, "PAIRING_NOT_FOUND")


async def test_pairings_survive_a_restart_and_a_revoked_code_is_dead(home_template: Path, tmp_path: Path) -> None:
    home = copy_home(home_template, tmp_path / "home")
    async with run_in_process(home, insecure=False) as daemon:
        kept = await offer(daemon, "laptop")
        dropped = await offer(daemon, "phone")
        revoked = await daemon.delete("/v1/pairings/phone", headers=admin(daemon))
        assert revoked.json()["status"] == "revoked" and revoked.json()["token_revoked"] is False
    assert stat.S_IMODE((home.root / "pairings.json").stat().st_mode) == 0o600
    assert kept["code"] not in (home.root / "pairings.json").read_text()  # only hashes are kept
    async with run_in_process(home, insecure=False) as daemon:
        redeemed = await daemon.post(REDEEM_PATH, json={"code": kept["code"].lower().replace("-", " ")})
        assert redeemed.status_code == 201, redeemed.text
        token = redeemed.json()["token"]
        assert (await daemon.get("/v1/threads", headers={"x-api-key": token})).status_code == 200
        assert_error(await daemon.post(REDEEM_PATH, json={"code": dropped["code"]}), 410, "PAIRING_REVOKED")
    async with run_in_process(home, insecure=False) as daemon:  # the token, too, outlived the restart
        assert (await daemon.get("/v1/threads", headers={"x-api-key": token})).status_code == 200
        listing = await daemon.get("/v1/pairings", headers=admin(daemon))
        assert {entry["device"]: entry["status"] for entry in listing.json()["data"]} == {
            "laptop": "redeemed",
            "phone": "revoked",
        }


class FullStore:
    """The daemon's writer, except that a token does not fit (what a full disk answers)."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)

    async def mint_token(self, info: Any) -> None:
        raise StorageFull("the store is full: nothing from this request was stored")


async def test_a_token_the_store_refuses_leaves_the_code_good(secure_in_process_daemon: InProcessDaemon) -> None:
    daemon = secure_in_process_daemon
    pending = await offer(daemon, "laptop")
    writer = daemon.services.writer
    daemon.services.writer = FullStore(writer)  # type: ignore[assignment]
    try:
        for _ in range(int(PER_SOURCE_BURST) + 1):  # our failure, not a guess: it never counts against the caller
            refused = await daemon.post(REDEEM_PATH, json={"code": pending["code"]})
            assert (refused.status_code, refused.json()["code"]) == (503, "STORAGE_FULL")
    finally:
        daemon.services.writer = writer
    listing = await daemon.get("/v1/pairings", headers=admin(daemon))
    assert [(entry["status"], entry["token_id"]) for entry in listing.json()["data"]] == [("pending", None)]
    redeemed = await daemon.post(REDEEM_PATH, json={"code": pending["code"]})
    assert redeemed.status_code == 201, redeemed.text


async def test_of_two_redeems_at_once_exactly_one_gets_a_token(secure_in_process_daemon: InProcessDaemon) -> None:
    daemon = secure_in_process_daemon
    pending = await offer(daemon, "laptop")
    answers: list[httpx.Response] = []

    async def redeem() -> None:
        answers.append(await daemon.post(REDEEM_PATH, json={"code": pending["code"]}))

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(redeem)
    assert sorted(answer.status_code for answer in answers) == [201, 409, 409, 409]
    tokens = await daemon.get("/v1/tokens", headers=admin(daemon))
    assert [info["label"] for info in tokens.json()["data"]].count("device:laptop") == 1
