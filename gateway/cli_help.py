"""Typer command and group classes whose help text is translated when it is shown.

Help strings are English msgids marked with `N_()`. Click stores them when the command is
registered, before the language is known, so these classes translate them when shown. The
command's own help is a property, which the parent group's command list reads too. Option help
is swapped for its translation while the help page is formatted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from typer.core import TyperCommand, TyperGroup

from gateway.i18n import _, activate, resolve_language


class _TranslatedHelp:
    _help_msgid: str | None = None

    @property
    def help(self) -> str | None:
        return _(self._help_msgid) if self._help_msgid else self._help_msgid

    @help.setter
    def help(self, value: str | None) -> None:
        self._help_msgid = value


def _activate_for_help(ctx: Any) -> None:
    # `--lang` before `--help` has already activated its language through its eager callback.
    if "gateway.lang" not in ctx.meta:
        activate(resolve_language(None))


@contextlib.contextmanager
def _translated_params(command: TyperCommand | TyperGroup) -> Iterator[None]:
    # Typer's options and arguments both have `help`, unlike click's base Parameter.
    params: list[Any] = list(command.params)
    originals = [(param, getattr(param, "help", None)) for param in params]
    try:
        for param, msgid in originals:
            if msgid:
                param.help = _(msgid)
        yield
    finally:
        for param, msgid in originals:
            if msgid:
                param.help = msgid


class TranslatedCommand(_TranslatedHelp, TyperCommand):
    def format_help(self, ctx: Any, formatter: Any) -> None:
        _activate_for_help(ctx)
        with _translated_params(self):
            super().format_help(ctx, formatter)


class TranslatedGroup(_TranslatedHelp, TyperGroup):
    def format_help(self, ctx: Any, formatter: Any) -> None:
        _activate_for_help(ctx)
        with _translated_params(self):
            super().format_help(ctx, formatter)
