"""Range coding of one frame's quantization indices with integer prediction (see docs/bitstream.md).

Per dimension ``i`` (pose dims first, then code dims) the decoder forms an integer prediction
``mu_i = c_i + sum_l sum_j W[l]_ij q_(t-1-l)_j + sum_{j<i} V_ij q_j`` in ``2**-FRAC_BITS`` step units (lags
missing after a keyframe repeat the oldest frame since it), rounds it to
``r_i``, and decodes ``d_i = q_i - r_i`` under a quantized Laplace model centred at ``mu_i/2**F - r_i``
(in [-0.5, 0.5)) with the table-derived scale. ``|d_i| >= ESCAPE`` is coded as the escape symbol ``±ESCAPE``
followed by two uniform 16-bit symbols holding ``|d_i| - ESCAPE``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import constriction
import numpy as np

from nerfvc.codec.entropy import laplace_bin_bits, laplace_bin_mean, step_scales
from nerfvc.codec.tables import FRAC_BITS, Q_LIMIT, CodecTables, PredictorTables
from nerfvc.errors import BitstreamError, InputError

ESCAPE = 255
_HALF = 1 << (FRAC_BITS - 1)
_LAPLACE = constriction.stream.model.QuantizedLaplace(-ESCAPE, ESCAPE)
_U16 = constriction.stream.model.Uniform(1 << 16)
C_LIMIT = 1 << 50
RECONSTRUCTIONS = ("mmse", "grid")  # decoded values: the bin's mean under the coded Laplace, or its centre


def check_reconstruction(name: str) -> str:
    """``name`` if it is one of :data:`RECONSTRUCTIONS`, else :class:`InputError`."""
    if name not in RECONSTRUCTIONS:
        raise InputError(f"reconstruction must be one of {', '.join(RECONSTRUCTIONS)}, got {name!r}")
    return name


@dataclass
class FrameModel:
    """Step-dependent constants of one predictor (derived from the tables with element-wise float ops)."""

    c: np.ndarray  # (K,) int64 constant in 2**-F step units
    W: np.ndarray  # (P, K, K) int64, one matrix per lag
    V: np.ndarray  # (K, K) int64 strictly lower
    b: np.ndarray  # (K,) float64 Laplace scale in step units
    has_prev: bool

    @classmethod
    def build(cls, tables: CodecTables, p: PredictorTables, step_index: int, has_prev: bool) -> FrameModel:
        s = tables.steps(step_index)
        c = np.clip(np.rint(p.c0 / s * (1 << FRAC_BITS)), -C_LIMIT, C_LIMIT).astype(np.int64)
        b = step_scales(p.sigma, p.gamma, s)
        return cls(c=c, W=p.W, V=p.V, b=b, has_prev=has_prev)

    def base_mu(self, hist: list[np.ndarray] | None) -> np.ndarray:
        """``c + sum_l W[l] q_(t-1-l)`` (K,) int64 from the previous decoded frames ``hist``, newest first."""
        if not self.has_prev:
            return self.c.copy()
        assert hist
        mu = self.c.copy()
        for lag, w in enumerate(self.W):
            mu += w @ hist[min(lag, len(hist) - 1)]
        return mu


def reconstruct_steps(model: FrameModel, q: np.ndarray, hist: list[np.ndarray] | None) -> np.ndarray:
    """Minimum-MSE values ``(..., K)`` in step units (from the training mean) of decoded indices
    ``q (..., K)`` (several candidates for one frame at once share ``hist``): each index moved within its bin
    towards the prediction the range coder used, by the mean of the coded Laplace over the bin
    (:func:`laplace_bin_mean`). Output only: predictions use ``q``."""
    mu = (model.base_mu(hist) + q @ model.V.T) / float(1 << FRAC_BITS)  # (..., K) prediction in step units
    return q + laplace_bin_mean(mu - q, model.b)


def reconstruct(
    tables: CodecTables,
    model: FrameModel,
    q: np.ndarray,
    hist: list[np.ndarray] | None,
    step_index: int,
    rule: str = "mmse",
) -> np.ndarray:
    """The decoder's output ``(..., K)`` float64 feature vectors for indices ``q (..., K)`` decoded with
    ``model`` after ``hist``, by a rule of :data:`RECONSTRUCTIONS` (encoder and decoder both call this)."""
    return tables.dequantize(reconstruct_steps(model, q, hist) if rule == "mmse" else q, step_index)


def push_history(hist: list[np.ndarray] | None, q: np.ndarray, lags: int = 2) -> list[np.ndarray]:
    """History after decoding ``q``: newest first, at most ``lags`` frames."""
    return [q, *(hist or [])][:lags]


def model_pair(tables: CodecTables, step_index: int) -> tuple[FrameModel, FrameModel]:
    """(keyframe model, delta-frame model) for a step index."""
    return (
        FrameModel.build(tables, tables.key, step_index, False),
        FrameModel.build(tables, tables.delta, step_index, True),
    )


def _split(mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-point means → (rounded integer r, fractional offset in [-0.5, 0.5))."""
    r = (mu + _HALF) >> FRAC_BITS
    return r, (mu - (r << FRAC_BITS)).astype(np.float64) / (1 << FRAC_BITS)


