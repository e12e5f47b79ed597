"""The support archive: a .tar.gz of config, status, events and log lines, without secrets."""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.api import SupportBundle, redact_secrets, redact_text

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def default_name(bundle: SupportBundle) -> str:
    """Return `cabinet-<id>-support-<UTC time>.tar.gz`, safe as a file name."""
    cabinet = _UNSAFE_NAME.sub("_", bundle.cabinet_id) or "unknown"
    stamp = datetime.fromtimestamp(bundle.created_at, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"cabinet-{cabinet}-support-{stamp}.tar.gz"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True) + "\n"


def bundle_files(bundle: SupportBundle) -> dict[str, str]:
    """Return the archive members by name, with secrets removed once more.

    The daemon removes secrets before it sends the bundle. This second pass protects the
    archive from a daemon that missed one, because the archive leaves the cabinet.
    """
    manifest = {
        "schema": bundle.schema_version,
        "cabinet_id": bundle.cabinet_id,
        "gateway_version": bundle.version,
        "created_at": datetime.fromtimestamp(bundle.created_at, UTC).isoformat(),
    }
    events = "".join(
        json.dumps(record.model_dump(mode="json", by_alias=True), ensure_ascii=False) + "\n"
        for record in bundle.recent_events
    )
    files = {
        "manifest.json": _json(manifest),
        "config.json": _json(redact_secrets(bundle.config)),
        "status.json": _json(bundle.status.model_dump(mode="json", by_alias=True)),
        "events.jsonl": events,
        "daemon.log": "".join(f"{line}\n" for line in bundle.log_lines),
    }
    return {name: redact_text(content) for name, content in files.items()}


def write_bundle(bundle: SupportBundle, path: Path) -> list[str]:
    """Write the archive to `path` (replacing it atomically) and return the member names."""
    folder = default_name(bundle).removesuffix(".tar.gz")
    files = bundle_files(bundle)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".bundle-", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            for name, content in files.items():
                data = content.encode()
                info = tarfile.TarInfo(f"{folder}/{name}")
                info.size = len(data)
                info.mtime = int(bundle.created_at)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return [f"{folder}/{name}" for name in files]
