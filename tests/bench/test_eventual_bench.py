"""The eventual bench measures what it says: its receiver (a server watching the whole
world through `updates()`) hears and applies the sender's batches. It once heard nothing:
with interest fan-out a server with no regions and no stream subscribes to nothing, and
the bench divided by zero."""

from __future__ import annotations

import argparse

import pytest

from bench import eventual_bench


def test_batched_receiver_applies_what_the_sender_ticks(
    mqtt_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORLDSTATE_TEST_MQTT", mqtt_url)  # the receiver process reads it
    monkeypatch.setattr(eventual_bench, "MQTT", mqtt_url)
    args = argparse.Namespace(entities=200, hz=20.0, seconds=1.0, regions=4)
    tx, rx = eventual_bench._run_mode("batched", args)
    assert tx["ticks"] >= 10
    assert rx["messages_received"] > 0
    # every tick moves all 200 entities; the receiver applies (nearly) all of them
    assert rx["rows_applied"] >= 0.9 * 200 * tx["ticks"]
    assert rx["lag_s"] and min(rx["lag_s"]) >= 0.0
