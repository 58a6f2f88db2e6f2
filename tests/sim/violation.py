"""What the simulation checks, and the error a failed check raises (with its replay)."""

from __future__ import annotations

from collections.abc import Sequence

INVARIANTS = {
    "lease-exclusive": "at no instant do two servers both believe they hold a region (World.holds)",
    "coordinator-exclusive": "at no instant do two coordinators both act (hold the live "
    "coordinator lease by their clocks)",
    "one-owner-per-epoch": "the store never grants one region's epoch to two servers, and "
    "epochs never go back",
    "fencing": "the store accepts no region write from a server while another server "
    "believes it holds the region (World.holds) or holds its live lease",
    "demoted-commit": "the store accepts no strong commit that its sender sent while demoted",
    "timely-demotion": "a server cut off from a majority demotes itself within the bound",
    "acked-durable": "every acknowledged strong op is committed in the store at the end",
    "same-outcome": "resubmitting an acknowledged op_id returns the same Committed version",
    "clean-errors": "submit raises only worldstate errors (or the caller's timeout)",
    "convergence": "after the final heal and quiet phase, every server's eventual creature "
    "table is the same",
    "causal-durable": "every acknowledged (Accepted) causal event is in the durable event log",
    "causal-delivered": "after the final heal and quiet phase, every server has delivered "
    "every logged causal event",
    "recovery": "after the final heal, every region has exactly one authoritative holder",
}


class InvariantViolation(AssertionError):
    """An invariant failed; carries what is needed to replay it."""

    def __init__(
        self, seed: int, invariant: str, at: float, detail: str, trace: Sequence[str], argv: str
    ) -> None:
        self.seed, self.invariant, self.at, self.detail = seed, invariant, at, detail
        self.trace = list(trace)
        tail = "\n".join(f"    {line}" for line in self.trace[-40:])
        super().__init__(
            f"seed {seed}: invariant {invariant!r} violated at t={at:.3f}: {detail}\n"
            f"  ({INVARIANTS.get(invariant, '')})\n  last events:\n{tail}\n"
            f"  replay: python -m tests.sim.harness --seed {seed} --trace{argv}\n"
            f"  or:     pytest tests/sim -k {seed_id(seed)}"
        )


def seed_id(seed: int) -> str:
    return f"seed{seed:05d}"


__all__ = ["INVARIANTS", "InvariantViolation", "seed_id"]
