"""`banger web` login codes: signed with the daemon's token, short-lived; the daemon makes them single-use."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from banger_core.common.weblogin import CODE_LIFETIME, CodeRefused, check_login_code, make_login_code

pytestmark = pytest.mark.unit
TOKEN = "the-daemons-token"
NOW = 1_800_000_000.0


def test_a_fresh_code_is_accepted_until_it_expires() -> None:
    code = make_login_code(TOKEN, now=NOW)
    nonce, expires = check_login_code(TOKEN, code, NOW)
    assert expires == NOW + CODE_LIFETIME and nonce and code.split(".")[1] == nonce
    assert check_login_code(TOKEN, code, NOW + CODE_LIFETIME) == (nonce, expires)
    with pytest.raises(CodeRefused, match=r"^this login link expired: run `banger web` for a new one$"):
        check_login_code(TOKEN, code, NOW + CODE_LIFETIME + 1)


def test_codes_differ_each_time() -> None:
    assert make_login_code(TOKEN, now=NOW) != make_login_code(TOKEN, now=NOW)


@pytest.mark.parametrize(
    ("mangle", "why"),
    [
        (lambda code: code.replace(code.split(".")[0], str(int(NOW) + 3600), 1), "not from this daemon"),
        (lambda code: code[:-1] + ("0" if code[-1] != "0" else "1"), "not from this daemon"),
        (lambda code: make_login_code("another token", now=NOW), "not from this daemon"),
        (lambda code: "", "not a login link"),
        (lambda code: "x.y.z", "not a login link"),
        (lambda code: code.split(".", 1)[1], "not a login link"),
    ],
)
def test_forged_or_mangled_codes_are_refused(mangle: Callable[[str], str], why: str) -> None:
    with pytest.raises(CodeRefused, match=why):
        check_login_code(TOKEN, mangle(make_login_code(TOKEN, now=NOW)), NOW)
