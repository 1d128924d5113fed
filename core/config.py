"""The instance configuration (``config.toml``) as a typed value: pure, no file access.

``spl.daemon.home`` reads and writes the file; this module says what it may hold, turns its text into a
:class:`Config` (refusing what spl would otherwise misread) and writes a :class:`Config` back into text.

Why it is strict: the file used to be read with casts, so ``required = "no"`` read as true and a misspelt
``prot = 19403`` was silently ignored. Each section spl reads is now a msgspec Struct with
``forbid_unknown_fields`` decoded with ``strict`` types, and every refusal names the key's path
(``serve.prot``) and what to do.

What it tolerates, on purpose:

- obsolete keys (``OBSOLETE_KEYS``): a home written by an older spl must still start; they are reported
  (``Config.obsolete_keys``: ``spl doctor``, the daemon's log) and kept in the file;
- top-level tables spl does not read (``Config.ignored_sections``): ``~/.syncro/config.toml`` is the
  reference daemon's file too, so its sections are left alone and kept on save. A name within one edit of
  spl's own (``[sevre]``, a top-level ``port``) is refused instead: it is a typo that would drop a setting.

Writing uses tomlkit onto the previous text, so a ``spl config set`` changes one value and keeps the user's
comments, layout and everything spl does not read; a quote in a value is escaped by the library.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Annotated, Any, Generic, Literal, TypeVar, overload
from urllib.parse import urlsplit, urlunsplit

import msgspec
import tomlkit
from msgspec import Meta

from spl.core.units import DurationError, parse_duration

__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_PORT",
    "KEYS",
    "OBSOLETE_KEYS",
    "AuthSection",
    "Config",
    "ConfigError",
    "ConfigKey",
    "DiscoverySection",
    "EffectiveValue",
    "FederationSection",
    "InstanceSection",
    "ServeSection",
    "StaticPeer",
    "StoreSection",
    "SyncSection",
    "TABLE_ARRAYS",
    "advertised_endpoint",
    "config_key",
    "effective_values",
    "parse_value",
    "problems_in",
    "section_type",
    "with_value",
]

DEFAULT_PORT = 9100
DEFAULT_MAX_BODY = 1024 * 1024

# -- value types with their ranges (msgspec checks them while decoding) ---------------------------------

Port = Annotated[int, Meta(ge=0, le=65535)]
Seconds = Annotated[float, Meta(gt=0, le=3600)]
LongSeconds = Annotated[float, Meta(ge=60, le=90 * 86400)]
# A namespace id (spl.core.namespaces): 1-4 '/'-separated segments of [a-z0-9_-], or "default".
NamespaceId = Annotated[
    str, Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}(/[a-z0-9][a-z0-9_-]{0,62}){0,3}$", max_length=256)
]
# A file path as an operator types it (printable, no newline); spl only ever opens it, never builds one from input.
FilePath = Annotated[str, Meta(pattern=r"^[^\x00-\x1f\x7f]{1,4096}$")]
# A host name or IP address as the HTTP server binds it: no scheme, port, brackets or spaces.
Host = Annotated[str, Meta(pattern=r"^[0-9A-Za-z._:-]+$")]
# An absolute http(s) URL in printable ASCII (IDNs as punycode): no user info (it would be a secret in every
# manifest), query or fragment.
PUBLIC_URL_PATTERN = r"^(?=[!-~]+$)(?i:https?)://[^/?#@]+(/[^?#]*)?$"
PublicUrl = Annotated[str, Meta(pattern=PUBLIC_URL_PATTERN)]
# A browser origin as sent in the Origin header: scheme://host[:port], nothing after it but an optional "/".
Origin = Annotated[str, Meta(pattern=r"^(?=[!-~]+$)[A-Za-z][A-Za-z0-9+.-]*://[^/?#@]+/?$")]


class InstanceSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[instance]``: who this instance is. Written by ``spl init``; ``did`` follows ``keys/identity.key``."""

    did: Annotated[str, Meta(min_length=1)]
    created_at: str = ""


class ServeSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[serve]``: how the daemon listens and what it accepts (``spl serve`` flags override host and port)."""

    host: Host = "127.0.0.1"
    port: Port = DEFAULT_PORT
    public_url: PublicUrl | None = None
    max_body_bytes: Annotated[int, Meta(ge=1024, le=1 << 30)] = DEFAULT_MAX_BODY
    heartbeat_seconds: Seconds = 15.0
    sse_buffer: Annotated[int, Meta(ge=1, le=1_000_000)] = 1024
    cors_origins: list[Origin] = msgspec.field(default_factory=list)
    max_connections: Annotated[int, Meta(ge=1, le=1_000_000)] = 512
    header_timeout: Seconds = 10.0


class AuthSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[auth]``: whether callers need a bearer token (``spl serve --insecure-localhost`` turns it off)."""

    required: bool = True


class StoreSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[store]``: limits on ``hub.db``."""

    max_bytes: Annotated[int, Meta(ge=0)] = 0


class FederationSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[federation]``: how this steward answers pair requests, and how it judges its pairs' peers."""

    pair_approval: Literal["auto", "manual", "closed"] = "manual"
    auto_namespaces: Annotated[list[NamespaceId], Meta(max_length=64)] = msgspec.field(
        default_factory=lambda: ["default"]
    )
    min_peer_poll_interval: Annotated[float, Meta(ge=0.05, le=86_400)] = 60.0
    degraded_after: LongSeconds = 86_400.0
    ca_file: FilePath | None = None


class MetricsSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[metrics]``: a second listener that serves only ``GET /metrics``, without a token (off unless a port is set).

    On the main listener ``/metrics`` needs the ``metrics:read`` scope; an operator whose scraper cannot send a
    token opens this one instead, on an address only the scraper reaches (docs/operations.md).
    """

    host: Host = "127.0.0.1"
    port: Port | None = None


class DiscoverySection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[sync.discovery]``: how this instance finds peers and lets itself be found (docs/discovery.md).

    The mDNS listener is on by default (it only listens: what it hears is listed, never trusted or paired);
    announcing this instance on the LAN and serving as a did:sync directory are opt-in.
    """

    mdns_listen: bool = True
    mdns_broadcast: bool = False
    serve_directory: bool = False
    directory_url: PublicUrl | None = None
    did_web_domain: Annotated[str, Meta(pattern=r"^[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?$")] | None = None
    # What the signed manifest advertises (and so mDNS and a directory list): an operator's choice, since the
    # manifest is public and a namespace's name can say more than it should.
    advertise_namespaces: Annotated[list[NamespaceId], Meta(max_length=16)] = msgspec.field(
        default_factory=lambda: ["default"]
    )


