"""Every topic name the mesh uses, in one place (relative to the world's namespace).

=====================================  ====================================================
topic                                  what travels on it
=====================================  ====================================================
``ops/{owner}``                        a strong op forwarded to its region's owner (QoS 1)
``replies/{sender}``                   the owner's answer to a forwarded op (QoS 1)
``cmd/{server}``                       a coordinator command: acquire / release (QoS 1)
``cmd-replies/{coordinator}``          a server's answer to a command (QoS 1)
``members/{server}``                   a server's presence heartbeat (retained)
``mesh/membership``                    the agreed membership (retained, by the coordinator)
``notice/{morton}``                    a strong commit changed region ``morton`` (QoS 0)
``eventual/{morton}``                  one tick's eventual batch of region ``morton``
``causal/events/{origin}``             a group of ``origin``'s causal events (QoS 1)
``causal/heads/{origin}``              ``origin``'s highest causal seq (QoS 0)
``rel/{sender}/all``                   an acknowledged eventual op, to every server (QoS 1)
``rel/{sender}/to/{receiver}``         its redelivery to one server that did not ack (QoS 1)
``relack/{sender}``                    a receiver's acknowledgement of ``sender``'s ops (QoS 1)
=====================================  ====================================================

The regional families (`REGIONAL`: ``notice/{morton}``, ``eventual/{morton}``) are one topic
per region, and a server subscribes to the regions it owns, their neighbours and the
interests of its open ``updates()`` streams only (`worldstate.node._interest`), so its
receive cost follows what it cares about, not the size of the mesh. Causal events and
acknowledged eventual ops stay world-wide (see docs/fanout.md for why).
"""

from __future__ import annotations

__all__ = [
    "CAUSAL",
    "CAUSAL_EVENTS",
    "CAUSAL_HEADS",
    "COMMANDS",
    "COMMAND_REPLIES",
    "EVENTUAL",
    "MEMBERSHIP",
    "NOTICES",
    "OPS",
    "PRESENCE",
    "REGIONAL",
    "RELIABLE",
    "RELIABLE_ACKS",
    "REPLIES",
    "every",
    "of",
]

OPS = "ops"
REPLIES = "replies"
COMMANDS = "cmd"
COMMAND_REPLIES = "cmd-replies"
PRESENCE = "members"
MEMBERSHIP = "mesh/membership"
NOTICES = "notice"
EVENTUAL = "eventual"
CAUSAL = "causal"
CAUSAL_EVENTS = "causal/events"
CAUSAL_HEADS = "causal/heads"
RELIABLE = "rel"
RELIABLE_ACKS = "relack"

REGIONAL = (NOTICES, EVENTUAL)
"""The families with one topic per region, subscribed by interest."""


def of(family: str, who: object) -> str:
    """The topic of one member of a family: ``of(OPS, "gs-2") == "ops/gs-2"``."""
    return f"{family}/{who}"


def every(family: str) -> str:
    """The subscription filter for a whole family: ``every(OPS) == "ops/+"``; the causal
    family has two levels, so ``every(CAUSAL) == "causal/#"``."""
    return f"{family}/#" if family == CAUSAL else f"{family}/+"
