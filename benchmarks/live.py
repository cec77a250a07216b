"""Live-call benchmark on loopback: end-to-end latency and achieved fps at several render sizes → JSON.

    PYTHONPATH=. .venv/bin/python benchmarks/live.py [--model MODEL] [--sizes 128,256] [--no-browser] \
        [--modes adapt,fixed] [--pretracked] [--no-classic] [--no-stand-ins] [-o benchmarks/results/live.json]

Each size runs one real-time call of the clip over aiortc data channels (sender and receiver in one process,
one event loop, rendering in the receiver's worker thread) with a headless-Chromium viewer attached when
Chromium is installed, plus the classic x265 fallback at 100 kbps on the same peer connection
(``--no-classic``: a plain nerfvc call).

Latency: *capture → rendered* is sender capture time (clock-offset corrected) to the end of the render;
*capture → displayed* adds half the round trip receiver → page → display acknowledgement.

The receiver renders below the display size when it falls behind (``nerfvc.live.adapt``; ``--modes fixed``:
never; ``adapt,fixed``: both, one run each). ``--pretracked`` tracks the clip before the call and replays
it, as from a sender on another machine; without it the sender's tracking shares the 2 cores with the
receiver.

The stand-in runs (``--no-stand-ins``: skipped) use the pipeline with the test stand-ins (a toy
keyframe/delta codec, block-mean features from the clip, and the DEBUG disc renderer): those numbers measure
the transport, worker and viewer overhead, not NeRF rendering. With ``--model``, runs with the real
tracker, codec and NeRF renderer follow.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nerfvc.fsutil import write_json_atomic  # noqa: E402
from nerfvc.live.classic import ClassicEncoder  # noqa: E402
from nerfvc.live.interfaces import DebugDiscRenderer, SourceFrame  # noqa: E402
from nerfvc.live.receiver import Receiver  # noqa: E402
from nerfvc.live.sender import Sender, SenderConfig  # noqa: E402
from nerfvc.live.transport import use_loopback_only  # noqa: E402
from nerfvc.record import machine_record  # noqa: E402
from tests.live.cdp import Browser, find_chromium  # noqa: E402
from tests.live.standins import ArraySource, StandInDecoder, StandInEncoder, clip_features  # noqa: E402

CLIP = ROOT.parent / "shared" / "data" / "clips" / "mimictalk_may_5s.mp4"


class PretrackedSource:
    """The clip's frames tracked before the call, replayed like a camera (``CameraPacer``, as
    ``TrackedSource``): each frame is captured when it is due and dropped when the sender is more than two
    frames late. The call of a sender on another machine: its tracking does not share the receiver's cores."""

    def __init__(self, sender, clip: str) -> None:
        from nerfvc.io.video import probe, read_frames

        tracker = sender.tracker()
        self.fps = float(probe(clip).fps) or 25.0
        self.frames = []
        for rgb, t in read_frames(clip):
            f = tracker.track(rgb, t)
            self.frames.append(SourceFrame(t, f.features, f.pose, rgb))
        self.frame_step = 1
        self.camera_frames = len(self.frames)
        self.skipped = 0

    def __iter__(self):
        from nerfvc.live.adapters import CameraPacer

        pacer = CameraPacer(self.fps)
        for f in self.frames[:: self.frame_step]:
            due = pacer.due(f.timestamp)
            if due is None:
                self.skipped += 1
                continue
            yield SourceFrame(f.timestamp, f.expression, f.pose, f.image, capture_time=due)


