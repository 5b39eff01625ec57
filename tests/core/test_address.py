"""parse_address's fast path for a bare ASCII address (one regex: the common line of a million-line list)
answers exactly as its general path does, on random input built from the characters that matter."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.core.address import Address, _parse_general, parse_address

# Letters, digits, every atext symbol, the separators and the characters that make a line not bare.
ALPHABET = "aZ09.-_+!#$%&'*/=?^`{|}~@ <>\"\\\t\r\x00éø"


def _same(a: Address | None, b: Address | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a.name, a.addr, a.ascii_addr, a.key) == (b.name, b.addr, b.ascii_addr, b.key)


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=40))
def test_the_fast_path_agrees_with_the_general_one_on_random_lines(raw: str) -> None:
    assert _same(parse_address(raw), _parse_general(raw))


@settings(max_examples=1000, deadline=None)
@given(
    st.from_regex(r"[a-z0-9.+-]{1,70}@[a-z0-9-]{1,70}(\.[a-z]{1,30}){1,3}", fullmatch=True),
    st.sampled_from(["", " ", "  "]),
)
def test_the_fast_path_agrees_on_addresses_near_the_length_limits(addr: str, pad: str) -> None:
    raw = f"{pad}{addr}{pad}"
    assert _same(parse_address(raw), _parse_general(raw))


def test_known_lines() -> None:
    assert parse_address("  Ada@Example.org ") == Address("", "Ada@Example.org")
    assert parse_address("ada@example.org").key == "ada@example.org"  # type: ignore[union-attr]
    assert parse_address("a..b@example.org") is None
    assert parse_address("ada@example") is None
    assert parse_address("\tada@example.org") is None  # a control character: never a mailbox
    assert parse_address(("x" * 65) + "@example.org") is None
    assert parse_address("Ada <ada@example.org>") == Address("Ada", "ada@example.org")
