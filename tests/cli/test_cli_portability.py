"""``spl export`` / ``spl import`` at the unit level: options, files, what is sent and what is printed.

No spl daemon here: a ``FakeDaemon`` plays one with canned answers of the contract's shapes (issue 11; the
lead's routes), to pin what each command sends (path, query, content type, the passphrase header and never a
URL parameter, the file's bytes) and what it prints (seed 004's lines). The helpers that guard the operator's
files (``private_output``, ``read_passphrase``) are called directly. The walk between two real daemons is
``test_cli_portability_e2e.py``.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cli_support import FakeDaemon, Result, base_env, one_error_line, run_spl

from spl.cli.client import CliError
from spl.cli.portability import PASSPHRASE_HEADER, Progress, private_output, read_passphrase
from spl.daemon.bootstrap import initialise
from spl.daemon.home import DaemonLock, Home

SOURCE_DID = "did:key:z6MkSourceSourceSourceSourceSourceSourceSourceSrc1"
FORGED = "2026-01-01T00:00:00Z CRITICAL forged line"
HOSTILE = f"did:key:x\x1b]0;pwned\x07\n{FORGED}\r\x1b[2J\u202etxt\x9b31m\x7f"
PASSPHRASE = "correct horse battery staple"


def summary(**changes: Any) -> dict[str, Any]:
    """An ``import_summary`` of the contract's shape."""
    answer: dict[str, Any] = {
        "object": "import_summary",
        "dry_run": False,
        "source_did": SOURCE_DID,
        "bundle_sha256": "ab" * 32,
        "signature": "valid",
        "records_inspected": 247,
        "records_inserted": 247,
        "records_deduplicated": 0,
        "records_skipped": 0,
        "records_failed": 0,
        "refusals_by_reason": {},
        "threads": 18,
        "federation_pairs": 1,
        "sync_pairs": 0,
        "consent_grants": 3,
        "namespaces": 2,
        "tokens": 0,
        "identity": "adopted",
        "identity_note": "private key matches incoming bundle",
        "instance_did": SOURCE_DID,
    }
    answer.update(changes)
    return answer


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("portability-cli") / "home"
    initialise(Home.resolve(home))
    return base_env(home)


def spl(env: dict[str, str], *args: str) -> Result:
    return run_spl(*args, env=env)


def answering(status: int, payload: Any, content_type: str = "application/json") -> FakeDaemon:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return FakeDaemon(status=status, body=body, content_type=content_type)


def assert_inert(text: str) -> None:
    rows = text.split("\n")
    assert rows[-1] == "", repr(text[-80:])
    for row in rows[:-1]:
        assert row.isprintable(), repr(row)
        assert not row.startswith(FORGED), text


# -- options and help ----------------------------------------------------------------------------------------------


def test_every_help_has_an_example(env: dict[str, str]) -> None:
    for command in ("export", "import"):
        text = spl(env, command, "--help").ok().out
        assert "Example: " in text and f"spl {command} " in text.split("Example:", 1)[1], text
    listed = spl(env, "--help").ok().out
    assert "│ export " in listed and "│ import " in listed


def test_option_errors(env: dict[str, str], tmp_path: Path) -> None:
    missing = spl(env, "export")
    assert missing.code == 2 and "--out" in missing.err
    assert spl(env, "import").code == 2
    refused = one_error_line(spl(env, "export", "--offline", "--url", "http://127.0.0.1:1", "--out", "x"))
    assert "--offline reads this home directly" in refused
    assert spl(env, "import", "x", "-o", "xml").code == 2  # -o offers text, json, yaml and wide
    folder = one_error_line(spl(env, "export", "--out", str(tmp_path), "--url", "http://127.0.0.1:1"))
    assert "is a folder" in folder
    nowhere = one_error_line(spl(env, "export", "--out", str(tmp_path / "no" / "b.tar.zst"), "--url", "http://x:1"))
    assert "does not exist; create it first" in nowhere
    absent = one_error_line(spl(env, "import", str(tmp_path / "absent.tar.zst"), "--url", "http://127.0.0.1:1"))
    assert "cannot read" in absent and "No such file" in absent


