"""The generated AsyncAPI document and JSON Schemas match the models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

from cloud_link import contract
from cloud_link.commands import COMMAND_TYPES, Command
from cloud_link.messages import AnyMessageData

DOCS = Path(__file__).parents[2] / "docs"


def test_docs_match_models() -> None:
    stale = contract.stale_files(DOCS)

    assert stale == [], f"regenerate with: python -m cloud_link.contract --write docs/ ({stale})"


def test_every_message_kind_has_a_channel() -> None:
    kinds = {model.model_fields["kind"].default for model in get_args(AnyMessageData)}
    schemas = contract.json_schemas()
    documented = {
        json.dumps(schema) for name, schema in schemas.items() if name != "command_body.json"
    }

    assert len(contract.CHANNELS) == len({channel.name for channel in contract.CHANNELS})
    for kind in kinds:
        assert any(f'"const": "{kind}"' in text for text in documented), kind


def test_every_command_type_in_body_schema() -> None:
    body = json.dumps(contract.json_schemas()["command_body.json"])
    declared = {model.model_fields["type"].default for model in get_args(get_args(Command)[0])}

    assert declared == set(COMMAND_TYPES)
    for command_type in COMMAND_TYPES:
        assert f'"const": "{command_type}"' in body


def test_asyncapi_references_resolve() -> None:
    document = contract.asyncapi_document()
    files = contract.rendered_files()

    for message in document["components"]["messages"].values():
        target = message["payload"]["$ref"].removeprefix("./")
        assert target in files
    for operation in document["operations"].values():
        channel = operation["channel"]["$ref"].removeprefix("#/channels/")
        assert channel in document["channels"]


def test_check_mode_reports_drift(tmp_path: Path) -> None:
    contract.write(tmp_path)
    (tmp_path / "schemas" / "birth.json").write_text("{}\n", encoding="utf-8")

    assert contract.main(["--check", str(tmp_path)]) == 1
    assert contract.main(["--write", str(tmp_path)]) == 0
    assert contract.main(["--check", str(tmp_path)]) == 0
