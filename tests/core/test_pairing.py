"""The pure rules of device pairing (``spl.core.pairing``): codes, their parser, expiry, single use, the limiter."""

from __future__ import annotations

import math
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spl.core.errors import Conflict, InvalidRequest, NotFound, SplError
from spl.core.pairing import (
    ALPHABET,
    CODE_BITS,
    CODE_LENGTH,
    MAX_PAIRINGS,
    MAX_PENDING,
    Pairing,
    PairingBook,
    PairingRateLimited,
    RedeemLimiter,
    TokenBucket,
    code_hash,
    deep_link,
    format_code,
    new_code,
    parse_code,
    validate_device_name,
    validate_link_url,
    validate_pairing_scopes,
    validate_ttl,
)

codes = st.text(alphabet=ALPHABET, min_size=CODE_LENGTH, max_size=CODE_LENGTH)


# -- the code and its parser ----------------------------------------------------------------


def test_a_new_code_has_80_bits_in_the_alphabet() -> None:
    made = {new_code() for _ in range(200)}
    assert len(made) == 200
    assert all(len(code) == CODE_LENGTH and set(code) <= set(ALPHABET) for code in made)
    assert CODE_BITS == 80 and len(ALPHABET) == 32


@given(codes)
def test_a_formatted_code_parses_back(code: str) -> None:
    shown = format_code(code)
    assert shown.count("-") == 3 and parse_code(shown) == code
    assert parse_code(shown.lower()) == code
    assert parse_code(" ".join(shown.split("-"))) == code


@given(codes, st.lists(st.sampled_from(["-", " "]), max_size=8), st.randoms(use_true_random=False))
def test_separators_anywhere_and_case_do_not_matter(code: str, separators: list[str], random: object) -> None:
    text = list(code)
    for separator in separators:
        text.insert(random.randrange(len(text) + 1), separator)  # type: ignore[attr-defined]
    typed = "".join(char.lower() if index % 2 else char for index, char in enumerate(text))
    assert parse_code(typed) == code


@given(codes)
def test_lookalikes_read_as_digits(code: str) -> None:
    typed = code.replace("0", "O").replace("1", "I")
    assert parse_code(typed) == code
    assert parse_code(code.replace("1", "l")) == code


@given(st.text(max_size=100))
def test_the_parser_answers_a_canonical_code_or_none(text: str) -> None:
    parsed = parse_code(text)
    assert parsed is None or (len(parsed) == CODE_LENGTH and set(parsed) <= set(ALPHABET))
    if parsed is not None:
        assert parse_code(parsed) == parsed  # canonical: parsing again changes nothing


@pytest.mark.parametrize(
    "text",
    [
        None,
        12345,
        "",
        "ABCD-EFGH-JKMN-PQR",  # fifteen
        "ABCD-EFGH-JKMN-PQRST",  # seventeen
        "ABCD-EFGH-JKMN-PQRU",  # U is not in the alphabet
        "ABCD_EFGH_JKMN_PQRS",  # underscores are not separators
        "ABCD-EFGH-JKMN-PQRÉ",
        "ABCD-EFGH-JKMN-PQR\u0661",  # an Arabic-Indic digit: str.isdigit, not ours
        "-" * 60 + "ABCD",
        "A" * 65,
    ],
)
def test_what_is_not_a_code(text: object) -> None:
    assert parse_code(text) is None


def test_the_hash_is_what_is_kept() -> None:
    code = new_code()
    assert code_hash(code) == code_hash(parse_code(format_code(code).lower()) or "")
    assert code not in code_hash(code) and len(code_hash(code)) == 64


def test_the_deep_link_carries_the_url_encoded_and_the_code() -> None:
    link = deep_link("https://spl.example:9100/a?b=c&d", "ABCDEFGHJKMNPQRS")
    assert link == "syncropel://pair?url=https%3A%2F%2Fspl.example%3A9100%2Fa%3Fb%3Dc%26d&code=ABCD-EFGH-JKMN-PQRS"


# -- what an operator asks for --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["laptop", "iPhone 15", "a", "x" * 64, "alice.laptop-2_b"])
def test_device_names_that_are_fine(name: str) -> None:
    assert validate_device_name(name) == name


@pytest.mark.parametrize("name", ["", " laptop", "laptop ", "x" * 65, "../etc", "a/b", "lap\ntop", "ноут", 7, None])
def test_device_names_that_are_refused(name: object) -> None:
    with pytest.raises(InvalidRequest) as refused:
        validate_device_name(name)
    assert refused.value.code == "INVALID_DEVICE_NAME"