def test_offline_export_is_refused_while_the_home_is_locked(env: dict[str, str], tmp_path: Path) -> None:
    """A running daemon holds the run lock; so does this test process here, which is as alive as a daemon."""
    lock = DaemonLock(Home.resolve(Path(env["SYNCROPEL_HOME"])))
    lock.acquire()
    try:
        out = tmp_path / "offline.tar.zst"
        refused = one_error_line(spl(env, "export", "--offline", "--out", str(out)))
    finally:
        lock.release()
    assert "an spl daemon already runs for" in refused and "without --offline" in refused
    assert list(tmp_path.iterdir()) == []


# -- passphrase files ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"pw\n", b"pw"),
        (b"pw\r\n", b"pw"),
        (b"pw", b"pw"),
        (b" two words \n", b" two words "),
        ("pässwörd\n".encode(), "pässwörd".encode()),
    ],
)
def test_passphrase_file_loses_one_trailing_newline(tmp_path: Path, content: bytes, expected: bytes) -> None:
    path = tmp_path / "pass"
    path.write_bytes(content)
    assert read_passphrase(path) == expected


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "is empty"),
        (b"\n", "is empty"),
        (b"secret\n\n", "control character or a second line"),
        (b"secret\nmore\n", "control character or a second line"),
        (b"sec\x00ret", "control character"),
        (b"secret\xff", "not UTF-8"),
        (b"s" * 5000, "over 4096 bytes"),
    ],
)
def test_bad_passphrase_files_are_refused_without_echo(tmp_path: Path, content: bytes, why: str) -> None:
    path = tmp_path / "pass"
    path.write_bytes(content)
    with pytest.raises(CliError) as refused:
        read_passphrase(path)
    assert why in str(refused.value) and "--passphrase-file" in str(refused.value)
    assert "secret" not in str(refused.value) and "sss" not in str(refused.value)


def test_unreadable_passphrase_file(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="cannot read"):
        read_passphrase(tmp_path / "missing")


# -- the output file -----------------------------------------------------------------------------------------------


def test_output_is_private_from_its_first_byte_and_named_only_at_the_end(tmp_path: Path) -> None:
    out = tmp_path / "bundle.tar.zst"
    with private_output(out) as (file, temporary):
        assert temporary.parent == tmp_path and temporary != out
        assert stat.S_IMODE(temporary.stat().st_mode) == 0o600  # before any byte is written
        file.write(b"bundle bytes")
        assert not out.exists()
    assert out.read_bytes() == b"bundle bytes"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert list(tmp_path.iterdir()) == [out]


def test_a_failed_export_leaves_no_file_and_the_old_one_untouched(tmp_path: Path) -> None:
    fresh, kept = tmp_path / "fresh.tar.zst", tmp_path / "kept.tar.zst"
    kept.write_bytes(b"yesterday's bundle")
    for out in (fresh, kept):
        with pytest.raises(RuntimeError), private_output(out) as (file, _):
            file.write(b"half a bundle")
            raise RuntimeError("the connection dropped")
    assert not fresh.exists() and kept.read_bytes() == b"yesterday's bundle"
    assert sorted(tmp_path.iterdir()) == [kept]


