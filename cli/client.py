"""How CLI commands reach a daemon: URL, credential, and error handling in one place.

The CLI never guesses where the daemon is, and never sends a credential where it guessed:

- The URL is the explicit one (``--url``, else ``$SPL_SERVE_URL``), else the URL of this home's running daemon:
  ``run/spl.url``, trusted only while that daemon holds the home's run lock (``Home.running``). With neither,
  the command stops with one line saying how to start a daemon; nothing is tried on a default port, where any
  local process could be listening.
- The credential is ``$SPL_TOKEN``, else a token saved with ``spl token save``, else the home's admin credential
  (``secrets/admin.token``, written by ``spl init``). The admin credential goes only to this home's running
  daemon: an explicit URL that is not that daemon's gets the first two or nothing.

Every way a request can fail (no daemon, refused connection, a bad URL, an answer that is not JSON from
something that is not an spl daemon, a JSON object of the wrong shape) becomes a one-line :class:`CliError`
naming the fix. Answers are read through :meth:`Reply.into`, which decodes them into the typed Structs of
:mod:`spl.cli.answers`.

httpx is imported where a request is made (:func:`load_httpx`), not at module level: every command imports this
module, and ``spl version`` or ``spl --help`` must not pay for an HTTP stack they never use. A request to an
``http://`` URL builds no TLS context (:func:`tls_for`): loading the system's CA bundle costs more than the request.
"""

from __future__ import annotations

import os
import sys
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # imported where used: `spl --help` and `spl version` import this module and need none of them
    import ssl

    import httpx

    from spl.cli.answers import Answer
    from spl.daemon.home import Home

T = TypeVar("T", bound="Answer")

__all__ = [
    "CliError",
    "DaemonClient",
    "DaemonError",
    "DaemonUnreachable",
    "NoDaemon",
    "Reply",
    "call",
    "checked_url",
]

# Methods that carry a JSON body: the daemon's write routes refuse any other content type (415), so the
# CLI always sends one, ``{}`` when the command has nothing to say.
BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")
DETAIL_LIMIT = 200


class CliError(Exception):
    """A failure to show the user (one line, names the fix); exit status 1."""


