"""WebRTC transport helpers: peer-connection setup, message framing, loss injection, loopback mode.

Channels on the one peer connection (one SCTP association over DTLS/ICE/UDP):

- ``nerfvc`` — the codec packets: unordered, ``maxRetransmits=0`` (a lost packet is never resent;
  keyframes and concealment handle loss). A message holds one packet, or with packing several, each
  prefixed by its length (uvarint).
- ``control`` — reliable and ordered, JSON text: the stream header, capture-time marks, clock pings,
  keyframe requests, sender stats.
- ``classic`` — (optional) the classic-codec fallback's packets, reliable and ordered: x265/SVT-AV1
  bitstreams without error resilience would break on loss, so they are not run over the lossy channel.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from nerfvc.codec.framing import read_uvarint, uvarint
from nerfvc.errors import BitstreamError

# Measured here on loopback: a data-channel message costs ~67 bytes of DTLS record + SCTP DATA chunk
# overhead beyond its payload (IP/UDP headers not included).
WIRE_OVERHEAD_BYTES = 67
MEDIA_LABEL = "nerfvc"
CONTROL_LABEL = "control"
CLASSIC_LABEL = "classic"


def use_loopback_only() -> None:
    """Make aioice gather only 127.0.0.1 host candidates (offline / loopback operation, no STUN)."""
    import aioice.ice

    def loopback(use_ipv4: bool = True, use_ipv6: bool = False) -> list[str]:
        return ["127.0.0.1"]

    aioice.ice.get_host_addresses = loopback


def rtc_configuration() -> Any:
    """An ``RTCConfiguration`` with no ICE servers (host candidates only)."""
    from aiortc import RTCConfiguration

    return RTCConfiguration(iceServers=[])


def pack_packets(packets: Iterable[bytes]) -> bytes:
    """Join packets into one message: ``uvarint(len) packet`` repeated."""
    return b"".join(uvarint(len(p)) + p for p in packets)


def unpack_packets(message: bytes) -> list[bytes]:
    """Split a message made by :func:`pack_packets`; raises ``ValueError`` if it is malformed."""
    out, pos, n = [], 0, len(message)
    while pos < n:
        try:
            length, pos = read_uvarint(message, pos, max_bytes=5)
        except BitstreamError as e:
            raise ValueError(f"bad length prefix ({e})") from None
        if pos + length > n:
            raise ValueError("truncated packet")
        out.append(bytes(message[pos : pos + length]))
        pos += length
    return out


class LossyChannel:
    """Wraps a data channel's ``send`` and drops each message with probability ``drop`` (loss injection)."""

    def __init__(self, channel: Any, drop: float, seed: int | None = None) -> None:
        self.channel = channel
        self.drop = float(drop)
        self.rng = random.Random(seed)
        self.dropped = 0
        self.sent = 0

    def send(self, data: bytes) -> None:
        """Send ``data`` unless the dice say drop."""
        if self.drop > 0 and self.rng.random() < self.drop:
            self.dropped += 1
            return
        self.sent += 1
        self.channel.send(data)

    @property
    def readyState(self) -> str:
        return self.channel.readyState

    @property
    def bufferedAmount(self) -> int:
        return self.channel.bufferedAmount