def test_a_download_that_is_no_bundle_leaves_no_file(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "b.tar.zst"
    with answering(200, b"\x28\xb5\x2f\xfd not really zstd", "application/zstd") as fake:
        refused = one_error_line(spl(env, "export", "--out", str(out), "--url", fake.url))
    assert "BUNDLE_MALFORMED: the exported bundle does not verify" in refused and "nothing was written" in refused
    assert list(tmp_path.iterdir()) == []
    (seen,) = fake.seen
    assert (seen.method, seen.path) == ("POST", "/v1/portability/export")
    assert json.loads(seen.body) == {"identity": True, "carry_tokens": False, "compress": True}


def test_export_sends_its_options_and_the_passphrase_only_in_the_body(env: dict[str, str], tmp_path: Path) -> None:
    secret = tmp_path / "pass"
    secret.write_text(PASSPHRASE + "\n")
    out = tmp_path / "b.tar"
    error = {"object": "error", "type": "invalid_request_error", "code": "IMPORT_IN_PROGRESS", "message": "busy"}
    with answering(409, error) as fake:
        args = ("export", "--out", str(out), "--no-identity", "--carry-tokens", "--uncompressed")
        refused = one_error_line(spl(env, *args, "--passphrase-file", str(secret), "--url", fake.url))
    assert refused == "error: IMPORT_IN_PROGRESS: busy"
    (seen,) = fake.seen
    assert PASSPHRASE not in seen.path and urlsplit(seen.path).query == ""
    body = json.loads(seen.body)
    assert body == {"identity": False, "carry_tokens": True, "compress": False, "passphrase": PASSPHRASE}
    assert list(tmp_path.iterdir()) == [secret]


def test_an_answer_that_is_not_a_bundle_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    with answering(200, {"hello": "world"}) as fake:
        refused = one_error_line(spl(env, "export", "--out", str(tmp_path / "b"), "--url", fake.url))
    assert "with application/json, not what an spl daemon sends" in refused
    assert list(tmp_path.iterdir()) == []


# -- spl import ----------------------------------------------------------------------------------------------------


SEED_IMPORT = """\
✓ Bundle verified
  signature:     valid
  source DID:    {did}

→ Importing...
  records inserted:    247
  records deduplicated: 0
  threads:             18
  federation pairs:    1
  identity:            adopted (private key matches incoming bundle)

✓ Import complete
"""


def bundle_file(tmp_path: Path, data: bytes = b"\x28\xb5\x2f\xfd" + bytes(range(256)) * 1200) -> Path:
    path = tmp_path / "migration.tar.zst"
    path.write_bytes(data)
    return path


def test_import_streams_the_file_and_prints_the_seed_lines(env: dict[str, str], tmp_path: Path) -> None:
    bundle = bundle_file(tmp_path)
    with answering(200, summary()) as fake:
        result = spl(env, "import", str(bundle), "--url", fake.url).ok()
    assert result.out == SEED_IMPORT.format(did=SOURCE_DID)
    assert result.err == ""  # no progress line: stderr is not a terminal
    (seen,) = fake.seen
    assert (seen.method, urlsplit(seen.path).path, urlsplit(seen.path).query) == ("POST", "/v1/portability/import", "")
    assert seen.headers["content-type"] == "application/zstd"
    assert seen.headers["content-length"] == str(bundle.stat().st_size)
    assert seen.body == bundle.read_bytes()
    assert PASSPHRASE_HEADER.lower() not in seen.headers


def test_import_options_and_passphrase_header(env: dict[str, str], tmp_path: Path) -> None:
    bundle = bundle_file(tmp_path, b"plain tar bytes" * 100)
    secret = tmp_path / "pass"
    secret.write_text(PASSPHRASE + "\n")
    answer = summary(dry_run=True, records_inserted=240, records_skipped=4, records_failed=3)
    answer["refusals_by_reason"] = {"INVALID_RECORD": 3, "DUPLICATE_CLOCK": 4}
    with answering(200, answer) as fake:
        args = ("import", str(bundle), "--dry-run", "--force-overwrite", "--passphrase-file", str(secret))
        result = spl(env, *args, "--url", fake.url).ok()
    (seen,) = fake.seen
    assert parse_qs(urlsplit(seen.path).query) == {"dry_run": ["true"], "force_overwrite": ["true"]}
    assert PASSPHRASE not in seen.path and seen.headers[PASSPHRASE_HEADER.lower()] == PASSPHRASE
    assert seen.headers["content-type"] == "application/x-tar"
    assert PASSPHRASE not in result.out + result.err
    lines = result.out.splitlines()
    assert lines[4] == "→ Checking (dry run: nothing is written)..."
    assert "  records skipped:     4" in lines and "  records failed:      3" in lines
    assert "  refused:             DUPLICATE_CLOCK 4, INVALID_RECORD 3" in lines
    assert lines[-1] == "✓ Dry run complete: nothing was written; run again without --dry-run to import"


def test_import_json_is_the_summary_as_sent(env: dict[str, str], tmp_path: Path) -> None:
    with answering(200, summary(extra_field=[1, 2])) as fake:
        printed = spl(env, "import", str(bundle_file(tmp_path)), "-o", "json", "--url", fake.url).ok().json()
    assert printed == summary(extra_field=[1, 2])


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (409, "IMPORT_REFUSED", "import refused: local store has 5 records; pass --force-overwrite to import anyway"),
        (400, "SIGNATURE_INVALID", "signature verification failed: wrong passphrase"),
        (400, "BUNDLE_MALFORMED", "bundle malformed: records/74/x.json: hash mismatch"),
        (413, "PAYLOAD_TOO_LARGE", "the bundle is over the import limit"),
    ],
)
def test_import_refusals_are_one_line(
    env: dict[str, str], tmp_path: Path, status: int, code: str, message: str
) -> None:
    error = {"object": "error", "type": "invalid_request_error", "code": code, "message": message}
    with answering(status, error) as fake:
        refused = one_error_line(spl(env, "import", str(bundle_file(tmp_path)), "--url", fake.url))
    assert refused == f"error: {code}: {message}"


