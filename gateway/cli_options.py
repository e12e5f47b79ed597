"""Options shared by every command, kept light so that `cabinet-gateway run` loads no screens."""

from __future__ import annotations

from typing import Annotated

import typer

from gateway.i18n import N_, Language, _, activate

# `zh` is accepted as CABINET_GATEWAY_LANG accepts it; the comparison ignores case.
_LANG_VALUES = {"en": Language.EN, "zh-cn": Language.ZH_CN, "zh": Language.ZH_CN}


def _parse_lang(value: str | Language) -> Language:
    if isinstance(value, Language):
        return value
    language = _LANG_VALUES.get(value.strip().lower())
    if language is None:
        raise ValueError(_("invalid language {value!r}. Use en, zh-CN or zh.", value=value))
    return language


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
        parser=_parse_lang,
        metavar="<en|zh-CN>",
        callback=_lang_callback,
        help=N_("Language of the output: zh-CN (or zh) or en."),
    ),
]
