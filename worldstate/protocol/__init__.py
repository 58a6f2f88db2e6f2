"""Everything that crosses the bus: one typed module per message family."""

from __future__ import annotations

from worldstate.protocol._ops import decode_op, encode_op, op_digest, op_from_dict, op_to_dict

__all__ = ["decode_op", "encode_op", "op_digest", "op_from_dict", "op_to_dict"]
