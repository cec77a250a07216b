"""Live calls: packets over a WebRTC data channel (aiortc), a browser viewer, live stats.

- :mod:`nerfvc.live.sender` — :class:`~nerfvc.live.sender.Sender`: source → codec → data channel.
- :mod:`nerfvc.live.receiver` — :class:`~nerfvc.live.receiver.Receiver`: signaling, decode, render worker,
  viewer page and WebSocket.
- :mod:`nerfvc.live.interfaces` — the injectable pieces (``FeatureSource``, ``PacketEncoder``,
  ``PacketDecoder``, ``FrameRenderer``); the real ones come from the MODEL's pipelines
  (:mod:`nerfvc.pipeline`: tracker, embedding, codec, NeRF), with :mod:`nerfvc.live.adapters` for the
  tracked video/camera source and the render-worker factory.
- :mod:`nerfvc.live.commands` — ``nerfvc send`` and ``nerfvc receive``.

See docs/live.md.
"""