def _pieces(
    model: str | None,
    clip: str,
    clip_data: tuple | None,
    workers: int = 1,
    kbps: float | None = None,
    pretracked: bool = False,
    size: int | None = None,
):
    """(source, encoder, decoder factory, renderer, labels) for one run (stand-ins without ``model``); the
    model's render workers prepare its references for ``size`` × ``size`` before the call, as ``nerfvc
    receive`` does for its ``--size``."""
    if model:
        from nerfvc.live import adapters
        from nerfvc.live.workers import ProcessRenderer, RendererPool
        from nerfvc.pipeline import ReceiverPipeline, SenderPipeline

        sender = SenderPipeline.from_model_dir(model)
        if pretracked:
            source = PretrackedSource(sender, clip)
        else:
            source = adapters.TrackedSource(sender, video=clip, keep_images=True)
        encoder = sender.stream_encoder(source.fps, kbps=kbps)
        source.frame_step = encoder.frame_step  # as `nerfvc send` does
        if workers > 1:  # as `nerfvc receive` does by default on 2+ cores
            renderer = RendererPool(workers, adapters.make_renderer, model, 1, True, size)
        else:
            renderer = ProcessRenderer(adapters.make_renderer, model, None, True, size)
        label = f"model, {workers} render worker(s)" + (", tracked before the call" if pretracked else "")
        return source, encoder, ReceiverPipeline.from_model_dir(model).packet_decoder, renderer, label
    frames, code, pose, fps = clip_data  # type: ignore[misc]
    source = ArraySource(code, pose, fps, frames)
    return source, StandInEncoder(code.shape[1]), StandInDecoder, DebugDiscRenderer(), "stand-ins"


def _fps(stamps: list[float]) -> float | None:
    """Frames per second between the first and the last render (None with fewer than two)."""
    if len(stamps) < 2:
        return None
    return round((len(stamps) - 1) / (stamps[-1] - stamps[0]), 2)


async def run_size(
    size: int, args: argparse.Namespace, clip_data: tuple | None, chromium: str | None, delay: float = 0.0
) -> dict:
    """One call at render size ``size``; ``delay`` (s) emulates a slow renderer (stand-ins only)."""
    workers = args.render_workers if args.model else 1
    source, encoder, factory, renderer, pieces = _pieces(
        args.model,
        str(args.clip),
        clip_data,
        workers,
        args.kbps if args.model else None,
        args.pretracked,
        size,
    )
    if delay and isinstance(renderer, DebugDiscRenderer):
        renderer.delay = delay
        pieces += f" (render delayed {1000 * delay:.0f} ms per frame)"
    adapt = getattr(args, "adapt", True)
    rx = Receiver(
        factory,
        renderer,
        size=size,
        render_threads=workers,
        adapt_size=adapt,
        interpolate=not args.no_interpolate,
    )
    port = await rx.start()
    classic = None if args.no_classic else ClassicEncoder("x265", 100, source.fps, 256)
    cfg = SenderConfig(f"http://127.0.0.1:{port}", rx.token, mark_every=1)
    browser = None
    shown0 = 0
    try:
        if chromium:
            browser = await Browser(chromium).__aenter__()
            await browser.goto(f"http://127.0.0.1:{port}/?token={rx.token}")
            await browser.wait_for("document.getElementById('status').textContent === 'connected'")
        t0 = time.monotonic()
        report = await Sender(source, encoder, cfg, classic).run()
        elapsed = time.monotonic() - t0
        await asyncio.sleep(0.5)
        deadline = time.monotonic() + 60  # a slow (NeRF) renderer: let the frame in flight finish
        while rx.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.2)
        if browser:
            shown0 = await browser.eval("window.nerfvcFramesShown[0]")
        s = rx.summary()
    finally:
        if browser:
            await browser.__aexit__(None, None, None)
        await rx.stop()
        close = getattr(renderer, "close", None)
        if close is not None:
            close()
    sent = report.summary()
    media_s = report.media_seconds  # rates per second of the media covered
    out = {
        "size": size,
        "pieces": pieces,
        "renderer": s["renderer"],
        "frames_sent": report.frames,
        "frames_delivered": s.get("delivered"),
        "frames_rendered": s["frames_rendered"],
        "frames_interpolated": s["frames_interpolated"],
        "frames_skipped_by_sender": getattr(source, "skipped", 0),
        "camera_frames": getattr(source, "camera_frames", report.frames),
        "frame_step": getattr(encoder, "frame_step", 1),
        "target_kbps": args.kbps if args.model else None,
        "render_fps": _fps(rx.render_stamps),
        "source_fps": report.fps,
        "call_s": round(elapsed, 2),
        "render_ms_p50": s["render_ms_p50"],
        "render_size_adapts": adapt,
        "classic_panel": not args.no_classic,
        "render_size_mean": s["render_size_mean"],
        "frames_below_display": s["frames_below_display"],
        "latency_capture_to_rendered_ms_p50": s["latency_p50_ms"],
        "latency_capture_to_rendered_ms_p95": s["latency_p95_ms"],
        "viewer_round_trip_ms_p50": s["view_rtt_p50_ms"],
        "classic_x265_latency_capture_to_decoded_ms_p50": s["classic_latency_p50_ms"],
        "payload_kbps": sent.get("payload_kbps"),
        "wire_kbps_estimated": sent.get("wire_kbps"),
        "bits_per_frame": sent.get("bits_per_frame"),
        "link_kbps_measured_all_channels": round(8 * report.link_bytes_sent / media_s / 1000, 2),
        "classic_payload_kbps": sent.get("classic_payload_kbps"),
    }
    if browser is not None:
        out["frames_displayed"] = shown0
        out["displayed_fps"] = round(out["render_fps"] * shown0 / max(s["frames_rendered"], 1), 2)
        if s["latency_p50_ms"] is not None and s["view_rtt_p50_ms"] is not None:
            out["latency_capture_to_displayed_ms_p50"] = round(
                s["latency_p50_ms"] + s["view_rtt_p50_ms"] / 2, 2
            )
    return out


