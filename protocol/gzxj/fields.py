"""Field codecs that GZXJ layouts are declared from: one value to one text token and back."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from protocol.gzxj.constants import MAX_TOKEN, NO_BANK
from protocol.gzxj.errors import PayloadError

_DIGITS = re.compile(r"[0-9]{1,19}")
_TOKEN = re.compile(rf"[0-9A-Za-z._\-]{{1,{MAX_TOKEN}}}")


class FieldCodec:
    def format(self, value: Any) -> str:
        raise NotImplementedError

    def parse(self, token: str) -> Any:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Int(FieldCodec):
    """Unsigned decimal integer within [minimum, maximum], optionally converted to an enum."""

    minimum: int
    maximum: int
    convert: Callable[[int], Any] = int

    def format(self, value: Any) -> str:
        number = int(value)
        if not self.minimum <= number <= self.maximum:
            raise PayloadError(f"{number} is outside {self.minimum}..{self.maximum}")
        return str(number)

    def parse(self, token: str) -> Any:
        if not _DIGITS.fullmatch(token):
            raise PayloadError(f"{token!r} is not a decimal number")
        number = int(token)
        if not self.minimum <= number <= self.maximum:
            raise PayloadError(f"{number} is outside {self.minimum}..{self.maximum}")
        try:
            return self.convert(number)
        except ValueError as exc:
            raise PayloadError(f"{number} is not a known value") from exc


@dataclass(frozen=True, slots=True)
class Flag(FieldCodec):
    """ "1" for true, "0" for false."""

    def format(self, value: Any) -> str:
        return "1" if value else "0"

    def parse(self, token: str) -> Any:
        if token not in ("0", "1"):
            raise PayloadError(f"{token!r} is not 0 or 1")
        return token == "1"


@dataclass(frozen=True, slots=True)
class Token(FieldCodec):
    """An id or version text: letters, digits, dot, dash and underscore."""

    def format(self, value: Any) -> str:
        return str(self.parse(str(value)))

    def parse(self, token: str) -> Any:
        if not _TOKEN.fullmatch(token):
            raise PayloadError(f"{token!r} is not 1 to {MAX_TOKEN} letters, digits or ._-")
        return token


@dataclass(frozen=True, slots=True)
class BankId(FieldCodec):
    """A bank id, or None written as NULL."""

    def format(self, value: Any) -> str:
        if value is None:
            return NO_BANK
        if value == NO_BANK:
            raise PayloadError(f"{NO_BANK} is reserved for a slot without a bank id")
        return Token().format(value)

    def parse(self, token: str) -> Any:
        return None if token == NO_BANK else Token().parse(token)


@dataclass(frozen=True, slots=True)
class Records(FieldCodec):
    """Every remaining field, each one record of `item` (a class with format and parse)."""

    item: type[Any]
    max_count: int

    def format(self, value: Any) -> str:
        raise TypeError("Records spans several fields; use format_all")

    def parse(self, token: str) -> Any:
        raise TypeError("Records spans several fields; use parse_all")

    def format_all(self, items: Any) -> list[str]:
        records = tuple(items)
        if len(records) > self.max_count:
            raise PayloadError(f"{len(records)} records exceed {self.max_count}")
        return [record.format() for record in records]

    def parse_all(self, tokens: list[str]) -> tuple[Any, ...]:
        if len(tokens) > self.max_count:
            raise PayloadError(f"{len(tokens)} records exceed {self.max_count}")
        return tuple(self.item.parse(token) for token in tokens)