class DaemonError(CliError):
    """The daemon answered with an error envelope; ``code`` is its machine-readable code."""

    def __init__(self, status: int, code: str, message: str, type_: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.type = type_  # the envelope's type (invalid_request_error, …): `-o json` errors keep it


class DaemonUnreachable(CliError):
    """Nothing accepted the connection at the daemon URL."""


class NoDaemon(DaemonUnreachable):
    """No URL was given and no daemon runs for this home."""


@dataclass(frozen=True)
class Reply:
    """A daemon's answer: its status, the JSON object as sent (for ``-o json``) and where it came from.

    Attributes:
        status: The HTTP status (201 created vs 200 already stored).
        payload: The answer's JSON object, exactly as the daemon sent it.
        where: ``GET http://host:port/path``, for error lines.
    """

    status: int
    payload: dict[str, Any]
    where: str = "the daemon"

    def into(self, kind: type[T]) -> T:
        """The answer decoded as ``kind``, or one error line naming the URL and what was wrong.

        Raises:
            CliError: A field ``kind`` needs is missing or of the wrong type.
        """
        return decode_answer(self.payload, kind, self.where)


def decode_answer(payload: Any, kind: type[T], where: str) -> T:
    """``payload`` as ``kind`` (msgspec, strict types); a wrong shape is a one-line :class:`CliError`."""
    import msgspec

    try:
        return msgspec.convert(payload, kind)
    except msgspec.ValidationError as exc:
        raise CliError(
            f"{where} answered with JSON that is not {kind.what} ({one_line(str(exc), 120)}): "
            "is it an spl daemon of this version? Check --url / SPL_SERVE_URL"
        ) from None


def one_line(text: str, limit: int = DETAIL_LIMIT) -> str:
    """``text`` with its whitespace runs (newlines included) collapsed, cut to ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class _TrioOnFirstUse(types.ModuleType):
    """Stands in for ``trio`` in httpcore, which imports it at module level only to pick async locks.

    httpcore's ``_synchronization`` module runs ``import trio`` when it is imported (about 0.1 s, a sixth of a
    CLI command's whole run) although the CLI's synchronous client never touches it. While httpcore is
    imported this object is ``sys.modules["trio"]``; httpcore keeps it as its ``trio``, and its first attribute
    read imports the real trio and answers from it, so an async client under trio in the same process still
    works. Nobody else ever sees it: :func:`load_httpx` puts it back before any other import.
    """

    def __getattr__(self, name: str) -> Any:
        import importlib

        return getattr(importlib.import_module("trio"), name)


def load_httpx() -> types.ModuleType:
    """``import httpx`` without what a CLI request never uses: trio (see :class:`_TrioOnFirstUse`) and httpx's
    own command line (``httpx._main``: rich and click, about 40 ms; httpx falls back to a stub ``main``).

    Both stand-ins are removed before this returns, so a later ``import trio`` or ``import httpx._main``
    anywhere in the process gets the real module.
    """
    if "httpx" in sys.modules:
        return sys.modules["httpx"]
    stand_ins: dict[str, types.ModuleType | None] = {"httpx._main": None}  # None: "not importable", to import
    if "httpcore" not in sys.modules and "trio" not in sys.modules:
        stand_ins["trio"] = _TrioOnFirstUse("trio")
    modules: dict[str, types.ModuleType | None] = sys.modules  # type: ignore[assignment]  # None is allowed there
    for name, stand_in in stand_ins.items():
        modules.setdefault(name, stand_in)
    try:
        import httpcore  # noqa: F401  (httpx imports it on its first client; here, while the stand-in is in place)
        import httpx
    finally:
        for name, stand_in in stand_ins.items():
            if name in sys.modules and sys.modules[name] is stand_in:
                del sys.modules[name]
    return httpx


def tls_for(url: str) -> ssl.SSLContext | bool:
    """What ``httpx.Client(verify=...)`` gets for a daemon at ``url``: the default verification for https.

    For plain http, a bare context: httpx would otherwise load the CA bundle (tens of milliseconds) for a
    connection that never speaks TLS. Should it ever be used, it verifies against no CA at all and fails
    closed.
    """
    import ssl

    return True if url.lower().startswith("https:") else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def checked_url(text: str, source: str) -> str:
    """``text`` as a daemon base URL (no trailing ``/``), or a one-line error naming ``source``.

    Raises:
        CliError: Not an http(s) URL with a host and a port in range.
    """
    httpx = load_httpx()

    hint = f"{source} {text!r} is not a daemon URL"
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as exc:
        raise CliError(f"{hint} ({exc}); pass one like http://127.0.0.1:9100") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise CliError(f"{hint}; pass one like http://127.0.0.1:9100 (http or https, with a host)")
    if url.port is not None and not 0 < url.port < 65536:
        raise CliError(f"{hint} (port {url.port} is out of range); pass one like http://127.0.0.1:9100")
    return text.rstrip("/")


def _same_daemon(a: str, b: str) -> bool:
    """Whether two base URLs name the same origin and path (``http://h:1/`` is ``http://h:1``)."""
    httpx = load_httpx()

    first, second = httpx.URL(a), httpx.URL(b)
    return (first.scheme, first.host, first.port, first.path.rstrip("/")) == (
        second.scheme,
        second.host,
        second.port,
        second.path.rstrip("/"),
    )


@dataclass
class DaemonClient:
    """Where to send requests and what credential to send.

    Attributes:
        url: The daemon's base URL.
        token: The credential sent as ``x-api-key``, if any.
        timeout: Seconds per request.
        withheld: Why the home's admin credential was not sent (``url`` is not this home's running daemon);
            a 401 then says so.
    """

    url: str
    token: str | None
    timeout: float = 30.0
    withheld: str | None = None

    @classmethod
    def for_home(cls, home: Home, url: str | None = None) -> DaemonClient:
        """The client for ``home``: see the module docstring for where its URL and credential come from.

        Raises:
            NoDaemon: No URL was given and no daemon holds the home's run lock.
            CliError: The given URL is not a URL.
        """
        explicit, source = (url, "--url") if url else (os.environ.get("SPL_SERVE_URL") or None, "$SPL_SERVE_URL")
        running = home.running()
        home_url = running.url if running is not None else None
        if explicit is not None:
            target = checked_url(explicit, source)
        elif home_url is not None:
            target = home_url
        elif running is not None:
            raise NoDaemon(f"the spl daemon for {home.root} is starting and not listening yet; try again in a moment")
        else:
            raise NoDaemon(
                f"no spl daemon is running for {home.root}; start one with `spl serve --daemon` or pass --url"
            )
        chosen = os.environ.get("SPL_TOKEN") or home.read_secret(home.saved_token_path)
        if chosen is not None:
            return cls(target, chosen)
        admin = home.read_secret(home.admin_token_path)
        if admin is None or (home_url is not None and _same_daemon(target, home_url)):
            return cls(target, admin)
        where = f"at {home_url}" if home_url else "and none is running"
        return cls(target, None, withheld=f"the admin credential of {home.root} goes only to its own daemon, {where}")

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request; returns parsed JSON or raises CliError with the daemon's message."""
        return call(self, method, path, json_body=kwargs.get("json"), params=kwargs.get("params")).payload

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, payload: Any) -> Any:
        return self.request("POST", path, json=payload)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)


