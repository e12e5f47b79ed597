"""Message catalogs for the technicians' CLI: English msgids, Simplified Chinese translations.

Translations live in `gateway/locale/<locale>/LC_MESSAGES/gateway.po` and are read at run time
with Babel's PO reader, so no compiled .mo file is kept in the repository. Mark a text with
`_()` where it is shown, or with `N_()` where it is defined before the language is known (help
text, tables of state names) and pass it through `_()` when shown. Fill `{name}` fields through
keyword arguments of `_()` so that a translation can move them.

To add a string, mark it, then add its msgid and Chinese msgstr to the .po file, by hand or with
`pybabel extract -k N_ -o /tmp/gateway.pot gateway` followed by
`pybabel update -i /tmp/gateway.pot -d gateway/locale -D gateway`. The CLI tests fail for a
msgid without a translation, or with different `{name}` fields.
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path

from babel.messages.pofile import read_po

logger = logging.getLogger(__name__)

LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "gateway"
LANG_ENV = "CABINET_GATEWAY_LANG"


class Language(StrEnum):
    EN = "en"
    ZH_CN = "zh-CN"


# POSIX order of the locale variables: the first one set and not empty wins.
_LOCALE_ENV = ("LC_ALL", "LC_MESSAGES", "LANG")
_CATALOG_DIRS = {Language.ZH_CN: "zh_CN"}


@dataclass
class _ActiveLanguage:
    # None until a command activates one. Text shown before that (the top-level command list)
    # follows CABINET_GATEWAY_LANG and the locale.
    language: Language | None = None


_ACTIVE = _ActiveLanguage()


def parse_language(value: str | None) -> Language | None:
    """Return the language a tag or locale name selects ("zh_CN.UTF-8" is zh-CN), or None."""
    if not value:
        return None
    tag = value.strip().split(".")[0].split("@")[0].replace("_", "-").lower()
    if tag.startswith("zh"):
        return Language.ZH_CN
    if tag == "en" or tag.startswith("en-"):
        return Language.EN
    return None


def config_language(config_path: Path | None) -> Language | None:
    """Return the `[cli] lang` setting of the gateway config file, or None if it has none.

    A config file that is missing or invalid is ignored here: the CLI must still speak to a
    technician whose config is broken, and `config check` reports the problem.
    """
    if config_path is None:
        return None
    try:
        with config_path.open("rb") as file:
            config = tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError) as error:
        logger.debug("cannot read the language from %s: %s", config_path, error)
        return None
    cli = config.get("cli")
    if not isinstance(cli, dict):
        return None
    value = cli.get("lang")
    return parse_language(value) if isinstance(value, str) else None


def resolve_language(
    option: str | None,
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Language:
    """Choose the language: option, then CABINET_GATEWAY_LANG, then `[cli] lang`, then locale.

    Values that name no supported language are skipped, and English is the default.
    """
    env = os.environ if environ is None else environ
    for candidate in (parse_language(option), parse_language(env.get(LANG_ENV))):
        if candidate is not None:
            return candidate
    from_config = config_language(config_path)
    if from_config is not None:
        return from_config
    for name in _LOCALE_ENV:
        value = env.get(name)
        if value:
            return parse_language(value) or Language.EN
    return Language.EN


@cache
def catalog(language: Language) -> Mapping[str, str]:
    """Return the msgid to translation map of `language`; English has an empty map."""
    directory = _CATALOG_DIRS.get(language)
    if directory is None:
        return {}
    path = LOCALE_DIR / directory / "LC_MESSAGES" / f"{DOMAIN}.po"
    with path.open("rb") as file:
        parsed = read_po(file, locale=directory)
    translations: dict[str, str] = {}
    for message in parsed:
        msgid, msgstr = message.id, message.string
        # Plural entries (tuples) are not used by this catalog.
        if not isinstance(msgid, str) or not isinstance(msgstr, str) or message.fuzzy:
            continue
        if msgid and msgstr:
            translations[msgid] = msgstr
    return translations


def activate(language: Language) -> None:
    """Make `_()` translate into `language` for the rest of this process or until changed."""
    _ACTIVE.language = language


def active() -> Language:
    if _ACTIVE.language is None:
        _ACTIVE.language = resolve_language(None)
    return _ACTIVE.language


def _(message: str, /, **values: object) -> str:
    """Translate `message` into the active language and fill its `{name}` fields."""
    text = catalog(active()).get(message, message)
    return text.format(**values) if values else text


def N_(message: str, /) -> str:
    """Mark `message` for translation without translating it yet."""
    return message
