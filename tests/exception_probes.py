"""Exceptions for the type probes of test_exception_types.py, kept out of a test module so that pytest does not
rewrite the bare ``assert`` below (a rewritten one would carry pytest's explanation as its message)."""

from __future__ import annotations


class UserError(Exception):
    """A user's own exception: another constructor signature and its own ``__str__``."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(code, detail)
        self.code = code

    def __str__(self) -> str:
        return f"user error {self.code}: {self.args[1]}"


KINDS = [AssertionError, AttributeError, ZeroDivisionError, KeyError, UserError]


def raise_kind(kind: type[BaseException], zero: float = 0.0) -> None:
    """Raise ``kind`` the way code inside a block would."""
    if kind is AssertionError:
        assert zero == 1.0
    if kind is AttributeError:
        zero.no_such_attribute  # noqa: B018
    if kind is ZeroDivisionError:
        1 / int(zero)  # noqa: B018
    if kind is KeyError:
        {}["missing"]  # noqa: B018
    raise UserError(7, "boom")