def _words(payload: bytes) -> np.ndarray:
    """Payload bytes → the uint32 words the range decoder reads (zero-padded, plus one zero word)."""
    padded = payload + b"\0" * ((-len(payload)) % 4 + 4)
    return np.frombuffer(padded, dtype=">u4").astype(np.uint32)


def _encode_symbols(sym: np.ndarray, frac: np.ndarray, b: np.ndarray, extra: dict[int, int]) -> bytes:
    enc = constriction.stream.queue.RangeEncoder()
    if not extra:
        enc.encode(sym.astype(np.int32), _LAPLACE, frac, b)
    else:
        for i in range(len(sym)):
            enc.encode(sym[i : i + 1].astype(np.int32), _LAPLACE, frac[i : i + 1], b[i : i + 1])
            if i in extra:
                e = extra[i]
                enc.encode(np.array([e >> 16, e & 0xFFFF], dtype=np.int32), _U16)
    return enc.get_compressed().astype(">u4").tobytes()


def _verify(payload: bytes, sym: np.ndarray, frac: np.ndarray, b: np.ndarray, extra: dict[int, int]) -> bool:
    """Does ``payload`` decode to ``sym`` (given the means the decoder will compute)?"""
    try:
        dec = constriction.stream.queue.RangeDecoder(_words(payload))
        if not extra:
            return bool(np.array_equal(dec.decode(_LAPLACE, frac, b), sym))
        for i in range(len(sym)):
            if dec.decode(_LAPLACE, frac[i : i + 1], b[i : i + 1])[0] != sym[i]:
                return False
            if i in extra:
                hi, lo = dec.decode(_U16, 2)
                if (int(hi) << 16 | int(lo)) != extra[i]:
                    return False
        return True
    except Exception:
        return False


def _trim(payload: bytes, sym: np.ndarray, frac: np.ndarray, b: np.ndarray, extra: dict[int, int]) -> bytes:
    """Shortest prefix (possibly with its last byte incremented) that still decodes the same symbols."""
    best = payload
    for k in range(len(payload) - 1, -1, -1):
        cands = [payload[:k]]
        if k:
            v = int.from_bytes(payload[:k], "big") + 1
            if v < 1 << (8 * k):
                cands.append(v.to_bytes(k, "big"))
        ok = [c for c in cands if _verify(c, sym, frac, b, extra)]
        if not ok:
            break
        best = ok[0]
    return best


