"""The pipeline layer: a MODEL directory's two ends, above ``codec``, ``face``, ``embed`` and ``render``.

- :class:`SenderPipeline` — frames (a video, a camera, or a features file) → model features (tracking, crop
  to the camera's aspect, torso shift, the lost-frame policy) → the code sent (the expression embedding
  applied when the model has one) → ``.nvc`` packets (whole streams or per frame for a live call).
- :class:`ReceiverPipeline` — packets or streams → decoded code → the NeRF's features (the embedding's
  expansion) → frames at any size.

Both are built from a MODEL directory in one call (``from_model_dir``); ``nerfvc encode`` / ``decode``
(:mod:`nerfvc.pipeline.commands`), ``nerfvc eval``, the live call and the benchmarks use them.
"""

from nerfvc.pipeline.model import ModelCodec
from nerfvc.pipeline.receiver import DecodedFeatures, DecodedStream, FeatureDecoder, ReceiverPipeline
from nerfvc.pipeline.sender import FeatureClip, FeatureEncoder, FrameTracker, SenderPipeline, TrackedFrame

__all__ = [
    "DecodedFeatures",
    "DecodedStream",
    "FeatureClip",
    "FeatureDecoder",
    "FeatureEncoder",
    "FrameTracker",
    "ModelCodec",
    "ReceiverPipeline",
    "SenderPipeline",
    "TrackedFrame",
]
