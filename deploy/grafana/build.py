"""Generates the Grafana dashboards in this folder from one table of panels per dashboard.

    python deploy/grafana/build.py        # rewrites deploy/grafana/*.json

Every expression uses only ``worldstate_*`` families that ``worldstate serve`` and
``worldstate coordinator`` expose (tests/deploy checks it). Rates are per second over 1 m."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
Panel = tuple[str, str, list[tuple[str, str]]]  # title, unit, [(expr, legend)]

DASHBOARDS: dict[str, tuple[str, list[Panel]]] = {
    "mesh-overview": (
        "worldstate: mesh overview",
        [
            (
                "Ops/s by class and outcome",
                "ops",
                [
                    (
                        "sum by (class, outcome) (rate(worldstate_ops_total[1m]))",
                        "{{class}} {{outcome}}",
                    )
                ],
            ),
            (
                "Regions owned per server",
                "short",
                [("sum by (instance) (worldstate_regions_owned)", "{{instance}}")],
            ),
            (
                "Majority side (1) / demoted (0)",
                "short",
                [("worldstate_partition_majority", "{{instance}}")],
            ),
            (
                "Servers each server hears",
                "short",
                [("worldstate_partition_view_servers", "{{instance}}")],
            ),
            (
                "Demotions and promotions /min",
                "short",
                [
                    (
                        "sum by (direction) (increase(worldstate_partition_transitions_total[1m]))",
                        "{{direction}}",
                    )
                ],
            ),
            (
                "Acting coordinator, membership",
                "short",
                [
                    ("max(worldstate_coordinator_acting)", "acting"),
                    ("max(worldstate_membership_members)", "members"),
                    ("max(worldstate_membership_live_servers)", "live"),
                ],
            ),
            (
                "Hand-offs: mean duration (s)",
                "s",
                [
                    (
                        "sum(rate(worldstate_handoff_duration_seconds_sum[5m])) / "
                        "sum(rate(worldstate_handoff_duration_seconds_count[5m]))",
                        "server side",
                    ),
                    (
                        "sum(rate(worldstate_coordinator_handoff_duration_seconds_sum[5m])) / "
                        "sum(rate(worldstate_coordinator_handoff_duration_seconds_count[5m]))",
                        "coordinator",
                    ),
                ],
            ),
            (
                "Leases renewed / lost per s",
                "short",
                [
                    ("sum(rate(worldstate_leases_renewed_total[1m]))", "renewed"),
                    ("sum by (reason) (rate(worldstate_leases_lost_total[1m]))", "lost {{reason}}"),
                ],
            ),
        ],
    ),
    "strong-path": (
        "worldstate: strong path",
        [
            (
                "Strong latency p50 / p99 (s)",
                "s",
                [
                    (
                        "histogram_quantile(0.5, sum by (le) (rate("
                        'worldstate_op_duration_seconds_bucket{class="strong"}[1m])))',
                        "p50",
                    ),
                    (
                        "histogram_quantile(0.99, sum by (le) (rate("
                        'worldstate_op_duration_seconds_bucket{class="strong"}[1m])))',
                        "p99",
                    ),
                ],
            ),
            (
                "Strong ops/s by outcome",
                "ops",
                [
                    (
                        'sum by (outcome) (rate(worldstate_ops_total{class="strong"}[1m]))',
                        "{{outcome}}",
                    )
                ],
            ),
            (
                "Conflicts/s by type and rule",
                "short",
                [
                    (
                        "sum by (type, rule) (rate(worldstate_conflicts_total[1m]))",
                        "{{type}} / {{rule}}",
                    )
                ],
            ),
            (
                "Group commits/s",
                "short",
                [
                    (
                        "sum by (instance) (rate(worldstate_strong_group_commits_total[1m]))",
                        "{{instance}}",
                    )
                ],
            ),
            (
                "Forwards/s",
                "short",
                [
                    (
                        "sum by (direction) (rate(worldstate_strong_forwards_total[1m]))",
                        "{{direction}}",
                    )
                ],
            ),
            ("Region pipelines", "short", [("worldstate_strong_pipelines", "{{instance}}")]),
        ],
    ),
    "eventual-causal": (
        "worldstate: eventual and causal",
        [
            (
                "Eventual tick duration p99 (s)",
                "s",
                [
                    (
                        "histogram_quantile(0.99, sum by (le, instance) (rate("
                        "worldstate_eventual_tick_duration_seconds_bucket[1m])))",
                        "{{instance}}",
                    )
                ],
            ),
            (
                "Tick overruns (% of ticks)",
                "percent",
                [
                    (
                        "100 * sum(rate(worldstate_eventual_tick_overruns_total[1m])) / "
                        "sum(rate(worldstate_eventual_ticks_total[1m]))",
                        "overrun %",
                    )
                ],
            ),
            (
                "Eventual rows/s by stage",
                "short",
                [("sum by (stage) (rate(worldstate_eventual_rows_total[1m]))", "{{stage}}")],
            ),
            (
                "Eventual lag p99 (s)",
                "s",
                [
                    (
                        'max by (instance) (worldstate_eventual_lag_seconds{quantile="0.99"})',
                        "{{instance}}",
                    )
                ],
            ),
            (
                "Causal events/s by stage",
                "short",
                [("sum by (stage) (rate(worldstate_causal_events_total[1m]))", "{{stage}}")],
            ),
            ("Causal buffer depth", "short", [("worldstate_causal_buffer_depth", "{{instance}}")]),
            (
                "Causal repairs/s",
                "short",
                [("sum(rate(worldstate_causal_repairs_total[1m]))", "repaired")],
            ),
            (
                "Bus dropped/s by family and reason",
                "short",
                [
                    (
                        "sum by (family, reason) (rate(worldstate_bus_dropped_total[1m]))",
                        "{{family}} {{reason}}",
                    )
                ],
            ),
            (
                "Bus messages/s",
                "short",
                [
                    (
                        "sum by (direction, family) (rate(worldstate_bus_messages_total[1m]))",
                        "{{direction}} {{family}}",
                    )
                ],
            ),
        ],
    ),
    "store-cache": (
        "worldstate: store and cache",
        [
            (
                "Store transactions/s",
                "short",
                [
                    (
                        "sum by (instance) (rate(worldstate_store_transactions_total[1m]))",
                        "{{instance}}",
                    )
                ],
            ),
            (
                "Store retries/s by reason",
                "short",
                [("sum by (reason) (rate(worldstate_store_retries_total[1m]))", "{{reason}}")],
            ),
            (
                "Retries exhausted/s",
                "short",
                [("sum(rate(worldstate_store_retries_exhausted_total[1m]))", "exhausted")],
            ),
            (
                "Cache hit rate",
                "percentunit",
                [
                    (
                        'sum(rate(worldstate_cache_requests_total{result="hit"}[1m])) / '
                        'sum(rate(worldstate_cache_requests_total{result=~"hit|miss"}[1m]))',
                        "hit rate",
                    )
                ],
            ),
            (
                "Cache requests/s by result",
                "short",
                [("sum by (result) (rate(worldstate_cache_requests_total[1m]))", "{{result}}")],
            ),
            (
                "Cache errors/s",
                "short",
                [("sum(rate(worldstate_cache_errors_total[1m]))", "errors")],
            ),
            (
                "Region recoveries (checksum) /min",
                "short",
                [("sum(increase(worldstate_store_recoveries_total[1m]))", "recoveries")],
            ),
        ],
    ),
}


def dashboard(uid: str, title: str, panels: list[Panel]) -> dict[str, Any]:
    out = []
    for i, (ptitle, unit, targets) in enumerate(panels):
        out.append(
            {
                "id": i + 1,
                "type": "timeseries",
                "title": ptitle,
                "datasource": {"type": "prometheus", "uid": "prometheus"},
                "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [
                    {"refId": chr(65 + j), "expr": expr, "legendFormat": legend}
                    for j, (expr, legend) in enumerate(targets)
                ],
            }
        )
    return {
        "uid": f"worldstate-{uid}",
        "title": title,
        "tags": ["worldstate"],
        "schemaVersion": 39,
        "time": {"from": "now-30m", "to": "now"},
        "refresh": "10s",
        "panels": out,
    }


def main() -> None:
    for uid, (title, panels) in DASHBOARDS.items():
        path = HERE / f"{uid}.json"
        path.write_text(json.dumps(dashboard(uid, title, panels), indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
