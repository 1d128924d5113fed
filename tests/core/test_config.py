"""``config.toml`` as a typed value (``spl.core.config``): what is refused, what is tolerated, what survives a save."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spl.core.config import (
    KEYS,
    OBSOLETE_KEYS,
    SECTIONS,
    TABLE_ARRAYS,
    Config,
    ConfigError,
    advertised_endpoint,
    effective_values,
    parse_value,
    problems_in,
    with_value,
)

DID = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
INSTANCE = f'[instance]\ndid = "{DID}"\ncreated_at = "2026-01-01T00:00:00Z"\n'

# What `spl init` wrote before this module (the hand-written f-string), as found in existing homes.
OLD_FORMAT = (
    "# spl instance configuration (written by `spl init`)\n"
    f"{INSTANCE}"
    "\n[serve]\n"
    'host = "127.0.0.1"\n'
    "port = 9100\n"
    "max_body_bytes = 1048576\n"
    "heartbeat_seconds = 15.0\n"
    "sse_buffer = 1024\n"
    "# browser origins allowed to call the API (CORS); empty = none\n"
    "cors_origins = []\n"
    "max_connections = 512\n"
    "header_timeout = 10.0\n"
    "\n[auth]\n"
    "required = true\n"
    "\n[store]\n"
    "# refuse writes (503 STORAGE_FULL) past this many bytes of hub.db; 0 = no cap\n"
    "max_bytes = 0\n"
)


def refusal(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as refused:
        Config.from_toml(text)
    return refused.value


# -- refused, naming the key -----------------------------------------------------------------------


def test_a_misspelt_key_is_refused_with_its_path_and_the_likely_fix() -> None:
    error = refusal(INSTANCE + "[serve]\nprot = 19403\n")
    assert error.key == "serve.prot"
    assert str(error) == "serve.prot is not a config key (did you mean serve.port?); rename or remove it"


def test_a_string_for_a_bool_is_refused_not_read_as_true() -> None:
    error = refusal(INSTANCE + '[auth]\nrequired = "no"\n')
    assert error.key == "auth.required"
    assert str(error) == 'auth.required must be true or false (got "no")'


@pytest.mark.parametrize(
    ("section", "line", "key"),
    [
        ("serve", "port = 99999", "serve.port"),
        ("serve", "port = -1", "serve.port"),
        ("serve", 'port = "9100"', "serve.port"),
        ("serve", "max_body_bytes = 10", "serve.max_body_bytes"),
        ("serve", "heartbeat_seconds = 0", "serve.heartbeat_seconds"),
        ("serve", "heartbeat_seconds = nan", "serve.heartbeat_seconds"),
        ("serve", "header_timeout = inf", "serve.header_timeout"),
        ("serve", "sse_buffer = 0", "serve.sse_buffer"),
        ("serve", "max_connections = 0", "serve.max_connections"),
        ("serve", 'host = "127.0.0.1 "', "serve.host"),
        ("serve", 'cors_origins = "https://app.example"', "serve.cors_origins"),
        ("serve", 'cors_origins = ["https://app.example/path"]', "serve.cors_origins"),
        ("store", "max_bytes = -5", "store.max_bytes"),
        ("instance", 'did = ""', "instance.did"),
    ],
)
def test_wrong_types_and_ranges_name_the_key_and_what_it_must_be(section: str, line: str, key: str) -> None:
    text = f"[instance]\n{line}\n" if section == "instance" else INSTANCE + f"[{section}]\n{line}\n"
    error = refusal(text)
    assert error.key == key
    assert str(error).startswith(f"{key} must be "), str(error)


@pytest.mark.parametrize(
    "url",
    [
        "spl.example.com",
        "/relative",
        "ftp://spl.example.com",
        "https://spl.example.com/?x=1",
        "https://spl.example.com/#top",
        "https://user:secret@spl.example.com",
        "https://",
        "https://spl example.com",
        "https://spl.example.com/\\u001b]0;owned\\u0007",  # TOML escapes: ESC and BEL in the value
        "https://spl.exämple.com",
    ],
)
def test_public_url_must_be_an_absolute_http_url_without_query_fragment_or_credentials(url: str) -> None:
    error = refusal(INSTANCE + f'[serve]\npublic_url = "{url}"\n')
    assert error.key == "serve.public_url" and "absolute http(s) URL" in str(error)


@pytest.mark.parametrize(
    "url", ["https://spl.example.com", "http://10.0.0.5:9100", "https://proxy.example/spl/", "HTTPS://[2001:db8::1]"]
)
def test_public_url_accepts_http_and_https_with_a_path(url: str) -> None:
    assert Config.from_toml(INSTANCE + f'[serve]\npublic_url = "{url}"\n').public_url == url


def test_instance_did_is_required() -> None:
    assert refusal('[instance]\ncreated_at = "x"\n').key == "instance.did"
    assert refusal("").key == "instance.did"


def test_not_toml_at_all() -> None:
    error = refusal(INSTANCE + "[serve\n")
    assert error.key is None and str(error).startswith("it is not valid TOML (")


def test_every_problem_is_listed_one_per_section() -> None:
    text = INSTANCE + '[serve]\nprot = 1\n[auth]\nrequired = "no"\n[store]\nmax_bytes = -1\n'
    assert [problem.key for problem in problems_in(text)] == ["serve.prot", "auth.required", "store.max_bytes"]
    assert str(refusal(text)).endswith("(and 2 more problem(s))")
    assert problems_in(OLD_FORMAT) == []


def test_typos_of_section_names_and_keys_outside_sections_are_refused() -> None:
    assert str(refusal(INSTANCE + "[sevre]\nport = 9200\n")) == (
        "[sevre] is not a section spl reads (did you mean serve?); rename it"
    )
    assert str(refusal("port = 9200\n" + INSTANCE)) == "port is outside any section; move it under [serve]"
    assert refusal("serve = 5\n" + INSTANCE).key == "serve"


# -- tolerated, reported, kept ------------------------------------------------------------------------


def test_obsolete_keys_are_tolerated_in_any_form_and_reported() -> None:
    for value in ('"no"', "true", "3"):
        config = Config.from_toml(INSTANCE + f"[federation]\ntrust_loopback = {value}\n")
        assert config.obsolete_keys == ["federation.trust_loopback"]
    assert Config.from_toml(OLD_FORMAT).obsolete_keys == []
    assert set(OBSOLETE_KEYS) == {"federation.trust_loopback"}
    # Anything else under [federation] is still a typo.
    assert refusal(INSTANCE + "[federation]\ntrust_loopbak = true\n").key == "federation.trust_loopbak"


def test_sections_spl_does_not_read_are_tolerated_and_reported() -> None:
    config = Config.from_toml(INSTANCE + '[relay]\nurl = "wss://relay.example"\n[directory]\nenabled = true\n')
    assert config.ignored_sections == ["relay", "directory"]


def test_the_format_older_spl_wrote_reads_as_the_defaults() -> None:
    config = Config.from_toml(OLD_FORMAT)
    assert config == Config.fresh(DID, "2026-01-01T00:00:00Z")
    new_keys = (
        "serve.public_url",
        *(key.path for key in KEYS if key.section in ("federation", "metrics") or key.section.startswith("sync")),
    )
    assert all(value.source == "file" for value in effective_values(OLD_FORMAT) if value.key.path not in new_keys)


# -- the names the rest of the tree reads -------------------------------------------------------------

FLAT = {
    "did": ("instance", "did", "did:key:z6Mkother"),
    "created_at": ("instance", "created_at", "2027-02-02T00:00:00Z"),
    "host": ("serve", "host", "0.0.0.0"),
    "port": ("serve", "port", 9200),
    "public_url": ("serve", "public_url", "https://spl.example.com"),
    "max_body_bytes": ("serve", "max_body_bytes", 4096),
    "heartbeat_seconds": ("serve", "heartbeat_seconds", 1.5),
    "sse_buffer": ("serve", "sse_buffer", 4),
    "cors_origins": ("serve", "cors_origins", ["https://app.example"]),
    "max_connections": ("serve", "max_connections", 100),
    "header_timeout": ("serve", "header_timeout", 2.0),
    "auth_required": ("auth", "required", False),
    "store_max_bytes": ("store", "max_bytes", 65536),
}


@pytest.mark.parametrize("name", sorted(FLAT))
def test_flat_names_read_and_write_the_sections(name: str) -> None:
    section, field, value = FLAT[name]
    config = Config.fresh(DID, "2026-01-01T00:00:00Z")
    assert getattr(config, name) == getattr(getattr(config, section), field)
    setattr(config, name, value)
    assert getattr(getattr(config, section), field) == value
    assert getattr(Config.from_toml(config.to_toml()), name) == value


def test_the_unused_extra_is_gone_and_obsolete_keys_stay() -> None:
    config = Config.fresh(DID, "")
    assert not hasattr(config, "extra") and config.obsolete_keys == []


def _leaf_fields(prefix: str, kind: type[msgspec.Struct]) -> set[str]:
    """Every field path of a section, descending into nested tables (``sync.discovery.mdns_broadcast``)."""
    paths: set[str] = set()
    for field in msgspec.structs.fields(kind):
        if isinstance(field.type, type) and issubclass(field.type, msgspec.Struct):
            paths |= _leaf_fields(f"{prefix}.{field.name}", field.type)
        else:
            paths.add(f"{prefix}.{field.name}")
    return paths


def test_keys_describe_exactly_the_struct_fields() -> None:
    fields = set().union(*(_leaf_fields(name, kind) for name, kind in SECTIONS.items()))
    assert {key.path for key in KEYS} | set(TABLE_ARRAYS) == fields
    assert {key.path for key in KEYS if not key.settable} == {"instance.did", "instance.created_at"}


def test_docs_list_every_key_and_command() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    for key in KEYS:
        assert f"`{key.path}`" in text, key.path
    for command in ("path", "show", "get", "set", "validate"):
        assert f"spl config {command}" in text


# -- writing -------------------------------------------------------------------------------------------


def test_a_value_set_in_code_out_of_range_is_never_written() -> None:
    config = Config.fresh(DID, "")
    config.port = 70000
    with pytest.raises(ConfigError) as refused:
        config.to_toml()
    assert refused.value.key == "serve.port"


def test_a_quote_in_a_value_round_trips() -> None:
    config = Config.fresh('did:key:"quoted"\\ and \n newline', 'said "hi"')
    text = config.to_toml()
    assert tomllib.loads(text)["instance"]["did"] == config.did
    assert Config.from_toml(text) == config


USER_FILE = (
    "# my notes about this instance\n"
    f"{INSTANCE}"
    "\n[serve]\n"
    "# the port our firewall opens\n"
    "port = 9300  # do not change without telling ops\n"
    "\n[federation]\n"
    "trust_loopback = true\n"
    "\n[relay]  # the reference daemon's\n"
    'url = "wss://relay.example"\n'
)


def test_saving_onto_the_file_keeps_comments_obsolete_keys_and_other_sections() -> None:
    config = Config.from_toml(USER_FILE)
    assert config.port == 9300 and config.ignored_sections == ["relay"]
    assert config.to_toml(USER_FILE) == USER_FILE  # nothing changed: not a byte moves
    config.port = 9400
    config.auth_required = False
    saved = config.to_toml(USER_FILE)
    assert saved.count("\n") == USER_FILE.count("\n") + 3  # one new key in a new [auth] table
    assert "port = 9400  # do not change without telling ops\n" in saved
    for kept in ("# my notes about this instance", "# the port our firewall opens", "trust_loopback = true"):
        assert kept in saved
    assert '[relay]  # the reference daemon\'s\nurl = "wss://relay.example"' in saved
    again = Config.from_toml(saved)
    assert again.port == 9400 and again.auth_required is False
    assert again.obsolete_keys == ["federation.trust_loopback"] and again.ignored_sections == ["relay"]


def test_with_value_changes_one_line_and_checks_the_result() -> None:
    updated = with_value(USER_FILE, "serve.port", 9500)
    assert [line for line in updated.splitlines() if line not in USER_FILE.splitlines()] == [
        "port = 9500  # do not change without telling ops"
    ]
    assert Config.from_toml(with_value(updated, "serve.public_url", "https://spl.example")).public_url
    assert with_value(with_value(updated, "serve.public_url", "https://x.example"), "serve.public_url", None) == updated
    with pytest.raises(ConfigError, match=r"^serve\.port must be an integer from 0 to 65535"):
        with_value(USER_FILE, "serve.port", 70000)
    with pytest.raises(ConfigError, match=r"^instance\.did is set by `spl init`"):
        with_value(USER_FILE, "instance.did", "did:key:z6Mkother")
    with pytest.raises(ConfigError, match=r"did you mean serve\.port\?"):
        with_value(USER_FILE, "serve.prot", 1)
    broken = USER_FILE + '\n[auth]\nrequired = "no"\n'
    with pytest.raises(ConfigError) as elsewhere:
        with_value(broken, "serve.port", 9500)
    assert elsewhere.value.key == "auth.required"  # the file's other problem, named
    assert Config.from_toml(with_value(broken, "auth.required", False)).auth_required is False  # set fixes it


@pytest.mark.parametrize(
    ("key", "typed", "value"),
    [
        ("auth.required", "false", False),
        ("auth.required", "TRUE", True),
        ("serve.port", "9200", 9200),
        ("serve.heartbeat_seconds", "500ms", 0.5),
        ("serve.header_timeout", "1m", 60.0),
        ("serve.cors_origins", "https://a.example, https://b.example", ["https://a.example", "https://b.example"]),
        ("serve.cors_origins", '["https://a.example"]', ["https://a.example"]),
        ("serve.cors_origins", "", []),
        ("serve.public_url", "", None),
        ("serve.host", "0.0.0.0", "0.0.0.0"),
    ],
)
def test_values_typed_on_the_command_line(key: str, typed: str, value: Any) -> None:
    assert parse_value(key, typed) == value


@pytest.mark.parametrize(
    ("key", "typed"),
    [
        ("auth.required", "no"),
        ("serve.port", "9100.5"),
        ("serve.heartbeat_seconds", "soon"),
        ("serve.cors_origins", "[1]"),
    ],
)
def test_values_of_the_wrong_kind_are_refused_with_the_form_expected(key: str, typed: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_value(key, typed)
    assert refused.value.key == key and str(refused.value).startswith(f"{key} must be ")


def test_effective_values_say_where_each_comes_from() -> None:
    values = {value.key.path: value for value in effective_values(USER_FILE)}
    assert list(values) == [key.path for key in KEYS]
    assert (values["serve.port"].value, values["serve.port"].source) == (9300, "file")
    assert (values["serve.host"].value, values["serve.host"].source) == ("127.0.0.1", "default")
    assert (values["serve.public_url"].value, values["serve.public_url"].source) == (None, "default")


# -- round trip, property-tested -----------------------------------------------------------------------

texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
seconds = st.floats(min_value=0.001, max_value=3600, allow_nan=False, allow_infinity=False)
hosts = st.from_regex(r"\A[0-9A-Za-z._:-]{1,30}\Z")
origins = st.from_regex(r"\A(https?|app)://[a-z0-9.-]{1,20}(:[0-9]{1,5})?/?\Z")
public_urls = st.none() | st.from_regex(r"\Ahttps?://[a-z0-9.-]{1,20}(:[0-9]{1,5})?(/[a-z0-9/._-]{0,20})?\Z")


@st.composite
def configs(draw: st.DrawFn) -> Config:
    config = Config.fresh(draw(texts.filter(bool)), draw(texts))
    config.host = draw(hosts)
    config.port = draw(st.integers(0, 65535))
    config.public_url = draw(public_urls)
    config.max_body_bytes = draw(st.integers(1024, 1 << 30))
    config.heartbeat_seconds = draw(seconds)
    config.header_timeout = draw(seconds)
    config.sse_buffer = draw(st.integers(1, 1_000_000))
    config.max_connections = draw(st.integers(1, 1_000_000))
    config.cors_origins = draw(st.lists(origins, max_size=4))
    config.auth_required = draw(st.booleans())
    config.store_max_bytes = draw(st.integers(0, 1 << 62))
    config.sync.discovery.mdns_listen = draw(st.booleans())
    config.sync.discovery.mdns_broadcast = draw(st.booleans())
    config.sync.discovery.directory_url = draw(public_urls)
    return config


@settings(max_examples=150, deadline=None)
@given(configs())
def test_every_valid_config_round_trips_through_a_fresh_file(config: Config) -> None:
    assert Config.from_toml(config.to_toml()) == config


def _table_of(config: Config, section: str) -> object:
    """The Struct of a dotted section (``sync.discovery``) inside ``config``."""
    value: object = config
    for part in section.split("."):
        value = getattr(value, part)
    return value


@settings(max_examples=100, deadline=None)
@given(configs(), configs())
def test_saving_over_a_user_file_round_trips_and_keeps_what_spl_does_not_read(first: Config, second: Config) -> None:
    user_file = USER_FILE.replace(DID, "placeholder")
    base = Config.from_toml(user_file)
    for key in KEYS:
        setattr(_table_of(base, key.section), key.name, first.value(key.path))
    once = base.to_toml(user_file)
    for key in KEYS:
        setattr(_table_of(base, key.section), key.name, second.value(key.path))
    twice = base.to_toml(once)
    decoded = Config.from_toml(twice)
    assert [decoded.value(key.path) for key in KEYS] == [second.value(key.path) for key in KEYS]
    assert decoded.obsolete_keys == ["federation.trust_loopback"] and decoded.ignored_sections == ["relay"]
    assert "# the port our firewall opens" in twice and "# do not change without telling ops" in twice


# -- the endpoint peers are told ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("public_url", "bound", "advertised"),
    [
        (None, "http://127.0.0.1:9100", "http://127.0.0.1:9100"),
        (None, "http://0.0.0.0:9100", "http://127.0.0.1:9100"),
        (None, "http://[::]:9100", "http://[::1]:9100"),
        (None, "http://192.168.1.4:9100", "http://192.168.1.4:9100"),
        (None, "http://[2001:db8::1]:9100", "http://[2001:db8::1]:9100"),
        ("", "http://0.0.0.0:9100", "http://127.0.0.1:9100"),
        ("https://spl.example.com", "http://0.0.0.0:9100", "https://spl.example.com"),
        ("https://proxy.example/spl/", "http://127.0.0.1:9100", "https://proxy.example/spl"),
    ],
)
def test_advertised_endpoint(public_url: str | None, bound: str, advertised: str) -> None:
    assert advertised_endpoint(public_url, bound) == advertised


def test_no_config_message_mentions_init_force() -> None:
    for text in (INSTANCE + "[serve]\nprot = 1\n", INSTANCE + "[serve\n", INSTANCE + '[auth]\nrequired = "no"\n'):
        assert not re.search(r"init --force", str(refusal(text)))


def test_a_refusal_never_repeats_the_password_of_a_url() -> None:
    error = refusal(INSTANCE + '[serve]\npublic_url = "https://ops:hunter2@spl.example"\n')
    assert "hunter2" not in str(error) and "https://***@spl.example" in str(error)
    with pytest.raises(ConfigError) as typed:
        parse_value("serve.cors_origins", '["https://ops:hunter2@app.example"')
    assert "hunter2" not in str(typed.value)


# -- [sync]: nested tables and an array of tables (issue 14) ---------------------------------------------


def test_a_nested_key_is_set_read_and_written_in_its_own_table() -> None:
    text = with_value(INSTANCE, "sync.discovery.mdns_broadcast", True)
    assert "[sync.discovery]\nmdns_broadcast = true" in text and "\n[sync]\n" not in text
    config = Config.from_toml(text)
    assert config.value("sync.discovery.mdns_broadcast") is True
    assert config.sync.discovery.mdns_listen is True  # the listener is on by default
    sources = {value.key.path: value.source for value in effective_values(text)}
    assert sources["sync.discovery.mdns_broadcast"] == "file" and sources["sync.discovery.serve_directory"] == "default"
    assert Config.from_toml(config.to_toml(previous=text)) == config


def test_a_misspelt_or_mistyped_discovery_key_is_refused_by_its_full_path() -> None:
    (typo,) = problems_in(INSTANCE + "[sync.discovery]\nmdns_brodcast = true\n")
    assert typo.key == "sync.discovery.mdns_brodcast" and "did you mean sync.discovery.mdns_broadcast" in typo.problem
    (wrong,) = problems_in(INSTANCE + '[sync.discovery]\nmdns_broadcast = "yes"\n')
    assert wrong.key == "sync.discovery.mdns_broadcast" and "true or false" in wrong.problem


def test_static_peers_are_bounded_and_checked() -> None:
    config = Config.from_toml(INSTANCE + '[[sync.peers]]\nurl = "http://10.0.0.2:9100"\nnamespaces = ["default"]\n')
    assert config.sync.peers[0].url == "http://10.0.0.2:9100" and config.sync.peers[0].did is None
    (bad,) = problems_in(INSTANCE + '[[sync.peers]]\nurl = "http://user:secret@host"\n')
    assert bad.key == "sync.peers.url" and "secret" not in bad.problem
    many = "".join(f'[[sync.peers]]\nurl = "http://10.0.{i // 250}.{i % 250}:9100"\n' for i in range(257))
    (too_many,) = problems_in(INSTANCE + many)
    assert too_many.key == "sync.peers" and "at most 256" in too_many.problem
