"""CLI: ``nerfvc encode``, ``nerfvc decode`` (through the MODEL's sender / receiver pipeline) and
``nerfvc codec-fit``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from nerfvc.argtypes import int_in, non_negative, number_in, positive
from nerfvc.codec.fit import fit_codec
from nerfvc.codec.framing import HEADER_SIZE, MAX_FPS, MAX_FRAME_STEP, MAX_KEYINT, MIN_FPS, StreamHeader
from nerfvc.codec.tables import CODEC_FILE, index_from_step, step_from_index
from nerfvc.errors import EXIT_PARTIAL, BitstreamError, InputError
from nerfvc.face.model import load_face_model
from nerfvc.features import load_features, model_inputs, save_features
from nerfvc.fsutil import write_bytes_atomic
from nerfvc.guard.fallback import GuardConfig
from nerfvc.modeldir import MANIFEST, finalize_model_dir, read_model_manifest
from nerfvc.pipeline.judge import JUDGE_SIZE
from nerfvc.pipeline.pose_refine import PoseRefineConfig
from nerfvc.pipeline.receiver import ReceiverPipeline
from nerfvc.pipeline.sender import SenderPipeline, judges_frame_step

FILE_FRAMES_PER_PACKET = 4  # files are not latency-bound: 4 frames share one packet's framing


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``encode``, ``decode`` and ``codec-fit``."""
    p = sub.add_parser("encode", help="code a video or a features file into a .nvc stream")
    p.add_argument("video", nargs="?", help="input video (tracked with the model's face model)")
    p.add_argument("--features", help="features .npz (expression (N,E), pose (N,12)) instead of a video")
    p.add_argument("--model", required=True, help="MODEL directory (codec.json, fingerprint)")
    p.add_argument("-o", "--output", required=True, help="output stream (.nvc)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--kbps", type=positive, help="target rate; picks the finest step that fits (bisection)")
    g.add_argument("--step", type=positive, help="quality multiplier of the per-dim steps (default 1)")
    p.add_argument(
        "--keyint", type=int_in(1, MAX_KEYINT), help="keyframe interval in coded frames (default 2 s)"
    )
    p.add_argument(
        "--frame-step",
        type=int_in(1, MAX_FRAME_STEP),
        help="code every m-th frame (the receiver interpolates); default: chosen with --kbps, else 1",
    )
    p.add_argument(
        "--frame-step-by",
        choices=["render", "rule"],
        default="render",
        help="with --kbps and a VIDEO: choose the frame step by rendering each one the rate allows and "
        "keeping the closest to the video's frames (render, default), or by the step size alone (rule; "
        "always so for --features); docs/bitstream.md",
    )
    p.add_argument(
        "--fps",
        type=number_in(MIN_FPS, MAX_FPS),
        help="frame rate (default: from the features' timestamps, else 25)",
    )
    p.add_argument(
        "--guard",
        action="store_true",
        help="run the quality guard (docs/guard.md): render each decoded frame small, compare it with the "
        "video frame, and add fallback pictures where the render would be worse (their bits count)",
    )
    p.add_argument(
        "--refine",
        type=int_in(0),
        default=0,
        metavar="N",
        help="refine each frame's expression against the video frame with N L-BFGS iterations through the "
        "model's NeRF (analysis by synthesis, docs/face.md; 10 iterations took 1.6–4.2 s per frame on one "
        "core of a Sapphire Rapids Xeon with bf16; 0 = send the tracker's fits, default)",
    )
    p.add_argument(
        "--refine-pose",
        type=int_in(0),
        default=None,
        metavar="N",
        help="refine each frame's head pose against the video frame with N Levenberg-Marquardt steps on the "
        'model\'s own 96-px render (analysis by synthesis, docs/face.md "Refining the pose at the sender"; '
        f"default {PoseRefineConfig.iterations} with a VIDEO; 0 = send the tracker's poses)",
    )
    p.add_argument("--mode", choices=["nerfvc", "paper"], default="nerfvc", help="paper = fp16 + zstd")
    p.add_argument(
        "--rdoq",
        type=non_negative,
        default=0.0,
        help="rate-distortion optimized quantization strength (e.g. 0.3; 0 = off)",
    )
    p.add_argument(
        "--frames-per-packet",
        type=int,
        default=None,
        help="pack G frames per packet (less framing; a live sender would add G-1 frames of latency). "
        "Default 4 for files (1 in paper mode)",
    )
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser(
        "decode",
        help="decode a .nvc stream to features (.npz) or a rendered video (.mp4); exit 3: frames concealed",
    )
    p.add_argument("stream", help="input stream (.nvc)")
    p.add_argument("--model", required=True, help="MODEL directory the stream was made for")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="output: .npz features (expression, pose, valid; + code with an embedding) or .mp4 video",
    )
    p.add_argument("--size", default="512", help=".mp4 only: S (longer side) or WxH; default 512")
    p.add_argument(
        "--no-references",
        action="store_true",
        help=".mp4 only: render the NeRF alone, without the model's reference frames' texture",
    )
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("codec-fit", help="fit codec tables on training features into a MODEL directory")
    p.add_argument("features", help="training features .npz")
    p.add_argument("-o", "--output", required=True, help="MODEL directory (codec.json is written there)")
    p.add_argument("--predictor", choices=["auto", "diag", "full"], default="auto")
    p.add_argument("--train-fraction", type=float, default=1.0, help="fit on the first fraction of frames")
    p.add_argument(
        "--face-model", help="dir with face_model.safetensors (default: the MODEL dir, if present)"
    )
    p.set_defaults(func=cmd_codec_fit)