async def main_async(args: argparse.Namespace) -> dict:
    use_loopback_only()
    clip_data = clip_features(str(args.clip))
    chromium = None if args.no_browser else find_chromium()
    runs = []
    stand_ins = argparse.Namespace(**{**vars(args), "model": None})
    for size in args.sizes if args.stand_ins else []:
        runs.append(await run_size(size, stand_ins, clip_data, chromium))
        print(json.dumps(runs[-1]), flush=True)
    if args.slow_render_ms > 0 and args.stand_ins:  # latest-wins: a renderer slower than the frame rate
        runs.append(await run_size(256, stand_ins, clip_data, chromium, args.slow_render_ms / 1000))
        print(json.dumps(runs[-1]), flush=True)
    for mode in args.modes.split(",") if args.model else []:
        model_args = argparse.Namespace(**{**vars(args), "adapt": mode == "adapt"})
        for size in args.sizes:
            runs.append(await run_size(size, model_args, None, chromium))
            print(json.dumps(runs[-1]), flush=True)
    return {
        "benchmark": "live",
        "clip": os.path.relpath(args.clip, ROOT),
        "model": args.model,
        "viewer": "headless chromium" if chromium else None,
        "machine": machine_record() | {"python": platform.python_version()},
        "note": (
            "runs with pieces='stand-ins' use a toy codec, block-mean features and the DEBUG disc renderer: "
            "they measure transport/worker/viewer overhead only, not NeRF rendering; pieces='model' runs use "
            "the real tracker, codec and NeRF renderer of --model"
        ),
        "model_note": args.model_note,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "runs": runs,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="MODEL directory: also run the real pieces (stand-in runs always)")
    p.add_argument("--model-note", help="free text stored in the JSON about the model used")
    p.add_argument("--clip", type=Path, default=CLIP)
    p.add_argument("--render-workers", type=int, default=2, help="render processes (with --model)")
    p.add_argument("--sizes", default="128,256")
    p.add_argument("--kbps", type=float, help="target feature rate of the model's sender (live rate control)")
    p.add_argument("--no-browser", action="store_true")
    p.add_argument(
        "--no-interpolate", action="store_true", help="receiver shows only the coded frames (frame step > 1)"
    )
    p.add_argument("--no-classic", action="store_true", help="no classic x265 panel beside nerfvc")
    p.add_argument(
        "--modes",
        default="adapt",
        help="model runs per size: 'adapt' (render below the display size when behind), 'fixed', or both",
    )
    p.add_argument(
        "--pretracked",
        action="store_true",
        help="model runs: track the clip before the call and replay it (a sender on another machine)",
    )
    p.add_argument("--stand-ins", action=argparse.BooleanOptionalAction, default=True, help="stand-in runs")
    p.add_argument(
        "--slow-render-ms", type=float, default=120, help="extra stand-in run, renderer this slow (0: off)"
    )
    p.add_argument("-o", "--output", type=Path, default=ROOT / "benchmarks" / "results" / "live.json")
    args = p.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    if not set(args.modes.split(",")) <= {"adapt", "fixed"}:
        p.error(f"--modes: 'adapt', 'fixed' or both, got {args.modes!r}")
    result = asyncio.run(main_async(args))
    write_json_atomic(args.output, result)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
