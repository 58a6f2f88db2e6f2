"""Message bus adapters: the in-process bus (``memory://[name]``) and MQTT (``mqtt://``).

```python
from worldstate.bus import Message, open_bus

async with open_bus("mqtt://127.0.0.1:1883", client_id="gs-1", prefix="ws") as bus:
    sub = bus.subscribe("servers/+/heartbeat", lambda m: print(m.topic, m.payload))
    await sub.wait_active(timeout=5)
    await bus.publish("servers/gs-1/heartbeat", b"alive", qos=0)
```
"""

from __future__ import annotations

from urllib.parse import urlsplit

from worldstate.bus._signed import SignedBus
from worldstate.bus.base import (
    DEFAULT_MAX_PAYLOAD,
    DEFAULT_MAX_TOPIC_BYTES,
    DEFAULT_PUBLISH_TIMEOUT,
    Bus,
    BusStats,
    Handler,
    Listener,
    Message,
    Subscription,
)
from worldstate.bus.memory import Faults, Hub, HubStats, MemoryBus, get_hub
from worldstate.bus.mqtt import MqttBus
from worldstate.bus.topics import matches, validate_filter, validate_topic
from worldstate.errors import ValidationError


def open_bus(
    url: str,
    *,
    client_id: str,
    prefix: str,
    will: Message | None = None,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
    publish_timeout: float = DEFAULT_PUBLISH_TIMEOUT,
) -> Bus:
    """Make the bus a URL names (not yet started: ``async with`` it, or call ``start()``).

    - ``memory://`` or ``memory://NAME``: the in-process bus; every bus of the same name in
      this process shares one hub.
    - ``mqtt://[user[:password]@]host[:port]``: an MQTT 5 broker (default port 1883);
      ``mqtts://`` for TLS (default port 8883).

    Raises `ValidationError` for an unknown scheme or a malformed URL or argument.
    """
    if not isinstance(url, str):
        raise ValidationError(f"bus URL must be a str, got {type(url).__name__}")
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme == "memory":
        name = url.split("://", 1)[1].strip("/")
        return MemoryBus(
            name,
            client_id=client_id,
            prefix=prefix,
            will=will,
            max_payload=max_payload,
            publish_timeout=publish_timeout,
        )
    if scheme in ("mqtt", "mqtts"):
        return MqttBus(
            url,
            client_id=client_id,
            prefix=prefix,
            will=will,
            max_payload=max_payload,
            publish_timeout=publish_timeout,
        )
    raise ValidationError(
        f"unknown bus URL {url!r}: use memory://[name], mqtt://host[:port] or mqtts://host[:port]"
    )


__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "DEFAULT_MAX_TOPIC_BYTES",
    "DEFAULT_PUBLISH_TIMEOUT",
    "Bus",
    "BusStats",
    "Faults",
    "Handler",
    "Hub",
    "HubStats",
    "Listener",
    "MemoryBus",
    "Message",
    "MqttBus",
    "SignedBus",
    "Subscription",
    "get_hub",
    "matches",
    "open_bus",
    "validate_filter",
    "validate_topic",
]