def test_import_answers_that_are_not_a_summary(env: dict[str, str], tmp_path: Path) -> None:
    bundle = str(bundle_file(tmp_path))
    with answering(200, b"<html>hi</html>", "text/html") as fake:
        assert "not what an spl daemon sends" in one_error_line(spl(env, "import", bundle, "--url", fake.url))
    with answering(200, {"object": "import_summary", "dry_run": "no"}) as fake:
        assert "is not an spl import summary" in one_error_line(spl(env, "import", bundle, "--url", fake.url))
    with answering(200, b"{" + b" " * (2 * 1024 * 1024) + b"}") as fake:
        assert "over 1048576 bytes" in one_error_line(spl(env, "import", bundle, "--url", fake.url))


def test_what_a_bundle_says_reaches_the_terminal_inert(env: dict[str, str], tmp_path: Path) -> None:
    answer = summary(source_did=HOSTILE, identity=HOSTILE, identity_note=HOSTILE, signature=HOSTILE)
    answer["refusals_by_reason"] = {HOSTILE: 1}
    with answering(200, answer) as fake:
        result = spl(env, "import", str(bundle_file(tmp_path)), "--url", fake.url).ok()
    assert_inert(result.out)
    assert "\\x1b]0;pwned\\x07" in result.out


# -- the progress line ---------------------------------------------------------------------------------------------


def test_progress_is_drawn_only_on_a_terminal_and_for_a_wait(
    capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    clock = iter([0.0, 1.0, 2.0, 10.0, 10.1, 10.2, 20.0, 21.0])
    monkeypatch.setattr("spl.cli.portability.time.monotonic", lambda: next(clock))
    shown = Progress("uploading", 4_000_000, enabled=True)  # starts at 0
    shown.advance(1_500_000)  # 1 s later: drawn
    shown.finish()  # 2 s: the final figures, the line ended
    quick = Progress("downloading", enabled=True)  # 10 s
    quick.advance(10)  # 0.1 s later: not worth a line
    quick.finish()
    hidden = Progress("downloading", enabled=False)  # a pipe
    hidden.advance(10)
    hidden.finish()
    err = capsys.readouterr().err.replace("\x1b[K", "")  # click drops the erase-line code off a terminal
    assert err == "\ruploading 1.5 MB of 4.0 MB (1.5 MB/s)\ruploading 1.5 MB of 4.0 MB (750.0 kB/s)\n"
