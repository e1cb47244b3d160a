"""The egress log: a site's own record of everything it sends out.

Every reply the ClientApp sends is described by :func:`egress_entry` and appended, as one
JSON line, to ``<base>/egress/run-<run_id>/<site-id>.jsonl`` on the site's own
disk (``base``: ``$FEDREPLAY_SITE_DIR``, else ``~/.cache/fedreplay/sites``). An entry names
every record of the message and, per record:

* arrays (``kind="array"``): every tensor's name, shape, dtype, bytes and the SHA-256 of
  its raw (C-order) bytes, so a stored model can be matched against what was sent;
* metrics (``kind="metric"``) and configs (``kind="config"``): every name and value.

The log is written *before* the reply is handed to Flower and the write is fsync'd; if
it cannot be written the ClientApp fails and nothing is sent (fail closed).
:mod:`common.audit.egress_check` compares a log with what the protocol allows.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from common.protocol import SECAGG
from common.sitestate import SITE_DIR_ENV, check_site_id, default_site_id, site_dir, site_id_for

__all__ = [
    "SITE_DIR_ENV",
    "EgressLog",
    "egress_entry",
    "log_reply",
    "logged",
    "public_reason",
    "site_dir",
]

EGRESS = "egress"
NUMBER_BYTES = 8  # a metric or config number on the wire (int64 / float64)


def run_dir(base: str | Path, run_id: int) -> Path:
    """Where the egress logs of one run live: ``<base>/egress/run-<run_id>``."""
    return Path(base).expanduser() / EGRESS / f"run-{run_id}"


def _json_value(value: Any) -> Any:
    """A metric/config value as strict JSON: non-finite floats as strings, bytes as base64."""
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode("ascii"), "bytes": len(value)}
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf", "-inf": flagged by the audit
    return value


def _digest_value(value: Any) -> Any:
    """A SecAgg+ value as logged: bytes by their size and SHA-256 (keys, encrypted shares,
    a masked release), integers (site numbers) as they are."""
    if isinstance(value, bytes):
        return {"bytes": len(value), "sha256": hashlib.sha256(value).hexdigest()}
    if isinstance(value, list):
        return [_digest_value(v) for v in value]
    return _json_value(value)


def _value_bytes(value: Any) -> int:
    if isinstance(value, list):
        return sum(_value_bytes(v) for v in value)
    if isinstance(value, bytes | str):
        return len(value.encode() if isinstance(value, str) else value)
    return NUMBER_BYTES


def tensor_entry(name: str, array: Array) -> dict[str, Any]:
    """Name, shape, dtype, raw bytes and SHA-256 of one array as it is sent."""
    values = np.ascontiguousarray(array.numpy())
    raw = values.tobytes()
    return {
        "name": name,
        "shape": list(values.shape),
        "dtype": str(values.dtype),
        "bytes": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
    }


def record_entry(name: str, record: ArrayRecord | MetricRecord | ConfigRecord) -> dict[str, Any]:
    """One record of a message: its name, kind and full description."""
    if isinstance(record, ArrayRecord):
        tensors = [tensor_entry(k, a) for k, a in record.items()]
        size = sum(t["bytes"] for t in tensors)
        return {"name": name, "kind": "array", "bytes": size, "tensors": tensors}
    kind = "metric" if isinstance(record, MetricRecord) else "config"
    show = _digest_value if name == SECAGG.name else _json_value  # (a masked release: MBs)
    values = {k: show(v) for k, v in record.items()}
    size = sum(_value_bytes(v) for v in record.values())
    return {"name": name, "kind": kind, "bytes": size, "values": values}


def egress_entry(
    content: RecordDict,
    *,
    node_id: int,
    partition_id: int,
    run_id: int,
    message_type: str,
    reply_to: str,
) -> dict[str, Any]:
    """Everything in one outgoing message (see the module docstring)."""
    records = [record_entry(name, rec) for name, rec in content.items()]
    return {
        "timestamp": time.time(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run_id": int(run_id),
        "node_id": int(node_id),
        "partition_id": int(partition_id),
        "message_type": str(message_type),
        "reply_to": str(reply_to),
        "records": records,
        "array_bytes": sum(r["bytes"] for r in records if r["kind"] == "array"),
        "total_bytes": sum(r["bytes"] for r in records),
    }


class EgressLog:
    """An append-only JSON-lines file, one line per outgoing message."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def for_site(cls, base_dir: str | Path, run_id: int, site: str | int) -> EgressLog:
        """``<base>/egress/run-<run_id>/<site-id>.jsonl`` (an int: ``site-<partition>``)."""
        site_id = default_site_id(site) if isinstance(site, int) else check_site_id(site)
        return cls(run_dir(base_dir, run_id) / f"{site_id}.jsonl")

    def append(self, entry: dict[str, Any]) -> None:
        """Append one line with a single ``write`` on an ``O_APPEND`` descriptor, then fsync."""
        line = (json.dumps(entry, allow_nan=False, separators=(",", ":")) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"short write to {self.path}: {written} of {len(line)} bytes")
            os.fsync(fd)
        finally:
            os.close(fd)

    def entries(self) -> Iterator[dict[str, Any]]:
        """The logged entries, in order (a torn last line raises ``ValueError``)."""
        with self.path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"{self.path}:{number}: not JSON ({exc})") from None


def log_reply(
    content: RecordDict,
    *,
    node_id: int,
    partition_id: int,
    run_id: int,
    message_type: str,
    reply_to: str,
    base_dir: str | Path | None = None,
    site_id: str | None = None,
) -> dict[str, Any]:
    """Describe ``content`` and append it to the site's log (keyed by ``site_id``, default
    ``site-<partition_id>``); returns the entry."""
    base = (Path(base_dir) if base_dir is not None else site_dir()).expanduser().absolute()
    entry = egress_entry(
        content,
        node_id=node_id,
        partition_id=partition_id,
        run_id=run_id,
        message_type=message_type,
        reply_to=reply_to,
    )
    entry["egress_dir"] = str(base)
    entry["site_id"] = site_id or default_site_id(partition_id)
    EgressLog.for_site(base, run_id, entry["site_id"]).append(entry)
    return entry


_LOCAL_PATH = re.compile(r"(?<![\w.])(?:~|[A-Za-z]:)?[\\/][^\s'\"<>,;()\[\]]+")
REASON_CHARS = 500


def public_reason(exc: BaseException) -> str:
    """What a site tells the server about its own failure: the error's type and message
    with every local path replaced by ``<path>`` and the length bounded (the full text
    stays in the site's own log)."""
    text = _LOCAL_PATH.sub("<path>", str(exc))
    return f"{type(exc).__name__}: {text}"[:REASON_CHARS]


def logged(reply: Message, context: Context) -> Message:
    """Log ``reply`` in this site's egress log, then return it unchanged (for sending).

    The ClientApp's handlers end with ``return egress.logged(reply, context)``, so what is
    logged is exactly what is sent. Raises if the log cannot be written (fail closed).
    """
    if reply.has_content():
        log_reply(
            reply.content,
            node_id=context.node_id,
            partition_id=int(context.node_config.get("partition-id", 0)),  # type: ignore[call-overload]
            run_id=context.run_id,
            message_type=reply.metadata.message_type,
            reply_to=reply.metadata.reply_to_message_id,
            site_id=site_id_for(context.node_config),
        )
    return reply