def encode_frames(
    models: list[FrameModel], qs: list[np.ndarray], hist: list[np.ndarray] | np.ndarray | None
) -> bytes:
    """Range-code consecutive frames ``qs[t] (K,)`` (each predicted from the ones before; the first from
    ``hist``, the previous decoded frames newest first) into one trimmed payload."""
    syms, fracs, bs, extra = [], [], [], {}
    prev = _as_hist(hist)
    off = 0
    for model, q in zip(models, qs):
        mu = model.base_mu(prev) + model.V @ q
        r, frac = _split(mu)
        d = q - r
        syms.append(np.clip(d, -ESCAPE, ESCAPE))
        fracs.append(frac)
        bs.append(model.b)
        extra.update({off + int(i): int(abs(d[i]) - ESCAPE) for i in np.flatnonzero(np.abs(d) >= ESCAPE)})
        off += len(q)
        prev = push_history(prev if model.has_prev else None, q)
    sym, frac, b = np.concatenate(syms), np.concatenate(fracs), np.concatenate(bs)
    payload = _encode_symbols(sym, frac, b, extra)
    return _trim(payload, sym, frac, b, extra)


def _as_hist(hist: list[np.ndarray] | np.ndarray | None) -> list[np.ndarray] | None:
    """A single previous frame ``(K,)`` → a one-frame history."""
    if hist is None or isinstance(hist, list):
        return hist
    return [np.asarray(hist)]


def encode_frame(model: FrameModel, q: np.ndarray, hist: list[np.ndarray] | np.ndarray | None) -> bytes:
    """Range-code integer indices ``q (K,)`` given the previous decoded frame(s) (newest first)."""
    return encode_frames([model], [q], hist)


def _decode_one(
    dec: constriction.stream.queue.RangeDecoder, model: FrameModel, hist: list[np.ndarray] | None
) -> np.ndarray:
    k = len(model.c)
    acc = model.base_mu(hist)
    q = np.zeros(k, np.int64)
    b = model.b
    for i in range(k):
        r_i, frac_i = _split(acc[i])
        r, frac = int(r_i), float(frac_i)
        d = int(dec.decode(_LAPLACE, np.array([frac]), b[i : i + 1])[0])
        if abs(d) == ESCAPE:
            hi, lo = dec.decode(_U16, 2)
            d = (ESCAPE + (int(hi) << 16 | int(lo))) * (1 if d > 0 else -1)
        qi = r + d
        if abs(qi) > Q_LIMIT:
            raise BitstreamError("corrupt payload (index out of range)")
        q[i] = qi
        if qi:
            acc += model.V[:, i] * qi
    return q


def decode_frames(
    models: list[FrameModel], payload: bytes, hist: list[np.ndarray] | np.ndarray | None
) -> list[np.ndarray]:
    """Inverse of :func:`encode_frames` → one ``q (K,)`` int64 per model. Raises :class:`BitstreamError`."""
    out: list[np.ndarray] = []
    prev = _as_hist(hist)
    try:
        dec = constriction.stream.queue.RangeDecoder(_words(payload))
        for model in models:
            q = _decode_one(dec, model, prev)
            prev = push_history(prev if model.has_prev else None, q)
            out.append(q)
    except BitstreamError:
        raise
    except Exception as e:  # constriction errors on garbage input
        raise BitstreamError(f"corrupt payload ({e})") from e
    return out


def decode_frame(model: FrameModel, payload: bytes, hist: list[np.ndarray] | np.ndarray | None) -> np.ndarray:
    """Inverse of :func:`encode_frame` → ``q (K,)`` int64. Raises :class:`BitstreamError` on garbage."""
    return decode_frames([model], payload, hist)[0]


