"""A synthetic face-mesh model with eyes where a face has them (tests of :mod:`nerfvc.face.eyes`, the
renderer's halves and the encoder's wink keeping)."""

from __future__ import annotations

import numpy as np

from nerfvc.face.eyes import EYE_CORNERS, EYE_LIDS, SIDES
from nerfvc.face.mesh import NUM_LANDMARKS

LID = 0.004  # half an eye's aperture (m): the lids sit this far above and below the eye's centre line


def symmetric_face(expr_dims: int = 79, seed: int = 0, mixed: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A mirror-symmetric mean shape (478,3), the subject's left eye at +x, and an orthonormal expression
    basis (1434,E) whose span holds a blink (both eyes shut) and the difference between the eyes (the left
    shut, the right opened as much): its first two columns, or with ``mixed`` spread over every column (a
    random rotation of the coefficients, as a PCA of real tracks spreads them)."""
    rng = np.random.default_rng(seed)
    eyes = [i for s in SIDES for i in EYE_LIDS[s] + EYE_CORNERS[s]]
    pairs = [(EYE_LIDS["left"][k], EYE_LIDS["right"][k]) for k in range(2)]
    pairs += [(EYE_CORNERS["left"][k], EYE_CORNERS["right"][k]) for k in range(2)]
    rest = rng.permutation([i for i in range(NUM_LANDMARKS) if i not in eyes])
    pairs += list(zip(rest[0::2].tolist(), rest[1::2].tolist(), strict=True))
    mean = np.zeros((NUM_LANDMARKS, 3))
    eye = [(0.032, -LID, 0.0), (0.032, LID, 0.0), (0.047, 0.0, 0.005), (0.017, 0.0, 0.005)]  # lids, corners
    for k, (a, b) in enumerate(pairs):
        p = np.array(eye[k]) if k < 4 else np.array([0.05, 0.0, 0.0]) + rng.uniform(-0.03, 0.03, 3)
        p[0] = abs(p[0]) + 0.003  # left of the midline; its mirror right of it
        mean[a], mean[b] = p, p * np.array([-1.0, 1.0, 1.0])
    noise = [rng.normal(size=3 * NUM_LANDMARKS) for _ in range(expr_dims - 2)]
    columns = [closing(SIDES).reshape(-1), (closing(("left",)) - closing(("right",))).reshape(-1), *noise]
    basis = np.linalg.qr(np.column_stack(columns))[0]  # (1434,E)
    if mixed:
        basis = basis @ np.linalg.qr(rng.normal(size=(expr_dims, expr_dims)))[0]
    return mean, basis


def closing(sides: tuple[str, ...], amount: float = 1.0) -> np.ndarray:
    """The displacement (478,3) that shuts the eyes of ``sides`` by ``amount`` of their aperture."""
    d = np.zeros((NUM_LANDMARKS, 3))
    for side in sides:
        up, low = EYE_LIDS[side]
        d[up, 1], d[low, 1] = amount * LID, -amount * LID
    return d