def cmd_encode(args: argparse.Namespace) -> int:
    if (args.video is None) == (args.features is None):
        raise InputError("give either a VIDEO or --features F.npz")
    if args.guard and args.video is None:
        raise InputError("--guard compares renders with the video's frames: give a VIDEO, not --features")
    if args.guard and args.mode == "paper":
        raise InputError("--guard needs --mode nerfvc (paper streams have no fallback packets)")
    if args.refine and args.video is None:
        raise InputError("--refine compares renders with the video's frames: give a VIDEO, not --features")
    if args.refine_pose and args.video is None:
        raise InputError(
            "--refine-pose compares renders with the video's frames: give a VIDEO, not --features"
        )
    from nerfvc.pipeline.refine import RefineConfig  # torch: only when encoding

    guard = GuardConfig() if args.guard else None
    refine = RefineConfig(iterations=args.refine)
    steps = PoseRefineConfig.iterations if args.refine_pose is None else args.refine_pose
    refine_pose = PoseRefineConfig(iterations=steps if args.video is not None else 0)
    sender = SenderPipeline.from_model_dir(args.model)
    options = {
        "kbps": args.kbps,
        "keyframe_interval": args.keyint,
        "mode": args.mode,
        "step_index": index_from_step(args.step) if args.step is not None else None,
        "rdoq": args.rdoq,
        "frames_per_packet": args.frames_per_packet
        or (1 if args.mode == "paper" else FILE_FRAMES_PER_PACKET),
        "frame_step": args.frame_step,
    }
    # the frame step chosen by rendering against the video's frames (pipeline/judge.py)
    judged = args.video is not None and args.frame_step_by == "render" and judges_frame_step(options)
    refine_s = 0.0  # seconds a frame spent refining the features by rendering
    if args.features:
        clip = sender.read_features(args.features)
    else:
        keep = max(
            guard.picture_size if guard else 0,
            refine.size if args.refine else 0,
            refine_pose.size if refine_pose.iterations else 0,
            JUDGE_SIZE if judged else 0,
        )
        clip = sender.track_video(args.video, keep_size=keep or None)
        if warning := clip.warning():
            print(f"warning: {warning}", file=sys.stderr)
        if args.refine or refine_pose.iterations:
            t = time.perf_counter()
            clip = sender.refine_clip(clip, refine, pose=refine_pose)
            refine_s = (time.perf_counter() - t) / max(len(clip.pose), 1)
    fps = round(args.fps or clip.fps or 25.0, 3)
    if not MIN_FPS <= fps <= MAX_FPS:
        raise InputError(f"frame rate {fps:g} fps is outside {MIN_FPS:g}..{MAX_FPS:g} (give --fps)")
    t0 = time.perf_counter()
    data = sender.encode_stream(clip.features, clip.pose, fps, clip.frames if judged else None, **options)
    n = len(clip.pose)
    bits = (len(data) - HEADER_SIZE) * 8 / max(n, 1)  # packets (framing, keyframes) without the header
    if args.kbps is not None and bits * fps / 1000 > args.kbps:
        raise InputError(
            f"--kbps {args.kbps:g} is out of reach: this clip codes at {bits * fps / 1000:.3f} kbps at the "
            "coarsest setting (nothing written)"
        )
    # step index of the first keyframe (byte 5 of the first packet, signed)
    k = (
        int.from_bytes(data[HEADER_SIZE + 5 : HEADER_SIZE + 6], "big", signed=True)
        if args.mode == "nerfvc"
        else 0
    )
    how = f"step x{step_from_index(k):.3f}" if args.mode == "nerfvc" else "paper mode"
    frame_step = StreamHeader.from_bytes(data[:HEADER_SIZE]).frame_step
    how += f", 1 frame in {frame_step} coded" if frame_step > 1 else ""
    how += " (frame step chosen by rendering)" if judged else ""
    how += f", features refined by rendering at {refine_s:.2f} s/frame" if refine_s else ""
    if guard is not None:  # --kbps is the features' rate; the fallback pictures come on top
        assert clip.frames is not None
        data, g = sender.guard_stream(data, clip.frames, guard)
        how += f"; guard: {g['pictures']} fallback pictures, {g['fallback_kbps']:.3f} kbps of the total"
        bits = (len(data) - HEADER_SIZE) * 8 / max(n, 1)
    dt = time.perf_counter() - t0
    write_bytes_atomic(args.output, data)
    print(
        f"{args.output}: {n} frames, {len(data)} bytes, {bits:.1f} bits/frame, {bits * fps / 1000:.3f} kbps "
        f"at {fps:g} fps ({how}, {dt / max(n, 1) * 1e6:.0f} us/frame)"
    )
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    receiver = ReceiverPipeline.from_model_dir(args.model, references=not args.no_references)
    try:
        data = Path(args.stream).read_bytes()
    except FileNotFoundError as e:
        raise InputError(f"{args.stream}: file not found") from e
    dec = receiver.decode_stream(data)
    rep = dec.report
    if not rep.decoded:
        raise BitstreamError(f"{args.stream}: nothing decodable ({rep.summary()}); nothing written")
    print(f"{args.stream}: {rep.summary()}")
    if str(args.output).lower().endswith(".mp4"):
        print(receiver.write_video(args.output, dec.expression, dec.pose, args.size, dec.fps, rep.fallback))
    else:
        extra = {"code": dec.code} if receiver.codec.embedding is not None else {}
        save_features(args.output, expression=dec.expression, pose=dec.pose, valid=dec.valid, **extra)
        print(f"wrote {len(dec.pose)} frames of features to {args.output}")
        if rep.fallback:
            print(f"note: the stream's {len(rep.fallback)} fallback packets are shown only in a decoded .mp4")
    if rep.concealed:  # written, but not every frame is what was sent: partial success
        print(f"nerfvc decode: {rep.concealed} of {len(dec.pose)} frames concealed (exit {EXIT_PARTIAL})")
        return EXIT_PARTIAL
    return 0


