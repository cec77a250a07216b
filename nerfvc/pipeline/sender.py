"""The sending end of a MODEL: frames → model features → code → ``.nvc`` packets.

One :class:`SenderPipeline` per MODEL directory owns its face tracker, torso dims, optional embedding and
codec tables + fingerprint. ``nerfvc encode``, ``nerfvc eval``, the live sender and the benchmarks all turn
frames into features and features into packets through it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nerfvc.codec.encoder import StreamEncoder, encode_stream, insert_fallback, live_rate
from nerfvc.errors import FaceError, InputError
from nerfvc.features import load_features, model_input, model_inputs
from nerfvc.guard.fallback import GuardConfig
from nerfvc.guard.picture import shrink
from nerfvc.guard.sequence import guard_packets
from nerfvc.modeldir import model_torso_dims
from nerfvc.pipeline.model import ModelCodec

if TYPE_CHECKING:
    from nerfvc.face.tracker import FaceTracker
    from nerfvc.pipeline.pose_refine import PoseRefineConfig
    from nerfvc.pipeline.receiver import ReceiverPipeline
    from nerfvc.pipeline.refine import RefineConfig
    from nerfvc.render.renderer import Renderer

MAX_LOST_FRACTION = 0.5  # a clip fails when no single face is tracked in more than this fraction of frames
CLIP_MAX_FACES = 2  # whole clips track up to 2 faces, so that a frame showing a second face fails


@dataclass
class TrackedFrame:
    """One frame's model features, as the tracker saw them."""

    features: np.ndarray  # (D,) float32: expression (E,), then the torso shift (T,) when the model takes one
    pose: np.ndarray  # (12,) float32: [R row-major | t]
    ok: bool  # False when no single face was found: features and pose then repeat the last tracked frame's


class FrameTracker:
    """The MODEL's face tracker, one frame at a time: the frame is cropped to the model camera's aspect,
    tracked, and the torso shift appended when the model takes one (:func:`nerfvc.features.model_input`)."""

    def __init__(self, tracker: FaceTracker, torso_dims: int) -> None:
        self.tracker = tracker
        self.torso_dims = torso_dims

    def track(self, rgb: np.ndarray, timestamp: float | None = None) -> TrackedFrame:
        """Features of the uint8 RGB frame ``rgb`` (H, W, 3) captured at ``timestamp`` (s)."""
        f = self.tracker.track(rgb, timestamp)
        features = model_input(f.expression, f.torso, self.torso_dims)
        return TrackedFrame(features, np.asarray(f.pose, np.float32), bool(f.ok))

    def crop(self, rgb: np.ndarray) -> np.ndarray:
        """``rgb`` (H, W, 3) cropped to the model camera's aspect ratio, as :meth:`track` sees it."""
        return self.tracker.frame_for_camera(rgb)

    def __enter__(self) -> FrameTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.tracker.__exit__(*exc)  # releases the face mesh


@dataclass
class FeatureClip:
    """A clip's model features, tracked from frames or read from a features file."""

    source: str  # the video or features file (for messages)
    features: np.ndarray  # (N, D) float32: expression, then the torso shift when the model takes one
    pose: np.ndarray  # (N, 12) float32
    tracked: np.ndarray  # (N,) bool: a single face was tracked (False: the frame repeats a tracked one)
    fps: float | None  # from the frames' timestamps; None when they do not tell
    frames: np.ndarray | None = None  # (N, h, w, 3) uint8 cropped to the camera's aspect, when kept

    def warning(self) -> str | None:
        """One line naming the frames without a tracked face, or None when every frame was tracked."""
        lost = np.flatnonzero(~self.tracked).tolist()
        if not lost:
            return None
        shown = ", ".join(map(str, lost[:10])) + (", ..." if len(lost) > 10 else "")
        return (
            f"{self.source}: no single face in {len(lost)} of {len(self.tracked)} frames ({shown}); "
            "they repeat the nearest tracked frame"
        )


