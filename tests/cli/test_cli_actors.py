"""``spl actor list|show|register`` against a real daemon, in one scenario (each step builds on the last)."""

from __future__ import annotations

from cli_support import Cli, DaemonLike, one_error_line

AGENT = "did:sync:agent:builder"
PARTICIPANT = "did:example:bob"


def test_actor_register_show_and_list(cli: Cli, daemon: DaemonLike) -> None:
    did = daemon.home.load_config().did
    cli("intend", "-t", "th_actors_cli", "--actor", PARTICIPANT, "work", "-o", "json").ok()

    registered = cli("actor", "register", AGENT, "--name", "Build agent", "--category", "agent", "-o", "json").ok()
    assert registered.json()["status"] == "active" and registered.json()["registered"] is True
    text = cli("actor", "register", AGENT, "--name", "Build agent", "--category", "agent", "--status", "retired").ok()
    assert text.out.startswith(f"updated {AGENT}\n") and "status:" in text.out and "retired" in text.out

    refused = cli("actor", "register", AGENT, "--name", "x", "--category", "robot")
    assert refused.code != 0
    line = one_error_line(refused)
    assert "INVALID_CATEGORY" in line and "human, agent, service, instance, adapter" in line
    assert "INVALID_DID" in one_error_line(cli("actor", "register", "bob", "--name", "x", "--category", "human"))

    shown = cli("actor", "show", AGENT, "-o", "json").ok().json()
    assert (shown["display_name"], shown["category"], shown["status"]) == ("Build agent", "agent", "retired")
    assert "unregistered" in cli("actor", "show", PARTICIPANT).ok().out
    assert "NOT_FOUND" in one_error_line(cli("actor", "show", "did:sync:agent:nobody"))

    listing = cli("actor", "list", "-o", "json").ok().json()["data"]
    assert listing[0]["did"] == did and listing[0]["kind"] == "instance"
    statuses = {actor["did"]: actor["status"] for actor in listing}
    assert statuses[AGENT] == "retired" and statuses[PARTICIPANT] == "unregistered"

    lines = cli("actor", "list").ok().out.splitlines()
    assert lines[0].split() == ["DID", "NAME", "CATEGORY", "STATUS", "ROLE", "RECORDS", "THREADS"]
    assert lines[2].startswith(did)  # the instance first
    (agent_line,) = [line for line in lines if line.startswith(AGENT)]
    assert "Build agent" in agent_line and "agent" in agent_line.split() and "retired" in agent_line.split()
