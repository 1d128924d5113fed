"""``spl config path|show|get|set|validate`` and ``spl init --force`` keeping config.toml, run as a user would."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cli_support import DaemonLike, base_env, cli_for, one_error_line, run_spl

from spl.core.config import KEYS
from spl.daemon.home import Home


@pytest.fixture
def home_env(tmp_path: Path) -> tuple[Home, dict[str, str]]:
    env = base_env(tmp_path / "home")
    run_spl("init", env=env).ok()
    return Home.resolve(tmp_path / "home"), env


def test_path(home_env: tuple[Home, dict[str, str]]) -> None:
    home, env = home_env
    assert run_spl("config", "path", env=env).ok().out == f"{home.config_path}\n"
    payload = run_spl("config", "path", "-o", "json", env=env).ok().json()
    assert payload == {
        "object": "config_path",
        "path": str(home.config_path),
        "exists": True,
        "home": "$SYNCROPEL_HOME",
    }


def test_show_lists_every_value_with_its_source(home_env: tuple[Home, dict[str, str]]) -> None:
    home, env = home_env
    home.config_path.write_text(home.config_path.read_text().replace("port = 9100\n", ""))
    payload = run_spl("config", "show", "-o", "json", env=env).ok().json()
    values = {entry["key"]: entry for entry in payload["values"]}
    assert list(values) == [key.path for key in KEYS]
    assert values["serve.port"] == {"key": "serve.port", "value": 9100, "source": "default", "default": 9100}
    assert values["serve.host"]["source"] == "file" and values["serve.public_url"]["value"] is None
    assert values["instance.did"]["value"] == home.load_config().did
    assert payload["path"] == str(home.config_path) and payload["obsolete_keys"] == []

    text = run_spl("config", "show", env=env).ok().out.splitlines()
    assert text[0] == f"# {home.config_path}" and text[1].split() == ["KEY", "VALUE", "SOURCE"]
    assert ["serve.port", "9100", "default"] in [line.split() for line in text]
    assert ["serve.public_url", "(not", "set)", "default"] in [line.split() for line in text]


def test_set_then_get_keeps_comments_and_mode_and_says_when_it_applies(home_env: tuple[Home, dict[str, str]]) -> None:
    home, env = home_env
    home.config_path.write_text("# ours\n" + home.config_path.read_text() + "\n[relay]\nurl = 'x'\n")
    result = run_spl("config", "set", "serve.port", "9200", env=env).ok()
    assert result.out == "serve.port = 9200 (was 9100)\n"
    assert result.err == "note: takes effect when the daemon next starts\n"
    assert run_spl("config", "get", "serve.port", env=env).ok().out == "9200\n"
    assert run_spl("config", "get", "serve.port", "-o", "json", env=env).ok().json() == {
        "object": "config_value",
        "key": "serve.port",
        "value": 9200,
        "source": "file",
    }
    text = home.config_path.read_text()
    assert text.startswith("# ours\n") and "[relay]\nurl = 'x'" in text
    assert stat.S_IMODE(home.config_path.stat().st_mode) == 0o600

    run_spl("config", "set", "serve.cors_origins", "https://a.example,https://b.example", env=env).ok()
    run_spl("config", "set", "serve.heartbeat_seconds", "500ms", env=env).ok()
    run_spl("config", "set", "serve.public_url", "https://spl.example.com", env=env).ok()
    config = home.load_config()
    assert config.cors_origins == ["https://a.example", "https://b.example"] and config.heartbeat_seconds == 0.5
    assert config.public_url == "https://spl.example.com"
    payload = run_spl("config", "set", "serve.public_url", "", "-o", "json", env=env).ok().json()
    assert payload["value"] is None and payload["previous"] == "https://spl.example.com"
    assert payload["restart_required"] is False and "public_url" not in home.config_path.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("serve.port", "99999"), "serve.port must be an integer from 0 to 65535 (0 = any free port) (got 99999)"),
        (("auth.required", "no"), 'auth.required must be true or false (got "no")'),
        (
            ("serve.prot", "1"),
            "serve.prot is not a config key (did you mean serve.port?); `spl config show` lists them",
        ),
        (("instance.did", "did:key:z6Mkx"), "instance.did is set by `spl init` and follows the identity key"),
        (("serve.public_url", "https://spl.example.com/?a=1"), "serve.public_url must be an absolute http(s) URL"),
        (("serve.public_url", "https://ops:hunter2@spl.example"), "serve.public_url must be an absolute http(s) URL"),
    ],
)
def test_set_refuses_bad_values_before_writing(
    home_env: tuple[Home, dict[str, str]], args: tuple[str, str], message: str
) -> None:
    home, env = home_env
    before = home.config_path.read_text()
    line = one_error_line(run_spl("config", "set", *args, env=env))
    assert line.startswith(f"error: {message}"), line
    assert "hunter2" not in line  # a password in a URL is never repeated
    assert home.config_path.read_text() == before


def test_set_on_a_running_daemons_home_says_to_restart(daemon: DaemonLike) -> None:
    result = cli_for(daemon)("config", "set", "serve.max_connections", "64").ok()
    assert "restart it to apply this: spl serve --stop && spl serve --daemon" in result.err
    payload = cli_for(daemon)("config", "set", "serve.max_connections", "65", "-o", "json").ok().json()
    assert payload["restart_required"] is True and payload["previous"] == 64


def test_validate_names_the_key_and_exits_1(home_env: tuple[Home, dict[str, str]], tmp_path: Path) -> None:
    home, env = home_env
    assert run_spl("config", "validate", env=env).ok().out == f"{home.config_path}: ok\n"
    bad = tmp_path / "bad.toml"
    bad.write_text(home.config_path.read_text().replace("port = 9100", "prot = 19403"))
    line = one_error_line(run_spl("config", "validate", str(bad), env=env))
    assert line == (
        f"error: {bad}: serve.prot is not a config key (did you mean serve.port?); rename or remove it; "
        "fix it, then check with `spl config validate`"
    )
    result = run_spl("config", "validate", str(bad), "-o", "json", env=env)
    assert result.code == 1
    assert result.json()["valid"] is False and result.json()["problems"][0]["key"] == "serve.prot"
    both = home.config_path.read_text().replace("required = true", 'required = "no"').replace("port =", "prot =")
    bad.write_text(both)
    assert len(run_spl("config", "validate", str(bad), env=env).err.splitlines()) == 2
    missing = one_error_line(run_spl("config", "validate", str(tmp_path / "nope.toml"), env=env))
    assert missing == f"error: {tmp_path / 'nope.toml'} does not exist"


def test_obsolete_keys_are_reported_not_refused(home_env: tuple[Home, dict[str, str]]) -> None:
    home, env = home_env
    home.config_path.write_text(
        home.config_path.read_text().replace("[federation]\n", "[federation]\ntrust_loopback = true\n")
    )
    result = run_spl("config", "validate", env=env).ok()
    assert result.err == "note: federation.trust_loopback is obsolete and ignored; remove it\n"
    assert run_spl("config", "show", "-o", "json", env=env).ok().json()["obsolete_keys"] == [
        "federation.trust_loopback"
    ]


def test_a_damaged_config_stops_commands_with_the_key_not_init_force(home_env: tuple[Home, dict[str, str]]) -> None:
    home, env = home_env
    home.config_path.write_text(home.config_path.read_text().replace("required = true", 'required = "no"'))
    for command in (("config", "show"), ("config", "get", "serve.port"), ("init", "--force")):
        line = one_error_line(run_spl(*command, env=env))
        assert "auth.required must be true or false" in line and "spl config validate" in line, line
        assert "init --force" not in line
    # `set` can repair the very key that is wrong.
    run_spl("config", "set", "auth.required", "false", env=env).ok()
    assert home.load_config().auth_required is False


def test_init_force_keeps_the_custom_port(home_env: tuple[Home, dict[str, str]]) -> None:
    home, env = home_env
    run_spl("config", "set", "serve.port", "9200", env=env).ok()
    old_did = home.load_config().did
    replaced = run_spl("init", "--force", "-o", "json", env=env).ok().json()
    config = home.load_config()
    assert config.port == 9200 and replaced["did"] == config.did != old_did


def test_help_has_an_example_per_command(home_env: tuple[Home, dict[str, str]]) -> None:
    _, env = home_env
    for command in ("path", "show", "get", "set", "validate"):
        text = run_spl("config", command, "--help", env=env).ok().out
        assert "Example: " in text and f"spl config {command}" in text.split("Example:", 1)[1], text


def test_the_raw_value_of_a_nested_key_is_found_in_a_file_that_does_not_validate() -> None:
    """`spl config set` reports what a damaged file said for the key it fixes, nested tables included."""
    from spl.cli.config import _raw_value

    text = '[serve]\nport = "not a port"\n[sync.discovery]\nmdns_broadcast = "yes"\n'
    assert _raw_value(text, "sync.discovery.mdns_broadcast") == "yes"
    assert _raw_value(text, "serve.port") == "not a port"
    assert _raw_value(text, "sync.discovery.missing") is None and _raw_value("not toml [", "serve.port") is None