def test_scopes_must_be_known_and_held() -> None:
    assert validate_pairing_scopes(["records:write", "records:read", "records:write"], {"admin"}) == [
        "records:read",
        "records:write",
    ]
    assert validate_pairing_scopes(["records:read"], {"records:read", "records:write"}) == ["records:read"]
    with pytest.raises(InvalidRequest) as beyond:
        validate_pairing_scopes(["admin"], {"records:read", "records:write"})
    assert (beyond.value.code, beyond.value.status) == ("SCOPE_NOT_HELD", 403)
    for wrong in ([], "records:read", [1], ["records:all"], None):
        with pytest.raises(InvalidRequest):
            validate_pairing_scopes(wrong, {"admin"})


def test_ttl_and_url_bounds() -> None:
    assert validate_ttl(1) == 1.0 and validate_ttl(86_400) == 86_400.0
    for wrong in (0, 0.5, 86_401, 10**400, -(10**400), math.inf, -math.inf, math.nan, True, "600", None):
        with pytest.raises(InvalidRequest):
            validate_ttl(wrong)
    assert validate_link_url("http://127.0.0.1:9100") == "http://127.0.0.1:9100"
    for wrong in ("ftp://x", "javascript:alert(1)", "http://", "https://a b", "http://x/\n", "h" * 600, 3, ""):
        with pytest.raises(InvalidRequest):
            validate_link_url(wrong)


# -- the book: expiry, single use, revocation, bounds -----------------------------------------------------


def pairing(device: str, code: str, at: float = 1000.0, ttl: float = 600.0) -> Pairing:
    return Pairing(device, code_hash(code), ("records:read",), "http://127.0.0.1:9100", at, at + ttl)


def test_a_code_is_redeemed_once() -> None:
    code = new_code()
    book = PairingBook().create(pairing("laptop", code), live_token=False)
    book, redeemed = book.redeem(code, 1001.0, "tok1", "pixel")
    assert (redeemed.status(1001.0), redeemed.token_id, redeemed.device_label) == ("redeemed", "tok1", "pixel")
    with pytest.raises(Conflict) as again:
        book.redeem(code, 1002.0, "tok2")
    assert again.value.code == "PAIRING_CODE_USED"
    assert book.get("laptop").token_id == "tok1"


def test_a_code_expires_at_its_time() -> None:
    code = new_code()
    book = PairingBook().create(pairing("laptop", code, ttl=10.0), live_token=False)
    assert book.get("laptop").status(1009.999) == "pending"
    with pytest.raises(SplError) as late:
        book.redeem(code, 1010.0, "tok")
    assert (late.value.code, late.value.status) == ("PAIRING_CODE_EXPIRED", 410)
    book.redeem(code, 1009.0, "tok")  # a moment earlier it worked


def test_wrong_malformed_and_revoked_codes() -> None:
    code = new_code()
    book = PairingBook().create(pairing("laptop", code), live_token=False)
    with pytest.raises(NotFound) as unknown:
        book.redeem(new_code(), 1001.0, "tok")
    assert unknown.value.code == "PAIRING_CODE_UNKNOWN"
    with pytest.raises(InvalidRequest) as malformed:
        book.redeem(None, 1001.0, "tok")
    assert malformed.value.code == "INVALID_PAIRING_CODE"
    revoked_book, revoked = book.revoke("laptop", 1002.0)
    assert revoked.status(1002.0) == "revoked"
    assert revoked_book.revoke("laptop", 1003.0)[1].revoked_at == 1002.0  # the first revocation time stays
    with pytest.raises(SplError) as dead:
        revoked_book.redeem(code, 1003.0, "tok")
    assert (dead.value.code, dead.value.status) == ("PAIRING_REVOKED", 410)
    with pytest.raises(NotFound):
        book.revoke("phone", 1002.0)


