"""The network attachments this node holds for its standalone containers, kept on disk.

The emulated runtime lives in the node process: a node that dies (SIGKILL) and starts again
runs none of its earlier standalone containers, yet their attachment tasks stay in the
managers' store, holding their addresses. What this file still lists at startup is therefore
stale: the node asks the managers to remove those tasks once it is back in the swarm.
"""

from __future__ import annotations

import json
from pathlib import Path

from controlplane.durable import write_atomic
from controlplane.process import NodeError

ATTACHMENTS_FILE = "attachments.json"  # in the node's data dir


class AttachmentLedgerError(NodeError):
    """The node cannot start on an unreadable ledger (the message says what to do)."""


class AttachmentLedger:
    """Attachment task ids, saved (atomically, fsynced) at each change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ids: set[str] = set()
        if path.exists():
            try:
                ids = json.loads(path.read_text())
            except (OSError, ValueError) as err:  # ValueError: bad JSON, or not UTF-8
                raise AttachmentLedgerError(
                    f"cannot read the attachment ledger {path}: {err}; remove the file (the "
                    "node then forgets attachments of containers it ran before a restart)"
                ) from None
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise AttachmentLedgerError(
                    f"the attachment ledger {path} is not a JSON list of task ids; remove it"
                )
            self._ids = set(ids)

    def ids(self) -> set[str]:
        return set(self._ids)

    def add(self, attachment_id: str) -> None:
        self._ids.add(attachment_id)
        self._save()

    def discard(self, attachment_id: str) -> None:
        if attachment_id in self._ids:
            self._ids.discard(attachment_id)
            self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(sorted(self._ids)).encode())
