"""World history: checkpoints (take, list, restore, prune), the checkpoint file format
(export/import between stores), the causal log read back in causal order, and its
retention. See the README section "Checkpoints and history"."""

from __future__ import annotations

from worldstate.history._checkpoint import (
    Checkpoint,
    create_checkpoint,
    delete_checkpoint,
    get_checkpoint,
    list_checkpoints,
    prune_checkpoints,
)
from worldstate.history._events import Watermark, read_events
from worldstate.history._export import (
    FORMAT,
    FORMAT_VERSION,
    export_checkpoint,
    import_checkpoint,
    read_header,
)
from worldstate.history._restore import RestoreReport, restore_checkpoint
from worldstate.history._retention import PruneReport, prune_events
from worldstate.history._tables import WORLD_TABLES

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "WORLD_TABLES",
    "Checkpoint",
    "PruneReport",
    "RestoreReport",
    "Watermark",
    "create_checkpoint",
    "delete_checkpoint",
    "export_checkpoint",
    "get_checkpoint",
    "import_checkpoint",
    "list_checkpoints",
    "prune_checkpoints",
    "prune_events",
    "read_events",
    "read_header",
    "restore_checkpoint",
]