def _fps(timestamps: np.ndarray | list[float] | None) -> float | None:
    """Frame rate from timestamps (s): 1 / their median step, None without a positive one."""
    if timestamps is None or len(timestamps) < 2:
        return None
    step = float(np.median(np.diff(timestamps)))
    return 1 / step if step > 0 else None


def judges_frame_step(options: dict[str, Any]) -> bool:
    """Whether :meth:`SenderPipeline.encode_stream` with these ``options`` (and the camera frames) chooses
    the frame step by rendering: a ``kbps`` target, no fixed ``frame_step``, the nerfvc mode."""
    return (
        options.get("kbps") is not None
        and options.get("frame_step") is None
        and options.get("mode", "nerfvc") == "nerfvc"
    )


class SenderPipeline:
    """A MODEL's sender: frames (or a video, or a features file) → model features → the code the codec
    sends (the embedding's code when the model has one) → packets.

    ``codec`` holds the tables, fingerprint and embedding; ``torso_dims`` is how many torso-shift values
    follow the expression in the model's features (0, 2 or 4).
    """

    def __init__(self, model_dir: str | Path, codec: ModelCodec, torso_dims: int = 0) -> None:
        self.model_dir = Path(model_dir)
        self.codec = codec
        self.torso_dims = torso_dims

    @classmethod
    def from_model_dir(cls, model: str | Path) -> SenderPipeline:
        """The sender of a MODEL directory (files verified against ``model.json``)."""
        return cls(model, ModelCodec.from_model_dir(model), model_torso_dims(model))

    # -- frames → features -------------------------------------------------------------------------------
    def tracker(self, max_num_faces: int = 1) -> FrameTracker:
        """A new tracker of the model's face (``max_num_faces`` ≥ 2: a frame with a second face fails)."""
        from nerfvc.face.tracker import FaceTracker  # mediapipe: loaded only when frames are tracked

        tracker = FaceTracker.from_dir(self.model_dir, max_num_faces=max_num_faces)
        return FrameTracker(tracker, self.torso_dims)

    def track_clip(
        self,
        frames: Iterable[tuple[np.ndarray, float]],
        source: str,
        keep_frames: bool = False,
        keep_size: int | None = None,
    ) -> FeatureClip:
        """Track a whole clip of ``(rgb (H, W, 3) uint8, t)`` frames → features, with the lost-frame policy.

        :class:`FaceError` unless a single face is tracked in most frames (none, or two, fail a frame);
        failed frames hold the nearest earlier tracked frame's features (the first tracked frame's before
        it): :meth:`FeatureClip.warning` names them. ``keep_frames`` keeps the frames cropped to the
        camera's aspect (the reference an evaluation scores against), shrunk to ``keep_size`` px on the
        longer side when given (what the quality guard needs of them).
        """
        features, pose, ok, times, kept = [], [], [], [], []
        with self.tracker(max_num_faces=CLIP_MAX_FACES) as tracker:
            for rgb, t in frames:
                f = tracker.track(rgb, t)
                features.append(f.features)
                pose.append(f.pose)
                ok.append(f.ok)
                times.append(float(t))
                if keep_frames:
                    crop = tracker.crop(rgb)
                    kept.append(crop if keep_size is None else shrink(crop, keep_size))
        if not features:
            raise InputError(f"{source}: no frames")
        n, good = len(ok), np.flatnonzero(ok)
        if len(good) == 0:
            raise FaceError(
                f"{source}: no single face found in any of {n} frames (no face, or more than one)"
            )
        if n - len(good) > MAX_LOST_FRACTION * n:
            raise FaceError(f"{source}: a single face was tracked in only {len(good)} of {n} frames")
        first = int(good[0])
        features[:first] = [features[first]] * first
        pose[:first] = [pose[first]] * first
        return FeatureClip(
            source,
            np.stack(features),
            np.stack(pose),
            np.asarray(ok, bool),
            _fps(times),
            np.stack(kept) if keep_frames else None,
        )

    def track_video(self, path: str | Path, keep_size: int | None = None) -> FeatureClip:
        """Track every frame of a video file (:meth:`track_clip`); with ``keep_size``, keep the frames
        (cropped, shrunk to that longer side)."""
        from nerfvc.io.video import read_frames

        return self.track_clip(read_frames(path), str(path), keep_size is not None, keep_size)

    def read_features(self, path: str | Path) -> FeatureClip:
        """A features ``.npz`` (expression (N,E), pose (N,12), optional torso, valid, timestamps) → the
        model's features (:func:`nerfvc.features.model_inputs`)."""
        feats = load_features(path)
        n = len(feats["pose"])
        valid = np.asarray(feats.get("valid", np.ones(n, bool)), bool)
        fps = _fps(feats.get("timestamps"))
        return FeatureClip(str(path), model_inputs(feats, self.model_dir), feats["pose"], valid, fps)

    def refine_clip(
        self,
        clip: FeatureClip,
        config: RefineConfig | None = None,
        renderer: Renderer | None = None,
        progress: Callable[[int, int], None] | None = None,
        pose: PoseRefineConfig | None = None,
    ) -> FeatureClip:
        """The clip with each frame's head pose (``pose``), then its expression (``config``) refined against
        its kept frame by analysis by synthesis (:mod:`nerfvc.pipeline.pose_refine`,
        :mod:`nerfvc.pipeline.refine`; a stage runs when its config is given with iterations; ``renderer``:
        the model's, when the caller has it loaded)."""
        frames = clip.frames
        if frames is None:
            raise InputError(f"{clip.source}: refining the features needs the frames (track a video)")
        from nerfvc.pipeline.pose_refine import PoseRefiner
        from nerfvc.pipeline.refine import FeatureRefiner
        from nerfvc.render.renderer import Renderer

        renderer = renderer or Renderer.from_model_dir(self.model_dir)
        if pose is not None and pose.iterations:
            refined = PoseRefiner(renderer, pose).refine_clip(frames, clip.features, clip.pose, progress)
            clip = replace(clip, pose=refined)
        if config is not None and config.iterations:
            refiner = FeatureRefiner(renderer, config)
            clip = replace(clip, features=refiner.refine_clip(frames, clip.features, clip.pose, progress))
        return clip

    # -- features → code → packets -----------------------------------------------------------------------
    def to_code(self, features: np.ndarray) -> np.ndarray:
        """A clip's features ``(N, D)`` → the codes sent ``(N, C)`` (the embedding applied, if any)."""
        return self.codec.to_code(features)

    def encode_stream(
        self,
        features: np.ndarray,
        pose: np.ndarray,
        fps: float,
        camera: np.ndarray | None = None,
        receiver: ReceiverPipeline | None = None,
        **options: Any,
    ) -> bytes:
        """Code a clip's features ``(N, D)`` and poses ``(N, 12)`` into a whole ``.nvc`` stream (a wink kept
        through the quantizer); ``options`` are :func:`nerfvc.codec.encode_stream`'s (``kbps``,
        ``step_index``, ``frames_per_packet``, ...). With ``camera`` (N,H,W,3) uint8, the clip's frames as
        the model camera crops them, a ``kbps`` target and no ``frame_step``, the frame step is chosen by
        rendering (:class:`~nerfvc.pipeline.judge.RenderJudge`, with ``receiver`` if given)."""
        c = self.codec
        code = self.to_code(features)
        judge = None
        if camera is not None and judges_frame_step(options):
            if len(camera) != len(pose):
                raise InputError(f"{len(camera)} camera frames for {len(pose)} frames of features")
            from nerfvc.pipeline.judge import RenderJudge
            from nerfvc.pipeline.receiver import ReceiverPipeline

            fixed = {k: v for k, v in options.items() if k not in ("kbps", "frame_step", "step_index")}

            def encode(frame_step: int, step_index: int) -> bytes:
                return encode_stream(
                    c.tables, c.fingerprint, code, pose, fps=fps, eyes=c.eyes,
                    frame_step=frame_step, step_index=step_index, **fixed,
                )  # fmt: skip

            judge = RenderJudge(receiver or ReceiverPipeline(self.model_dir, self.codec), camera, encode)
        return encode_stream(
            c.tables, c.fingerprint, code, pose, fps=fps, eyes=c.eyes, judge=judge, **options
        )

    def guard_stream(
        self, data: bytes, camera: np.ndarray, config: GuardConfig | None = None
    ) -> tuple[bytes, dict]:
        """The quality guard over a coded clip (docs/guard.md), as a classic encoder runs its own decoder:
        decode ``data`` as the receiver will, render each camera frame's decoded features at the guard's
        check size, compare with ``camera`` (N,H,W,3) uint8 (the frames cropped to the model camera, at
        least the picture size) → the stream with the fallback packets inserted, and the guard's summary
        (:func:`nerfvc.guard.sequence.guard_packets`)."""
        from nerfvc.pipeline.receiver import ReceiverPipeline

        receiver = ReceiverPipeline(self.model_dir, self.codec)
        decoded = receiver.decode_stream(data)
        packets, info = guard_packets(receiver, camera, decoded.expression, decoded.pose, decoded.fps, config)
        return insert_fallback(data, self.codec.fingerprint, packets), info

    def stream_encoder(self, fps: float, frame_step: int | None = None, **options: Any) -> FeatureEncoder:
        """A per-frame encoder for a live call at camera rate ``fps``; ``options`` are
        :class:`~nerfvc.codec.StreamEncoder`'s (``kbps`` for live rate control, ``keyframe_interval``, ...).
        ``frame_step`` m: the caller sends every m-th camera frame (its ``frame_step`` says which). With
        ``kbps``, m (unless given) and the starting step come from the tables' expected rate
        (:func:`~nerfvc.codec.encoder.live_rate`); without it m = 1. A model with an expression embedding
        sends every frame: its causal window was trained on consecutive camera frames."""
        c = self.codec
        if c.embedding is not None:
            if frame_step not in (None, 1):
                raise InputError("a model with an expression embedding sends every frame (frame step 1)")
            frame_step = 1
        kbps = options.get("kbps")
        if kbps and "step_index" not in options and "step" not in options:
            frame_step, options["step_index"] = live_rate(c.tables, kbps, fps, frame_step)
        encoder = StreamEncoder(
            c.tables, c.fingerprint, fps=fps, frame_step=frame_step or 1, eyes=c.eyes, **options
        )
        return FeatureEncoder(encoder, c)


