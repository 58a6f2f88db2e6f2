"""The mesh: membership and split-brain verdicts, coordinator commands, hand-off,
placement and rebalancing by the elected coordinator."""

from __future__ import annotations

from worldstate.mesh._agent import MembershipAgent, Presence, PresenceTracker, last_will
from worldstate.mesh._coordinator import MeshCoordinator, Move
from worldstate.mesh._handoff import Command, CommandHandler

__all__ = [
    "Command",
    "CommandHandler",
    "MembershipAgent",
    "MeshCoordinator",
    "Move",
    "Presence",
    "PresenceTracker",
    "last_will",
]
