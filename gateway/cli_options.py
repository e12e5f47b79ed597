"""Options shared by every command, kept light so that `cabinet-gateway run` loads no screens."""

from __future__ import annotations

from typing import Annotated

import typer

from gateway.i18n import N_, Language, activate


def _lang_callback(ctx: typer.Context, value: Language | None) -> Language | None:
    # Eager, so that `--lang zh-CN --help` prints the help in Chinese.
    if value is not None:
        ctx.meta["gateway.lang"] = value
        activate(value)
    return value


LangOption = Annotated[
    Language | None,
    typer.Option(
        "--lang",
        is_eager=True,
        callback=_lang_callback,
        help=N_("Language of the output: zh-CN or en."),
    ),
]