class StaticPeer(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One ``[[sync.peers]]`` entry: a peer known by URL (its DID, if given, must match its signed manifest)."""

    url: PublicUrl
    did: Annotated[str, Meta(pattern=r"^did:(key|web|sync):[A-Za-z0-9._:%-]{1,200}$")] | None = None
    namespaces: Annotated[list[NamespaceId], Meta(max_length=16)] = msgspec.field(default_factory=list)
    name: Annotated[str, Meta(pattern=r"^[!-~ ]{1,64}$")] | None = None


class SyncSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[sync]``: peer discovery (``[sync.discovery]``) and the static peers (``[[sync.peers]]``, at most 256)."""

    discovery: DiscoverySection = msgspec.field(default_factory=DiscoverySection)
    peers: Annotated[list[StaticPeer], Meta(max_length=256)] = msgspec.field(default_factory=list)


SECTIONS: dict[str, type[msgspec.Struct]] = {
    "instance": InstanceSection,
    "serve": ServeSection,
    "auth": AuthSection,
    "store": StoreSection,
    "federation": FederationSection,
    "metrics": MetricsSection,
    "sync": SyncSection,
}

# Keys spl no longer reads, with why: tolerated in any form and reported, never refused.
OBSOLETE_KEYS: dict[str, str] = {
    "federation.trust_loopback": "loopback callers are no longer trusted (spec §15.19); give local callers a token",
}


class ConfigError(ValueError):
    """A config file spl will not read, or a value it will not write.

    Attributes:
        key: The dotted path of the offending key (``serve.port``), or None for a file that is not TOML.
        problem: What is wrong, naming the key and what it should be.
    """

    def __init__(self, key: str | None, problem: str) -> None:
        super().__init__(problem)
        self.key = key
        self.problem = problem


# -- the keys, for people: what each one means (``spl config show``, docs/configuration.md) ---------------

Kind = Literal["str", "optional_url", "optional_str", "int", "optional_int", "seconds", "bool", "origins", "names"]


@dataclass(frozen=True)
class ConfigKey:
    """One key of ``config.toml`` as ``spl config`` presents it.

    Attributes:
        path: ``section.name``.
        kind: How ``spl config set`` reads a value typed on the command line.
        expects: What a valid value is, in words (used in every refusal).
        meaning: What the key changes.
        settable: False for keys another command owns (``instance.did`` follows the identity key).
    """

    path: str
    kind: Kind
    expects: str
    meaning: str
    settable: bool = True

    @property
    def section(self) -> str:
        """The table holding the key: ``serve``, or ``sync.discovery`` for a key of a nested table."""
        return self.path.rsplit(".", 1)[0]

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[1]

    @property
    def default(self) -> Any:
        """The value a file without this key gets (None for ``instance.did``, which has none)."""
        for field in msgspec.structs.fields(section_type(self.section)):
            if field.name == self.name:
                if field.default is not msgspec.NODEFAULT:
                    return field.default
                if field.default_factory is not msgspec.NODEFAULT:
                    return field.default_factory()
        return None


KEYS: tuple[ConfigKey, ...] = (
    ConfigKey(
        "instance.did",
        "str",
        "a DID (did:key:z6Mk…)",
        "The instance's DID; always the DID of keys/identity.key.",
        settable=False,
    ),
    ConfigKey("instance.created_at", "str", "a timestamp", "When `spl init` created the home (UTC).", settable=False),
    ConfigKey(
        "serve.host",
        "str",
        "a host name or IP address such as 127.0.0.1 or 0.0.0.0",
        "Address the daemon binds (0.0.0.0 or :: = every interface); `spl serve --host` overrides it.",
    ),
    ConfigKey(
        "serve.port",
        "int",
        "an integer from 0 to 65535 (0 = any free port)",
        "TCP port the daemon listens on; `spl serve --port` overrides it.",
    ),
    ConfigKey(
        "serve.public_url",
        "optional_url",
        "an absolute http(s) URL with no user info, query or fragment, such as https://spl.example.com",
        "URL peers should use for this instance (behind a proxy or NAT); unset = the bound address.",
    ),
    ConfigKey(
        "serve.max_body_bytes",
        "int",
        "an integer from 1024 to 1073741824",
        "Largest request body accepted, in bytes; larger ones get 413 PAYLOAD_TOO_LARGE.",
    ),
    ConfigKey(
        "serve.heartbeat_seconds",
        "seconds",
        "a duration above 0 and at most 1h, such as 15, 500ms or 1m",
        "How often an idle SSE stream gets a keep-alive comment.",
    ),
    ConfigKey(
        "serve.sse_buffer",
        "int",
        "an integer from 1 to 1000000",
        "Records buffered per SSE subscriber before a slow one is cut off.",
    ),
    ConfigKey(
        "serve.cors_origins",
        "origins",
        'a list of browser origins such as ["https://app.example.com"] (scheme://host[:port])',
        "Origins a browser page may call the API from; empty = no cross-origin access.",
    ),
    ConfigKey(
        "serve.max_connections",
        "int",
        "an integer from 1 to 1000000",
        "Client connections served at once; more wait in the kernel's backlog.",
    ),
    ConfigKey(
        "serve.header_timeout",
        "seconds",
        "a duration above 0 and at most 1h, such as 10 or 2.5s",
        "A client must finish sending its request headers within this time.",
    ),
    ConfigKey(
        "auth.required",
        "bool",
        "true or false",
        "Whether callers need a bearer token; `spl serve --insecure-localhost` turns it off for one run.",
    ),
    ConfigKey(
        "federation.pair_approval",
        "str",
        "auto, manual or closed",
        "How pair requests (`spl federation pair` from a peer) are answered: auto = accepted at once, manual = held "
        "for `spl aitl approve`, closed = refused. Shown in the manifest's consent_policy.",
    ),
    ConfigKey(
        "federation.auto_namespaces",
        "names",
        'a list of namespace ids such as ["default"] (or default,team)',
        "With pair_approval = auto, the only namespaces of this steward a pair request may map (others are dropped "
        "from the answer; a request naming none of them is refused).",
    ),
    ConfigKey(
        "federation.min_peer_poll_interval",
        "seconds",
        "a duration from 50ms to 24h, such as 60 or 1m",
        "The most often this steward pulls from a peer that paired with it, whatever interval the peer proposed.",
    ),
    ConfigKey(
        "federation.degraded_after",
        "seconds",
        "a duration from 1m to 90d, such as 24h",
        "A federation pair whose peer stays unreachable this long is shown degraded.",
    ),
    ConfigKey(
        "federation.ca_file",
        "optional_str",
        "the path of a PEM file of CA certificates (empty = none)",
        "Extra CAs trusted for peers' HTTPS, besides the system's (for a private CA; verification is never off).",
    ),
    ConfigKey(
        "store.max_bytes",
        "int",
        "an integer of 0 or more (0 = no cap)",
        "Refuse writes (503 STORAGE_FULL) once hub.db would grow past this many bytes.",
    ),
    ConfigKey(
        "metrics.host",
        "str",
        "a host name or IP address such as 127.0.0.1",
        "Address of the token-free /metrics listener (used only when metrics.port is set).",
    ),
    ConfigKey(
        "metrics.port",
        "optional_int",
        "an integer from 0 to 65535, or empty for none",
        "Port of a second listener that serves only GET /metrics without a token; unset = none (then /metrics "
        "on the main port needs the metrics:read scope).",
    ),
    ConfigKey(
        "sync.discovery.mdns_listen",
        "bool",
        "true or false",
        "Listen for peers announcing _syncropel._tcp.local on the LAN (GET /v1/discovery/mdns lists them; "
        "nothing heard is trusted or paired).",
    ),
    ConfigKey(
        "sync.discovery.mdns_broadcast",
        "bool",
        "true or false",
        "Announce this instance (its DID, endpoint and namespaces) on the LAN by mDNS; off by default.",
    ),
    ConfigKey(
        "sync.discovery.serve_directory",
        "bool",
        "true or false",
        "Serve as a did:sync directory at /v1/directory (peers register with their signed manifest; in memory, "
        "entries expire unless refreshed).",
    ),
    ConfigKey(
        "sync.discovery.directory_url",
        "optional_url",
        "an absolute http(s) URL such as https://directory.example.com (empty = none)",
        "The directory `spl fleet sync peers discover --method did-sync` queries when --directory is not given.",
    ),
    ConfigKey(
        "sync.discovery.did_web_domain",
        "optional_str",
        "a domain such as alice.dev, optionally with :port (empty = the host of serve.public_url)",
        "The domain of this instance's did:web DID, for the document served at /.well-known/did.json.",
    ),
    ConfigKey(
        "sync.discovery.advertise_namespaces",
        "names",
        'a list of up to 16 namespace ids such as ["default", "acme-corp"] (or default,acme-corp)',
        "The namespaces the signed manifest advertises, and so what mDNS and a did:sync directory list this "
        "instance under (`spl fleet sync peers discover --namespace N`). The manifest is public: list only what "
        "may be known.",
    ),
)
_BY_PATH = {key.path: key for key in KEYS}
# Arrays of tables: read from the file like every key, but not single values `spl config set` could change.
TABLE_ARRAYS: dict[str, str] = {"sync.peers": "static peers, one [[sync.peers]] table each (docs/discovery.md)"}


def section_type(section: str) -> type[msgspec.Struct]:
    """The Struct of a (possibly nested) section: ``serve`` → ServeSection, ``sync.discovery`` → DiscoverySection."""
    first, *rest = section.split(".")
    kind = SECTIONS[first]
    for part in rest:
        kind = next(field.type for field in msgspec.structs.fields(kind) if field.name == part)
    return kind


def _section_value(config: Any, section: str) -> Any:
    """The Struct of ``section`` inside ``config`` (``sync.discovery`` walks ``config.sync.discovery``)."""
    for part in section.split("."):
        config = getattr(config, part)
    return config


def _nested(data: Any, section: str) -> Any:
    """The table at the dotted ``section`` of a parsed TOML mapping, or None when absent or not a table."""
    for part in section.split("."):
        if not isinstance(data, MutableMapping | dict):
            return None
        data = data.get(part)
    return data if isinstance(data, MutableMapping | dict) else None


def config_key(path: str) -> ConfigKey:
    """The key at ``path``, or a :class:`ConfigError` that suggests the nearest real one."""
    key = _BY_PATH.get(path)
    if key is None:
        raise ConfigError(
            path, f"{path} is not a config key{_did_you_mean(path, _BY_PATH)}; `spl config show` lists them"
        )
    return key


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


# -- the whole value ---------------------------------------------------------------------------------

T = TypeVar("T")


class _SectionValue(Generic[T]):
    """``config.port`` reads and writes ``config.serve.port``: the flat names the rest of the tree uses."""

    def __init__(self, section: str, name: str) -> None:
        self.section, self.name = section, name

    @overload
    def __get__(self, config: None, owner: type[Config]) -> _SectionValue[T]: ...
    @overload
    def __get__(self, config: Config, owner: type[Config]) -> T: ...
    def __get__(self, config: Config | None, owner: type[Config]) -> T | _SectionValue[T]:
        if config is None:
            return self
        value: T = getattr(_section_value(config, self.section), self.name)
        return value

    def __set__(self, config: Config, value: T) -> None:
        setattr(getattr(config, self.section), self.name, value)


class Config(msgspec.Struct, kw_only=True):
    """Everything ``config.toml`` says, one Struct per section, plus what was tolerated in it.

    Attributes:
        obsolete_keys: Keys of ``OBSOLETE_KEYS`` found in the file (reported by ``spl doctor`` and at start).
        ignored_sections: Top-level tables spl does not read (kept on save).
    """

    instance: InstanceSection
    serve: ServeSection = msgspec.field(default_factory=ServeSection)
    auth: AuthSection = msgspec.field(default_factory=AuthSection)
    store: StoreSection = msgspec.field(default_factory=StoreSection)
    federation: FederationSection = msgspec.field(default_factory=FederationSection)
    metrics: MetricsSection = msgspec.field(default_factory=MetricsSection)
    sync: SyncSection = msgspec.field(default_factory=SyncSection)
    obsolete_keys: list[str] = msgspec.field(default_factory=list)
    ignored_sections: list[str] = msgspec.field(default_factory=list)

    did = _SectionValue[str]("instance", "did")
    created_at = _SectionValue[str]("instance", "created_at")
    host = _SectionValue[str]("serve", "host")
    port = _SectionValue[int]("serve", "port")
    public_url = _SectionValue[str | None]("serve", "public_url")
    max_body_bytes = _SectionValue[int]("serve", "max_body_bytes")
    heartbeat_seconds = _SectionValue[float]("serve", "heartbeat_seconds")
    sse_buffer = _SectionValue[int]("serve", "sse_buffer")
    cors_origins = _SectionValue[list[str]]("serve", "cors_origins")
    max_connections = _SectionValue[int]("serve", "max_connections")
    header_timeout = _SectionValue[float]("serve", "header_timeout")
    auth_required = _SectionValue[bool]("auth", "required")
    store_max_bytes = _SectionValue[int]("store", "max_bytes")

    @classmethod
    def fresh(cls, did: str, created_at: str) -> Config:
        """Every default, for a new home."""
        return cls(instance=InstanceSection(did=did, created_at=created_at))

    def value(self, path: str) -> Any:
        """The value of the key at ``path`` (``serve.port``)."""
        key = config_key(path)
        return getattr(_section_value(self, key.section), key.name)

    @classmethod
    def from_toml(cls, text: str) -> Config:
        """Decode ``config.toml``.

        Raises:
            ConfigError: The first problem (``problems_in`` lists them all); its message names the key.
        """
        config, problems = _decode(text)
        if problems:
            first = problems[0]
            more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
            raise ConfigError(first.key, first.problem + more)
        assert config is not None
        return config

    def to_toml(self, previous: str | None = None) -> str:
        """This value as ``config.toml`` text, written onto ``previous`` (the file as it is) when given.

        Keys already in ``previous`` are updated in place (comments and layout kept; unchanged ones untouched),
        keys it lacks are added only when they differ from the default, and whatever spl does not read stays.
        Without ``previous`` every key is written, each under a comment saying what it does.

        Raises:
            ConfigError: A value is out of range or of the wrong type (set in code, bypassing the decoder).
        """
        self._check()
        document = _parse_document(previous)
        fresh = document is None
        if document is None:
            document = tomlkit.document()
            document.add(tomlkit.comment("spl instance configuration: `spl config show` lists every key"))
            document.add(tomlkit.comment("and `spl config set KEY VALUE` changes one (docs/configuration.md)."))
        for key in KEYS:
            value = self.value(key.path)
            existing = _nested(document, key.section)
            present = existing is not None and key.name in existing
            if value is None:
                if present:
                    _table(document, key.section).pop(key.name)
            elif present:
                table = _table(document, key.section)
                if _unwrap(table[key.name]) != value:
                    table[key.name] = value
            elif fresh or value != key.default:
                table = _table(document, key.section)
                if fresh and isinstance(table, tomlkit.items.Table):
                    table.add(tomlkit.comment(key.meaning))
                table[key.name] = value
        return tomlkit.dumps(document)

    def _check(self) -> None:
        for name, kind in SECTIONS.items():
            try:
                msgspec.convert(msgspec.to_builtins(getattr(self, name)), kind, strict=True)
            except msgspec.ValidationError as exc:
                raise _explain(name, exc, getattr(self, name)) from None


def problems_in(text: str) -> list[ConfigError]:
    """Every problem in a ``config.toml`` text, at most one per section (empty: spl reads it as it is)."""
    return _decode(text)[1]


def _decode(text: str) -> tuple[Config | None, list[ConfigError]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return None, [ConfigError(None, f"it is not valid TOML ({exc})")]
    problems: list[ConfigError] = []
    ignored: list[str] = []
    for name, value in data.items():
        if name in SECTIONS:
            if not isinstance(value, dict):
                problems.append(ConfigError(name, f"{name} must be a table: write it as [{name}] with keys under it"))
            continue
        owner = next((key.section for key in KEYS if key.name == name), None)
        if owner is not None:
            problems.append(ConfigError(name, f"{name} is outside any section; move it under [{owner}]"))
        elif (hint := _did_you_mean(name, list(SECTIONS))) and isinstance(value, dict):
            problems.append(ConfigError(name, f"[{name}] is not a section spl reads{hint}; rename it"))
        else:
            ignored.append(name)
    sections: dict[str, msgspec.Struct] = {}
    obsolete: list[str] = []
    for name, kind in SECTIONS.items():
        raw = data.get(name, {})
        if not isinstance(raw, dict):
            continue
        raw = dict(raw)
        for path in OBSOLETE_KEYS:
            section, key = path.split(".", 1)
            if section == name and key in raw:
                del raw[key]
                obsolete.append(path)
        if name == "instance" and "did" not in raw:
            problems.append(ConfigError("instance.did", "instance.did is missing; it is written by `spl init`"))
            continue
        try:
            sections[name] = msgspec.convert(raw, kind, strict=True)
        except msgspec.ValidationError as exc:
            problems.append(_explain(name, exc, raw))
    if problems:
        return None, problems
    config = Config(**sections, obsolete_keys=obsolete, ignored_sections=ignored)  # type: ignore[arg-type]
    return config, []


_ERROR_AT = re.compile(r"^(?P<what>.*) - at `\$(?P<where>[^`]*)`$")
_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`$")


def _explain(section: str, error: msgspec.ValidationError, raw: Any) -> ConfigError:
    """msgspec's ``Expected `bool`, got `str` - at `$.required``` as a sentence about ``auth.required``."""
    match = _ERROR_AT.match(str(error))
    what, where = (match["what"], match["where"]) if match else (str(error), "")
    field_path = re.sub(r"\[\d+\]", "", where).lstrip(".")
    unknown = _UNKNOWN_FIELD.match(what)
    if unknown:
        path = ".".join(part for part in (section, field_path, unknown["field"]) if part)
        obsolete = f"; {OBSOLETE_KEYS[path]}" if path in OBSOLETE_KEYS else ""
        suggestion = _did_you_mean(path, _BY_PATH)
        return ConfigError(path, f"{path} is not a config key{suggestion}{obsolete}; rename or remove it")
    path = f"{section}.{field_path}" if field_path else section
    key = _BY_PATH.get(path)
    got = _lookup(raw, where)
    shown = f" (got {_show(got)})" if got is not _MISSING else ""
    expects = key.expects if key else _TABLE_ARRAY_FIELDS.get(path, what)
    return ConfigError(path, f"{path} must be {expects}{shown}")


_MISSING = object()
# What each field of an array of tables (not a ConfigKey) must be, for the refusal's sentence.
_TABLE_ARRAY_FIELDS = {
    "sync.peers": "a list of at most 256 [[sync.peers]] tables",
    "sync.peers.url": "an absolute http(s) URL with no user info, query or fragment, such as http://10.0.0.2:9100",
    "sync.peers.did": "a DID such as did:key:z6Mk…, did:web:alice.dev or did:sync:…",
    "sync.peers.namespaces": 'a list of at most 16 namespace ids such as ["default"]',
    "sync.peers.name": "a label of 1 to 64 printable ASCII characters",
}


def _lookup(raw: Any, where: str) -> Any:
    """The value at msgspec's ``.serve.cors_origins[1]``-style location inside ``raw``, if it is there."""
    for name, index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", where):
        try:
            raw = raw[name] if name else raw[int(index)]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return raw


_USER_INFO = re.compile(r"(?<=://)[^/?#\s]*@")


def _show(value: Any) -> str:
    """A bad value quoted back in an error: ASCII-only JSON (nothing a terminal acts on), with the user info of
    any URL in it (``https://user:password@host``) masked, because a refusal must not repeat a secret."""
    return _USER_INFO.sub("***@", json.dumps(value, default=str))


# -- writing: tomlkit over the previous text -----------------------------------------------------------


def _parse_document(text: str | None) -> tomlkit.TOMLDocument | None:
    if text is None:
        return None
    try:
        return tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigError(None, f"it is not valid TOML ({exc})") from None


def _table(document: tomlkit.TOMLDocument, name: str) -> MutableMapping[str, Any]:
    """The ``[name]`` table of ``document``, created (or put in place of a non-table value) when missing.

    A dotted ``name`` (``sync.discovery``) walks nested tables; a parent created on the way is a super table,
    so the file reads ``[sync.discovery]`` rather than an empty ``[sync]`` above it.
    """
    container: MutableMapping[str, Any] = document
    parts = name.split(".")
    for depth, part in enumerate(parts):
        existing = container.get(part)
        if isinstance(existing, MutableMapping):
            container = existing
            continue
        table = tomlkit.table(is_super_table=depth < len(parts) - 1 or None)
        if existing is None:
            if container is document:
                document.add(tomlkit.nl())
                document.add(part, table)
            else:
                container[part] = table
        else:
            container[part] = table
        container = table
    return container


def _unwrap(item: Any) -> Any:
    unwrap: Callable[[], Any] | None = getattr(item, "unwrap", None)
    return unwrap() if unwrap is not None else item


def with_value(text: str, path: str, value: Any) -> str:
    """``text`` with the key at ``path`` set to ``value`` (None removes it: the default applies again).

    Only that key changes: comments, layout and keys spl does not read stay as they are. The result must
    decode, so a bad value is refused here, before anything is written; a file that was already invalid
    elsewhere is refused too, naming that other key (this change alone cannot make it readable).

    Raises:
        ConfigError: An unknown or read-only key, a bad value, or an invalid file.
    """
    key = config_key(path)
    if not key.settable:
        raise ConfigError(path, f"{path} is set by `spl init` and follows the identity key; it cannot be set")
    document = _parse_document(text)
    assert document is not None
    table = _table(document, key.section)
    if value is None:
        table.pop(key.name, None)
    else:
        table[key.name] = value
    updated = tomlkit.dumps(document)
    Config.from_toml(updated)
    return updated


def parse_value(path: str, typed: str) -> Any:
    """A value typed on the command line for the key at ``path``, as the Python value it stands for.

    Ranges are not checked here (``with_value`` does, with the rest of the file); only the form.

    Raises:
        ConfigError: Not a value of the key's kind; the message says what is.
    """
    key = config_key(path)
    text = typed.strip()

    def refuse() -> ConfigError:
        return ConfigError(path, f"{path} must be {key.expects} (got {_show(typed)})")

    if key.kind == "bool":
        if text.lower() not in ("true", "false"):
            raise refuse()
        return text.lower() == "true"
    if key.kind == "int" or (key.kind == "optional_int" and text):
        if not re.fullmatch(r"-?\d+", text):
            raise refuse()
        return int(text)
    if key.kind == "optional_int":
        return None
    if key.kind == "seconds":
        try:
            return parse_duration(text, path)
        except DurationError:
            raise refuse() from None
    if key.kind in ("origins", "names"):
        if text.startswith("["):
            try:
                origins = json.loads(text)
            except json.JSONDecodeError:
                raise refuse() from None
            if not isinstance(origins, list) or not all(isinstance(origin, str) for origin in origins):
                raise refuse()
            return origins
        return [origin.strip() for origin in text.split(",") if origin.strip()]
    if key.kind in ("optional_url", "optional_str"):
        return text or None
    return typed


# -- reading for people: effective values and where they come from --------------------------------------


@dataclass(frozen=True)
class EffectiveValue:
    """A key's value in effect and its source: ``file`` (set in config.toml) or ``default``."""

    key: ConfigKey
    value: Any
    source: Literal["file", "default"]


def effective_values(text: str) -> list[EffectiveValue]:
    """Every key with the value spl uses and where it comes from, in ``KEYS`` order.

    No environment variable changes a key (``SYNCROPEL_HOME`` only chooses the file), so the source is the
    file or the default. ``spl serve --host/--port/--insecure-localhost`` override values for one run only.

    Raises:
        ConfigError: The text is not a valid config.
    """
    config = Config.from_toml(text)
    data = tomllib.loads(text)
    values = []
    for key in KEYS:
        in_file = key.name in (_nested(data, key.section) or {})
        values.append(EffectiveValue(key, config.value(key.path), "file" if in_file else "default"))
    return values


# -- the endpoint peers are told -----------------------------------------------------------------------

_WILDCARD_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}


def advertised_endpoint(public_url: str | None, bound_url: str) -> str:
    """The base URL to give peers (``endpoint_url``, the manifest): ``serve.public_url`` when set.

    Otherwise the URL the daemon bound, where a wildcard host cannot be dialled: ``0.0.0.0`` becomes
    ``127.0.0.1`` and ``::`` becomes ``[::1]`` (the loopback of the same family, reachable whatever
    ``bindv6only`` says). Trailing slashes are dropped so every form joins paths the same way.
    """
    if public_url:
        return public_url.rstrip("/")
    parts = urlsplit(bound_url)
    host = parts.hostname if parts.hostname is not None else ""
    if host not in _WILDCARD_LOOPBACK:
        return bound_url.rstrip("/")
    netloc = _WILDCARD_LOOPBACK[host] + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)).rstrip("/")
