"""Options, language choice, client, errors and output shared by the diagnostics commands."""

from __future__ import annotations

import contextlib
import json
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import BaseModel
from rich.console import Console, RenderableType
from rich.text import Text

from gateway.api import ApiError
from gateway.cli_diag.names import API_ERRORS
from gateway.control import (
    DEFAULT_SOCKET_PATH,
    ControlAccessDeniedError,
    ControlClient,
    ControlError,
    ControlProtocolError,
    ControlTimeoutError,
    DaemonNotRunningError,
)
from gateway.i18n import N_, Language, _, activate, resolve_language

DEFAULT_CONFIG_PATH = Path("/etc/cabinet-gateway/gateway.toml")
SOCKET_ENV = "CABINET_GATEWAY_SOCKET"
CONFIG_ENV = "CABINET_GATEWAY_CONFIG"

EXIT_FAILED = 1  # the daemon reported an error, a self-test failed, an eject did not succeed
EXIT_USAGE = 2  # same code click uses for usage errors
EXIT_NOT_RUNNING = 3  # no daemon, or no permission on its socket


JsonOption = Annotated[
    bool, typer.Option("--json", help=N_("Print the reply as JSON for scripts and support."))
]
SocketOption = Annotated[
    Path | None,
    typer.Option(
        "--socket",
        envvar=SOCKET_ENV,
        help=N_("Path of the daemon's control socket."),
        show_default=False,
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar=CONFIG_ENV,
        help=N_("Gateway config file, read for the language and the socket path."),
        show_default=False,
    ),
]


def _config_path(option: Path | None) -> Path | None:
    if option is not None:
        return option
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None


def _socket_from_config(config_path: Path | None) -> Path | None:
    """Return `[control] socket` from the config file, if the file sets it."""
    if config_path is None:
        return None
    try:
        with config_path.open("rb") as file:
            control = tomllib.load(file).get("control")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    if isinstance(control, dict) and isinstance(control.get("socket"), str):
        return Path(control["socket"])
    return None


@dataclass
class Session:
    """One command's output settings and its client of the control socket."""

    json: bool
    client: ControlClient
    out: Console
    err: Console

    def show(self, renderable: RenderableType) -> None:
        self.out.print(renderable)

    def print_json(self, value: BaseModel | Sequence[BaseModel] | dict[str, Any]) -> None:
        self.out.print_json(json.dumps(_jsonable(value), ensure_ascii=False), indent=2)

    def print_json_line(self, value: BaseModel) -> None:
        # One object per line (JSON Lines), unstyled, so that scripts can read a follow stream.
        line = json.dumps(_jsonable(value), ensure_ascii=False, separators=(",", ":"))
        self.out.out(line, highlight=False)

    def fail(
        self,
        code: str,
        text: str,
        detail: str = "",
        exit_code: int = EXIT_FAILED,
        *,
        show_detail: bool = True,
    ) -> NoReturn:
        """Report an error and exit with `exit_code`.

        People get the translated `text` on stderr, followed by the English `detail` when
        `show_detail` is set. `--json` prints the code and the detail (or the text) on stdout.
        """
        if self.json:
            self.print_json({"error": {"code": code, "message": detail or text}})
        else:
            self.err.print(Text(_("Error: {message}", message=text), style="bold red"))
            if detail and show_detail:
                self.err.print(Text(f"  {detail}", style="dim"))
        raise typer.Exit(exit_code)


def _jsonable(value: BaseModel | Sequence[BaseModel] | dict[str, Any]) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, Sequence):
        return [item.model_dump(mode="json", by_alias=True) for item in value]
    return value


def open_session(
    json_output: bool, socket: Path | None, lang: Language | None, config: Path | None
) -> Session:
    """Choose the language and the socket path, and return the session for one command."""
    config_path = _config_path(config)
    activate(resolve_language(lang, config_path))
    path = socket or _socket_from_config(config_path) or DEFAULT_SOCKET_PATH
    return Session(
        json=json_output,
        client=ControlClient(path),
        # Markup is off because cells contain daemon data ("[/]" in a reason must print as is).
        out=Console(highlight=False, markup=False),
        err=Console(stderr=True, highlight=False, markup=False),
    )


@contextlib.contextmanager
def reporting_errors(session: Session) -> Iterator[None]:
    """Turn control socket and daemon errors into a translated message and an exit code."""
    try:
        yield
    except DaemonNotRunningError as error:
        if error.reason == "no_socket":
            text = _("The gateway daemon is not running (no socket at {path}).", path=error.path)
        else:
            text = _(
                "The gateway daemon is not running (connection refused at {path}).",
                path=error.path,
            )
        hint = _("Check it with: systemctl status cabinet-gateway")
        session.fail(
            "daemon_not_running", f"{text} {hint}", str(error), EXIT_NOT_RUNNING, show_detail=False
        )
    except ControlAccessDeniedError as error:
        text = _(
            "Permission denied on the control socket {path}. Run the command with sudo, "
            "or as a member of the socket's group.",
            path=error.path,
        )
        session.fail("access_denied", text, str(error), EXIT_NOT_RUNNING, show_detail=False)
    except ControlTimeoutError as error:
        text = _(
            "The daemon did not reply within {seconds} s. It may be busy: retry, and if it "
            "keeps happening collect a support bundle.",
            seconds=format(error.timeout_s, "g"),
        )
        session.fail("timeout", text, str(error))
    except ControlProtocolError as error:
        session.fail("protocol_error", _("Unexpected reply from the daemon."), str(error))
    except ControlError as error:
        session.fail("control_error", _("Cannot talk to the daemon."), str(error))
    except ApiError as error:
        text = API_ERRORS.get(error.code, N_("The daemon reported an error."))
        session.fail(error.code.value, _(text), error.message)
