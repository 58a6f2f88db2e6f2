"""Resource nodes and inventories read and written outside the strong pipeline (world
generation and strong reads). Bodies for `Store.run`; bound parameters only."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from regions import RegionKey, Vec3
from worldstate.objects import ResourceNode
from worldstate.store import schema

__all__ = ["put_resource", "read_inventory", "read_resource"]


async def read_inventory(c: Any, inventory_id: str) -> dict[str, int]:
    """The inventory's non-zero item counts, by item name."""
    t = schema.inventories
    rows = await c.execute(
        select(t.c.item, t.c["count"].label("n"))
        .where(t.c.inventory_id == inventory_id)
        .order_by(t.c.item)
    )
    return {r.item: int(r.n) for r in rows if r.n}


async def put_resource(
    c: Any, resource_id: str, key: RegionKey, position: Vec3, amount: float
) -> None:
    """Create or refill a resource node with ``amount`` left to claim."""
    t = schema.resources
    ins = schema.insert_for(c.dialect.name, t).values(
        resource_id=resource_id,
        region_key=key.morton,
        x=position[0],
        y=position[1],
        z=position[2],
        capacity=float(amount),
        remaining=float(amount),
    )
    await c.execute(
        ins.on_conflict_do_update(
            index_elements=["resource_id"],
            set_={
                "capacity": ins.excluded.capacity,
                "remaining": ins.excluded.remaining,
                "x": ins.excluded.x,
                "y": ins.excluded.y,
                "z": ins.excluded.z,
                "region_key": ins.excluded.region_key,
            },
        )
    )


async def read_resource(c: Any, resource_id: str) -> ResourceNode | None:
    t = schema.resources
    r = (await c.execute(select(t).where(t.c.resource_id == resource_id))).first()
    if r is None:
        return None
    return ResourceNode(resource_id, (r.x, r.y, r.z), float(r.capacity), float(r.remaining))
