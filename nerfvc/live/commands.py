"""``nerfvc receive`` and ``nerfvc send``: the two ends of a live call."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from urllib.parse import urlparse

from nerfvc.argtypes import int_in, positive
from nerfvc.codec.framing import MAX_FRAME_STEP
from nerfvc.errors import InputError

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MIN_SIZE, MAX_SIZE = 16, 2048  # render size (pixels)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``receive`` and ``send``."""
    p = sub.add_parser("receive", help="receive a live call: viewer page + signaling, decode and render")
    p.add_argument("--model", required=True, help="MODEL directory (same as the sender's)")
    p.add_argument(
        "--listen", default="127.0.0.1:8080", help="HOST:PORT to serve on (default 127.0.0.1:8080)"
    )
    p.add_argument(
        "--size", type=int, default=256, help="initial display size, 16..2048 (the viewer can change it)"
    )
    p.add_argument(
        "--no-interpolate",
        action="store_true",
        help="with a frame step m > 1 in the stream, show only the coded frames (default: also the m - 1 "
        "camera frames between them, interpolated, which shows them up to (m - 1) / fps later)",
    )
    p.add_argument(
        "--no-references",
        action="store_true",
        help="render the NeRF alone, without the model's reference frames' texture",
    )
    p.add_argument(
        "--fixed-size",
        action="store_true",
        help="always render at the display size (default: render down to 3/4 of it and upscale when the "
        "renderers cannot keep up with the call's frame rate)",
    )
    p.add_argument("--token", help="the sender's token: may start a call (default: random, printed)")
    p.add_argument(
        "--view-token",
        help="the viewers' token, in the viewer URL: may watch, never start a call (default: random)",
    )
    p.add_argument(
        "--render-in",
        choices=["process", "thread"],
        default="process",
        help="render in a worker process (default; no GIL contention with networking) or a thread",
    )
    p.add_argument(
        "--render-workers",
        type=int,
        default=max(1, min(2, os.cpu_count() or 1)),
        help="worker processes rendering frames in parallel, one thread each (default: 2 on 2+ cores)",
    )
    p.set_defaults(func=cmd_receive)

    p = sub.add_parser("send", help="send a live call: track, encode, stream to a receiver")
    p.add_argument("--model", required=True, help="MODEL directory (same as the receiver's)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--video", help="video file, streamed at its frame rate")
    src.add_argument("--camera", type=int, help="camera index")
    p.add_argument("--to", required=True, help="receiver URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--token", required=True, help="the sender token printed by `nerfvc receive`")
    p.add_argument("--kbps", type=positive, help="target feature bitrate (live rate control)")
    p.add_argument(
        "--frame-step",
        type=int_in(1, MAX_FRAME_STEP),
        help="send every m-th camera frame (default: chosen from --kbps by the expected rate, else 1)",
    )
    p.add_argument("--pack", type=int, default=1, help="frames per data-channel message, 1..64 (default 1)")
    p.add_argument("--classic", choices=["x265", "svtav1"], help="also send the video with a classic codec")
    p.add_argument("--classic-kbps", type=positive, default=100.0, help="classic codec bitrate (default 100)")
    p.add_argument("--classic-size", type=int, default=256, help="classic codec frame size (default 256)")
    p.add_argument("--drop", type=float, default=0.0, help="inject this fraction of message loss (testing)")
    p.add_argument(
        "--guard",
        action="store_true",
        help="run the quality guard (docs/guard.md): render each coded frame small here, compare it with the "
        "camera frame and send fallback pictures where the render would be worse (their bits count)",
    )
    p.set_defaults(func=cmd_send)


def _listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--listen must be HOST:PORT, got {value!r}")
    return host, int(port)


def cmd_receive(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    from nerfvc.live import adapters
    from nerfvc.live.interfaces import FrameRenderer
    from nerfvc.live.receiver import Receiver
    from nerfvc.live.transport import use_loopback_only
    from nerfvc.pipeline import ReceiverPipeline

    host, port = _listen(args.listen)
    if not MIN_SIZE <= args.size <= MAX_SIZE:
        raise InputError(f"--size must be in {MIN_SIZE}..{MAX_SIZE}, got {args.size}")
    if args.token is not None and args.token == args.view_token:
        raise InputError("--token (sender) and --view-token (viewers) must differ")
    if host in LOOPBACK_HOSTS:
        use_loopback_only()
    references = not args.no_references
    pipeline = ReceiverPipeline.from_model_dir(args.model, references=references)
    workers = 1
    renderer: FrameRenderer
    if args.render_in == "process":
        from nerfvc.live.workers import ProcessRenderer, RendererPool

        workers = max(1, args.render_workers)
        if workers == 1:
            renderer = ProcessRenderer(adapters.make_renderer, args.model, None, references, args.size)
        else:
            renderer = RendererPool(workers, adapters.make_renderer, args.model, 1, references, args.size)
    else:
        renderer = pipeline.renderer()
    receiver = Receiver(
        pipeline.packet_decoder,
        renderer,
        args.size,
        args.token,
        render_threads=workers,
        view_token=args.view_token,
        adapt_size=not args.fixed_size,
        interpolate=not args.no_interpolate,
    )

    async def serve() -> None:
        bound = await receiver.start(host, port)
        print(f"sender token: {receiver.token}", flush=True)
        print(f"viewer: http://{host}:{bound}/?token={receiver.view_token}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await receiver.stop()
            close = getattr(renderer, "close", None)
            if close is not None:
                close()

    asyncio.run(serve())
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    """Run one call to its end; print the sender's numbers as JSON."""
    from nerfvc.guard.fallback import GuardConfig
    from nerfvc.live import adapters
    from nerfvc.live.classic import ClassicEncoder
    from nerfvc.live.sender import Sender, SenderConfig, check_url
    from nerfvc.live.transport import use_loopback_only
    from nerfvc.pipeline import SenderPipeline

    url = check_url(args.to)
    if urlparse(url).hostname in LOOPBACK_HOSTS:
        use_loopback_only()
    from nerfvc.live.receiver import MAX_PACK

    if not 1 <= args.pack <= MAX_PACK:
        raise InputError(f"--pack must be in 1..{MAX_PACK}")
    if not 0 <= args.drop < 1:
        raise InputError("--drop must be in [0, 1)")
    pipeline = SenderPipeline.from_model_dir(args.model)
    guard_config = GuardConfig() if args.guard else None
    source = adapters.TrackedSource(
        pipeline,
        args.video,
        args.camera,
        keep_images=bool(args.classic),
        crop_size=guard_config.picture_size if guard_config else None,
    )
    encoder = pipeline.stream_encoder(source.fps, frame_step=args.frame_step, kbps=args.kbps)
    source.frame_step = encoder.frame_step  # the frames between coded ones are not even tracked
    guard = None
    if guard_config is not None:
        from nerfvc.live.guard import LiveGuard

        renderer = adapters.make_renderer(args.model)
        guard = LiveGuard(encoder, renderer, source.fps, guard_config)
    classic = (
        ClassicEncoder(args.classic, args.classic_kbps, source.fps, args.classic_size)
        if args.classic
        else None
    )
    config = SenderConfig(url, args.token, pack=args.pack, drop=args.drop, mark_every=5)
    report = asyncio.run(Sender(source, encoder, config, classic, guard).run())
    print(json.dumps(report.summary(), indent=2), file=sys.stdout)
    return 0