def test_a_name_is_free_again_once_its_pairing_is_over() -> None:
    book = PairingBook().create(pairing("laptop", new_code()), live_token=False)
    with pytest.raises(Conflict) as pending:
        book.create(pairing("laptop", new_code(), at=1001.0), live_token=False)
    assert pending.value.code == "PAIRING_EXISTS"
    later = book.create(pairing("laptop", new_code(), at=1600.0), live_token=False)  # the first code expired
    code = new_code()
    redeemed, _ = later.create(pairing("tablet", code, at=1600.0), live_token=False).redeem(code, 1601.0, "tok")
    with pytest.raises(Conflict):
        redeemed.create(pairing("tablet", new_code(), at=1602.0), live_token=True)
    # Its token revoked (``spl token revoke``): the name can be paired again.
    assert (
        redeemed.create(pairing("tablet", new_code(), at=1602.0), live_token=False).get("tablet").status(1602.0)
        == "pending"
    )


def test_the_book_is_bounded() -> None:
    book = PairingBook()
    for index in range(MAX_PENDING):
        book = book.create(pairing(f"d{index}", new_code()), live_token=False)
    with pytest.raises(Conflict) as full:
        book.create(pairing("one-more", new_code()), live_token=False)
    assert full.value.code == "TOO_MANY_PAIRINGS"
    # Later, with every code expired, old finished entries make room for new ones up to MAX_PAIRINGS.
    at = 10_000.0
    for index in range(MAX_PAIRINGS + 10):
        at += 1000.0
        book = book.create(pairing(f"e{index}", new_code(), at=at, ttl=1.0), live_token=False)
    assert len(book.pairings) == MAX_PAIRINGS
    assert "e0" not in book.pairings and f"e{MAX_PAIRINGS + 9}" in book.pairings


# -- the redeem limiter ---------------------------------------------------------------------------------


def test_a_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(capacity=2, rate=0.5, tokens=2, updated=0.0)
    assert bucket.take(0.0) == 0.0 and bucket.take(0.0) == 0.0
    assert bucket.take(0.0) == pytest.approx(2.0)  # one token every two seconds
    assert bucket.take(1.0) == pytest.approx(1.0)
    assert bucket.take(2.0) == 0.0
    bucket.give_back(2.0)
    assert bucket.level(2.0) == pytest.approx(1.0)
    assert bucket.level(100.0) == 2.0  # never above capacity


def test_one_source_is_limited_and_others_are_not() -> None:
    limiter = RedeemLimiter(per_source=(3, 1.0), overall=(100, 10.0))
    for _ in range(3):
        limiter.attempt("10.0.0.1", 0.0)
    with pytest.raises(PairingRateLimited) as limited:
        limiter.attempt("10.0.0.1", 0.0)
    assert limited.value.status == 429 and limited.value.retry_after == 1
    limiter.attempt("10.0.0.2", 0.0)
    limiter.attempt("10.0.0.1", 1.0)  # a second later one more attempt is allowed


def test_the_global_bucket_bounds_many_sources() -> None:
    limiter = RedeemLimiter(per_source=(5, 1.0), overall=(4, 0.5))
    for index in range(4):
        limiter.attempt(f"10.0.0.{index}", 0.0)
    with pytest.raises(PairingRateLimited) as limited:
        limiter.attempt("10.0.0.99", 0.0)
    assert limited.value.retry_after == 2
    assert "this instance" in limited.value.message


def test_successes_are_given_back() -> None:
    limiter = RedeemLimiter(per_source=(1, 0.001), overall=(1, 0.001))
    for _ in range(10):
        limiter.attempt("10.0.0.1", 0.0)
        limiter.succeeded("10.0.0.1", 0.0)
    limiter.attempt("10.0.0.1", 0.0)
    with pytest.raises(PairingRateLimited):
        limiter.attempt("10.0.0.1", 0.0)


def test_the_sources_remembered_are_bounded() -> None:
    limiter = RedeemLimiter(per_source=(2, 1.0), overall=(10_000, 1000.0), max_sources=8)
    for index in range(100):
        limiter.attempt(f"10.0.{index}.1", float(index) / 100)
    assert limiter.sources() <= 8


@given(st.lists(st.tuples(st.sampled_from(string.ascii_lowercase[:4]), st.floats(0, 5)), max_size=60))
def test_no_source_gets_more_than_its_burst_plus_its_refill(attempts: list[tuple[str, float]]) -> None:
    limiter = RedeemLimiter(per_source=(3, 1.0), overall=(1000, 1000.0))
    passed: dict[str, int] = {}
    now = 0.0
    for source, step in attempts:
        now += step
        try:
            limiter.attempt(source, now)
        except PairingRateLimited:
            continue
        passed[source] = passed.get(source, 0) + 1
    for count in passed.values():
        assert count <= 3 + math.floor(now * 1.0) + 1