def cmd_codec_fit(args: argparse.Namespace) -> int:
    feats = load_features(args.features)
    n = len(feats["pose"])
    m = max(2, round(n * args.train_fraction))
    valid = feats.get("valid")
    out = Path(args.output)
    face = load_face_model(args.face_model or out)
    if args.face_model and face is None:
        raise InputError(f"{args.face_model}: no face_model.safetensors with mean and basis")
    v = None if valid is None else valid[:m]
    expr, pose = model_inputs(feats, out), feats["pose"][:m]
    tables = fit_codec(expr[:m], pose, v, predictor=args.predictor, face_model=face)
    from nerfvc.embed.train import EMBED_FILE

    if (out / EMBED_FILE).exists():  # the model codes its embedding's code: fit the tables on the codes
        from nerfvc.embed.train import (
            encode_expressions,
            expansion_matrix,
            fit_code_tables,
            landmark_tau,
            load_embedding,
        )

        emb = load_embedding(out)
        code = encode_expressions(emb, expr)[:m]  # whole clip, so early frames see their history
        tau = landmark_tau(face, tables) if face is not None else None
        tables = fit_code_tables(code, pose, v, face, expansion_matrix(emb), tau, predictor=args.predictor)
    out.mkdir(parents=True, exist_ok=True)
    tables.save(out / CODEC_FILE)
    msg = f"{out / CODEC_FILE}: fitted on {m} frames ({tables.predictor} predictor"
    msg += f", {tables.info['steps']} steps)"
    if (out / MANIFEST).exists():  # already finalized: refresh the manifest and fingerprint
        old = read_model_manifest(out, verify=False)
        extra = {k: v for k, v in old.items() if k not in ("format", "version", "fingerprint", "files")}
        msg += f"; model fingerprint is now {finalize_model_dir(out, extra)}"
    print(msg)
    return 0