def _stream_predictions(
    tables: CodecTables, q: np.ndarray, step_index: int, keyframe_interval: int
) -> tuple[np.ndarray, np.ndarray]:
    """The range coder's predictions ``mu (N,K)`` int64 (``2**-F`` step units) and scales ``b (N,K)`` for
    indices ``q (N,K)`` coded as one stream with a keyframe every ``keyframe_interval`` frames."""
    key, delta = model_pair(tables, step_index)
    t = np.arange(len(q))
    is_key = t % max(keyframe_interval, 1) == 0
    start = t - t % max(keyframe_interval, 1)  # the keyframe each frame's chain starts at
    dmu = delta.c[None] + q @ delta.V.T
    for lag, w in enumerate(delta.W):
        dmu = dmu + q[np.maximum(t - 1 - lag, start)] @ w.T
    mu = np.where(is_key[:, None], key.c[None] + q @ key.V.T, dmu)
    b = np.where(is_key[:, None], key.b[None], delta.b[None])
    return mu, b


def frame_bits(
    tables: CodecTables, vec: np.ndarray, step_index: int, keyframe_interval: int = 50
) -> np.ndarray:
    """Ideal payload bits (no packet framing) of each frame ``(N,)`` when feature vectors ``vec (N,K)`` are
    coded as one stream at a step index, a keyframe every ``keyframe_interval`` frames."""
    q = tables.quantize(vec, step_index)
    mu, b = _stream_predictions(tables, q, step_index, keyframe_interval)
    r, frac = _split(mu)
    return laplace_bin_bits((q - r).astype(np.float64) - frac, b).sum(1)


def estimate_stream_bits(
    tables: CodecTables, vec: np.ndarray, step_index: int, keyframe_interval: int = 50
) -> float:
    """Ideal payload bits (no packet framing) to code feature vectors ``vec (N,K)`` at a step index."""
    return float(frame_bits(tables, vec, step_index, keyframe_interval).sum())


def reference_stream(
    tables: CodecTables,
    code: np.ndarray,
    pose: np.ndarray,
    step_index: int,
    keyframe_interval: int = 50,
    frames_per_packet: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """What an error-free decode of features ``code (N,D)``, ``pose (N,12)`` coded at one step index (no
    RDOQ) must return, computed for the whole stream at once: the quantization indices moved to their
    minimum-MSE values (:func:`reconstruct_steps`). Keyframes start packets, so with ``frames_per_packet``
    G they come every ``ceil(keyframe_interval / G) · G`` frames."""
    q = tables.quantize(tables.features_to_vec(code, pose), step_index)
    period = -(-keyframe_interval // frames_per_packet) * frames_per_packet
    mu, b = _stream_predictions(tables, q, step_index, period)
    x = q + laplace_bin_mean(mu / float(1 << FRAC_BITS) - q, b)  # (N,K) step units
    return tables.vec_to_features(tables.dequantize(x, step_index))


def rdo_quantize(
    model: FrameModel, x_steps: np.ndarray, hist: list[np.ndarray] | np.ndarray | None, lam: float
) -> np.ndarray:
    """Rate-distortion optimized indices ``q (K,)`` for ``x_steps (K,)`` = features / steps.

    Per dim (in coding order, so intra-frame predictions use the chosen values) it picks, among the
    integers within one step of ``x``, the one minimizing ``(x - q)**2 + lam * bits``: dims whose value is
    near the prediction then cost ~nothing. The error stays below one step (vs half a step when ``lam=0``).
    """
    k = len(x_steps)
    acc = model.base_mu(_as_hist(hist))
    q = np.zeros(k, np.int64)
    b = model.b
    for i in range(k):
        r_i, frac_i = _split(acc[i])
        r, frac = int(r_i), float(frac_i)
        xi = float(x_steps[i])
        lo, hi = math.floor(xi), math.ceil(xi)
        best, best_cost = None, math.inf
        for c in {lo, hi, int(np.rint(xi))}:
            if abs(c) > Q_LIMIT:
                continue
            cost = (xi - c) ** 2 + lam * laplace_bin_bits(c - r - frac, float(b[i]))  # escape ignored
            if cost < best_cost:
                best, best_cost = c, cost
        qi = int(np.clip(np.rint(xi), -Q_LIMIT, Q_LIMIT)) if best is None else best
        q[i] = qi
        if qi:
            acc += model.V[:, i] * qi
    return q