class FeatureEncoder:
    """Live sender half (a :class:`nerfvc.live.interfaces.PacketEncoder`): one frame's model features →
    one packet, through the embedding's causal window when the model has one."""

    def __init__(self, encoder: StreamEncoder, codec: ModelCodec) -> None:
        self.encoder = encoder
        self.codec = codec
        self._code = codec.causal_coder()

    def header(self) -> bytes:
        """The stream header (sent at call start)."""
        return self.encoder.header()

    @property
    def frame_step(self) -> int:
        """Send every ``frame_step``-th camera frame (the source skips the others before tracking)."""
        return self.encoder.frame_step

    def encode(self, features: np.ndarray, pose: np.ndarray, force_key: bool = False) -> bytes:
        """Code one frame: features ``(D,)``, pose ``(12,)`` → one packet."""
        return self.encoder.encode(self._code(features), pose, force_key)

    def fallback(self, index: int, alpha: int, picture: bytes = b"") -> bytes:
        """A fallback-picture packet of the quality guard (:meth:`nerfvc.codec.StreamEncoder.fallback`)."""
        return self.encoder.fallback(index, alpha, picture)

    def request_keyframe(self) -> None:
        """Make the next packet a keyframe."""
        self.encoder.request_keyframe()

    def adapt(self, packet_bits: float) -> None:
        """Live rate control (:meth:`nerfvc.codec.StreamEncoder.adapt`)."""
        self.encoder.adapt(packet_bits)

    @property
    def last_reconstruction(self) -> tuple[np.ndarray, np.ndarray] | None:
        """What the receiver decodes for the last frame: features ``(D,)`` (the code expanded by the
        embedding, if any) and pose ``(12,)``."""
        rec = self.encoder.last_reconstruction
        if rec is None:
            return None
        return self.codec.to_expression(rec[0][None])[0], rec[1]