def call(
    client: DaemonClient,
    method: str,
    path: str,
    *,
    json_body: Any = None,
    params: dict[str, Any] | None = None,
    accept: tuple[int, ...] = (),
) -> Reply:
    """One request whose answer must be a JSON object.

    ``accept`` lists error statuses whose JSON body the caller reads itself (``/health`` answers 503 with
    what is degraded).

    Raises:
        DaemonError: The daemon answered 4xx/5xx.
        DaemonUnreachable: Nothing accepted the connection.
        CliError: Any other failure: a bad URL, a timeout, an answer that is not a JSON object.
    """
    httpx = load_httpx()

    method = method.upper()
    headers = {"x-api-key": client.token} if client.token else {}
    kwargs: dict[str, Any] = {}
    if json_body is None and method in BODY_METHODS:
        json_body = {}
    if json_body is not None:
        kwargs["json"] = json_body  # httpx sets content-type: application/json
    if params:
        kwargs["params"] = {key: value for key, value in params.items() if value is not None}
    try:
        with httpx.Client(
            base_url=client.url, timeout=client.timeout, headers=headers, verify=tls_for(client.url)
        ) as http:
            response = http.request(method, path, **kwargs)
    except httpx.ConnectError:
        raise DaemonUnreachable(
            f"no daemon answers at {client.url}: start one with `spl serve --daemon` (or check --url / SPL_SERVE_URL)"
        ) from None
    except httpx.TimeoutException:
        raise CliError(f"the daemon at {client.url} did not answer within {client.timeout:.0f}s") from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise CliError(f"request to {client.url} failed ({type(exc).__name__}: {one_line(str(exc))})") from None
    try:
        payload = response.json()
    except ValueError:
        payload = None
    where = f"{method} {client.url}{response.request.url.path}"
    if response.status_code >= 400 and not (response.status_code in accept and isinstance(payload, dict)):
        if isinstance(payload, dict):
            from spl.cli.answers import ErrorAnswer

            error = decode_answer(payload, ErrorAnswer, where)
            code = error.code or error.error or "ERROR"
            message = one_line(str(response.text if error.message is None else error.message))
            if response.status_code == 401 and client.withheld is not None:
                message += f" ({client.withheld}; set SPL_TOKEN or `spl token save` a token for this URL)"
            kind = error.type if isinstance(error.type, str) else None
            raise DaemonError(response.status_code, code, message, kind)
        raise DaemonError(response.status_code, f"HTTP {response.status_code}", _not_spl(client, response))
    if not isinstance(payload, dict):
        raise CliError(f"HTTP {response.status_code}: {_not_spl(client, response)}")
    return Reply(response.status_code, payload, where)


def _not_spl(client: DaemonClient, response: httpx.Response) -> str:
    """Say that an answer is not one an spl daemon gives (no JSON object), and what it was instead."""
    kind = one_line(response.headers.get("content-type") or "no content type", 60)
    text = one_line(response.text, 80)
    sample = f": {text!r}" if text and kind.startswith("text/plain") else ""
    return (
        f"{client.url} answered {response.request.method} {response.request.url.path} with {kind}{sample}, "
        "not spl's JSON: is it an spl daemon? Check --url / SPL_SERVE_URL"
    )
