"""Evaluation report: RD curves, resolution plot, frame grid, side-by-side video, results.json, report.html.

The lead plugs nerfvc in by adding its rate points next to the baselines' (all scored with
``nerfvc.eval.metrics.evaluate`` against the same ``Reference``)::

    ref = prepare_reference(gt)
    systems = {"nerfvc": [RDPoint.from_eval(evaluate(ref, dec, bitrate_kbps=k), k, frames=dec, label="...")],
               "x265": [...], "freeze": [...], "next": [...]}
    build_report("REPORT", gt, systems, resolution={256: {...}, 512: {...}})

A system is a list of ``RDPoint`` (or plain dicts with ``kbps`` and metric keys). ``next`` (no bitrate) is
drawn as a horizontal line; ``freeze`` as one marker. Systems whose names are in ``cited`` are numbers copied
from a paper (e.g. FOMM, Bi-layer): they are drawn hollow and labelled "(cited)".
"""

from __future__ import annotations

import html
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from nerfvc.errors import InputError
from nerfvc.eval.metrics import METRICS
from nerfvc.eval.video import ffmpeg_exe, to_jsonable
from nerfvc.fsutil import atomic_path, write_bytes_atomic, write_json_atomic
from nerfvc.record import machine_record

TABLE_KEYS = [
    "kbps",
    "psnr",
    "ssim",
    "lpips",
    "dists",
    "csim",
    "prmse",
    "aucon",
    "au_recall",
    "lmd",
    "psnr_face",
    "ssim_face",
    "fallback_share",  # nerfvc with the quality guard: share of frames shown with a fallback picture
]
RATIO_KEYS = [
    "psnr_per_kbps",
    "ssim_per_kbps",
    "lpips_x_kbps",
    "dists_x_kbps",
    "csim_per_kbps",
    "aucon_per_kbps",
    "prmse_x_kbps",
]
RD_METRICS = ["psnr", "ssim", "lpips", "dists", "csim", "prmse", "aucon", "lmd"]
_COLORS = {"nerfvc": "#d62728", "x265": "#1f77b4", "x264": "#9467bd", "vvenc": "#2ca02c", "svtav1": "#ff7f0e"}
_SPARE = ["#8c564b", "#e377c2", "#bcbd22", "#17becf", "#7f7f7f", "#393b79"]


def _color(name: str) -> str:
    """Fixed colours for the known systems, a stable spare colour for any other (e.g. cited ones)."""
    if name not in _COLORS:
        _COLORS[name] = _SPARE[sum(map(ord, name)) % len(_SPARE)]
    return _COLORS[name]


@dataclass
class RDPoint:
    """One rate point of one system: bitrate, summary metrics, optionally its decoded frames."""

    kbps: float | None
    metrics: dict[str, float]
    frames: np.ndarray | None = field(default=None, repr=False)
    label: str = ""

    @classmethod
    def from_eval(
        cls, result: dict, kbps: float | None, *, frames: np.ndarray | None = None, label: str = ""
    ):
        """From the output of ``metrics.evaluate``."""
        return cls(kbps, dict(result["summary"]), frames, label)

    @classmethod
    def coerce(cls, p: RDPoint | Mapping) -> RDPoint:
        """Accept an ``RDPoint`` or a dict with ``kbps`` and metric keys (e.g. a row of baselines.json)."""
        if isinstance(p, RDPoint):
            return p
        d = dict(p)
        return cls(d.get("kbps"), d, d.pop("frames", None), str(d.get("label", d.get("q", ""))))


def _val(p: RDPoint, k: str) -> float:
    v = p.kbps if k == "kbps" else p.metrics.get(k)
    if v is None or isinstance(v, str):
        return float("inf") if v == "inf" else float("nan")
    return float(v)


def plain_log_ticks(axis) -> None:
    """Plain numbers on a log axis (1, 2, 5, 10, 20, ...) instead of 2×10^0."""
    from matplotlib.ticker import FuncFormatter

    def fmt(v: float, _pos) -> str:
        lead = f"{v:.0e}"[0]
        return f"{v:g}" if lead in "1235" else ""

    axis.set_major_formatter(FuncFormatter(fmt))
    axis.set_minor_formatter(FuncFormatter(fmt))


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_rd(
    path: Path, systems: Mapping[str, Sequence[RDPoint]], metric: str, cited: set[str], title: str = ""
):
    """One RD curve (metric vs kbps, log x) with every system; freeze as a marker, next-frame as a line."""
    plt = _plt()
    label, higher = METRICS.get(metric, (metric, True))
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    for name, pts in systems.items():
        pts = [p for p in pts if np.isfinite(_val(p, metric))]
        if not pts:
            continue
        if name == "next" or all(p.kbps is None for p in pts):
            ax.axhline(_val(pts[0], metric), color="0.4", ls="--", lw=1, label=f"{name} (ceiling, no rate)")
            continue
        rated = sorted((p.kbps, _val(p, metric)) for p in pts if p.kbps)
        x, y = [r for r, _ in rated], [v for _, v in rated]
        c = _color(name)
        if name == "freeze":
            ax.plot(x, y, "*", ms=13, color="k", label="freeze frame")
        elif name in cited:
            ax.plot(x, y, "o--", mfc="none", color=c, label=f"{name} (cited)")
        else:
            ax.plot(x, y, "o-", color=c, lw=2.5 if name == "nerfvc" else 1.5, label=name)
    ax.set_xscale("log")
    plain_log_ticks(ax.xaxis)
    ax.set_xlabel("bitrate (kbps, log)")
    ax.set_ylabel(f"{label} ({'higher' if higher else 'lower'} is better)")
    ax.set_title(title or label)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def plot_resolution(
    path: Path, resolution: Mapping[int, Mapping[str, Sequence[RDPoint]]], metric: str = "psnr"
):
    """Left: lowest bitrate each system reaches at each size (codec floors). Right: ``metric`` there."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110)
    by_size = {int(s): v for s, v in resolution.items()}  # keys are str when read back from JSON
    sizes = sorted(by_size)
    names = sorted({n for s in by_size.values() for n in s if n != "next"})
    for name in names:
        xs, rates, qs = [], [], []
        for s in sizes:
            pts = [(p.kbps, p) for p in by_size[s].get(name, []) if p.kbps]
            if not pts:
                continue
            rate, low = min(pts, key=lambda rp: rp[0])
            xs.append(s)
            rates.append(rate)
            qs.append(_val(low, metric))
        if not xs:
            continue
        style = (
            dict(color="k", marker="*", ms=11) if name == "freeze" else dict(color=_color(name), marker="o")
        )
        a1.plot(xs, rates, "-", label=name, **style)
        a2.plot(xs, qs, "-", label=name, **style)
    for a in (a1, a2):
        a.set_xscale("log", base=2)
        a.set_xticks(sizes, [f"{s}²" for s in sizes])
        a.set_xlabel("frame size (px; 1024 = upscaled 512 source)")
        a.grid(True, alpha=0.3)
    a1.set_yscale("log")
    plain_log_ticks(a1.yaxis)
    a1.set_ylabel("lowest bitrate reached (kbps, log)")
    a1.set_title("Bitrate floor vs resolution")
    label, higher = METRICS.get(metric, (metric, True))
    a2.set_ylabel(f"{label} at that rate ({'higher' if higher else 'lower'} is better)")
    a2.set_title(f"{label} at the lowest rate")
    a1.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def _label(img: np.ndarray, text: str) -> np.ndarray:
    # above 512 px, band and text scale with the width (a 1024² grid is viewed shrunk); even height (yuv420p)
    k = max(1.0, img.shape[1] / 512)
    band = np.full((2 * round(14 * k), img.shape[1], 3), 255, np.uint8)
    scale = (0.45 if img.shape[1] < 300 else 0.6) * k
    org = (round(6 * k), round(19 * k))
    cv2.putText(band, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), max(1, round(k)), cv2.LINE_AA)
    return np.concatenate([band, img])


def matched_point(points: Sequence[RDPoint], kbps: float | None) -> RDPoint | None:
    """The point with frames whose bitrate is closest (in log rate) to ``kbps`` (lowest rate if None)."""
    pts = [(p.kbps, p) for p in points if p.frames is not None and p.kbps]
    if not pts:
        return None
    if not kbps:
        return min(pts, key=lambda rp: rp[0])[1]
    return min(pts, key=lambda rp: abs(np.log(rp[0] / kbps)))[1]


def comparison_columns(
    gt: np.ndarray, systems: Mapping[str, Sequence[RDPoint]], main: str, reference: str
) -> list[tuple[str, np.ndarray]]:
    """Columns of the side-by-side: GT | main system (its lowest-rate point with frames) | reference codec at
    the matched rate (or its floor if it cannot go that low) | freeze, when present."""
    cols: list[tuple[str, np.ndarray]] = [("ground truth", gt)]

    def add(name: str, p: RDPoint | None) -> None:
        if p is not None and p.frames is not None:  # matched_point returns points with frames
            cols.append((f"{name} {p.kbps:.1f} kbps", p.frames))

    mp = matched_point(systems.get(main, []), None)
    add(main, mp)
    add(reference, matched_point(systems.get(reference, []), mp.kbps if mp is not None else None))
    add("freeze", matched_point(systems.get("freeze", []), None))
    return cols


def frame_grid(path: Path, cols: list[tuple[str, np.ndarray]], rows: int = 4) -> None:
    """PNG: ``rows`` evenly spaced frames (top to bottom) x the columns (left to right)."""
    n = len(cols[0][1])
    idx = np.linspace(0, n - 1, min(rows, n)).round().astype(int)
    lines = []
    for r, i in enumerate(idx):
        cells = [c[1][i] for c in cols]
        if r == 0:
            cells = [_label(img, name) for (name, _), img in zip(cols, cells)]
        gap = np.full((cells[0].shape[0], 4, 3), 255, np.uint8)
        row = [x for c in cells for x in (c, gap)][:-1]
        lines.append(np.concatenate(row, axis=1))
        lines.append(np.full((4, lines[-1].shape[1], 3), 255, np.uint8))
    img = np.concatenate(lines[:-1])
    _, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    write_bytes_atomic(path, buf.tobytes())


def side_by_side_video(path: Path, cols: list[tuple[str, np.ndarray]], fps: float = 25.0) -> None:
    """MP4 (H.264, CRF 16, visually lossless) of the labelled columns side by side."""
    n = min(len(c[1]) for c in cols)
    out = []
    for i in range(n):
        cells = [_label(seq[i], name) for name, seq in cols]
        out.append(np.concatenate(cells, axis=1))
    arr = np.ascontiguousarray(np.stack(out))
    h, w = arr.shape[1:3]
    pad_w, pad_h = w % 2, h % 2
    if pad_w or pad_h:
        arr = np.pad(arr, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), constant_values=255)
        h, w = arr.shape[1:3]
    with atomic_path(path) as tmp:
        cmd = [ffmpeg_exe(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}"]
        cmd += ["-r", f"{fps:g}", "-i", "-", "-c:v", "libx264", "-crf", "16", "-pix_fmt", "yuv420p"]
        cmd += ["-movflags", "+faststart", str(tmp)]
        subprocess.run(cmd, input=arr.tobytes(), check=True, capture_output=True)


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return html.escape(v)
    if not np.isfinite(v):
        return "∞" if v > 0 else ("–" if np.isnan(v) else "-∞")
    a = abs(v)
    return f"{v:.4f}" if a < 1 else (f"{v:.3f}" if a < 10 else f"{v:.2f}")


def _table(systems: Mapping[str, Sequence[RDPoint]], keys: list[str], cited: set[str]) -> str:
    head = "".join(f"<th>{html.escape(METRICS.get(k, (k,))[0])}</th>" for k in keys)
    rows = []
    for name, pts in systems.items():
        for p in sorted(pts, key=lambda p: p.kbps if p.kbps else -1):
            tag = " <i>(cited, not measured here)</i>" if name in cited else ""
            cells = "".join(f"<td>{_fmt(_val(p, k) if k == 'kbps' else p.metrics.get(k))}</td>" for k in keys)
            cls = ' class="hl"' if name in ("freeze", "next") else ""
            rows.append(
                f"<tr{cls}><td>{html.escape(name)}{tag}</td><td>{html.escape(p.label)}</td>{cells}</tr>"
            )
    return f"<table><tr><th>system</th><th>point</th>{head}</tr>{''.join(rows)}</table>"


_CSS = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
td:first-child,td:nth-child(2),th{text-align:left}tr.hl{background:#fff6d6}img{max-width:100%}
.grid{display:flex;flex-wrap:wrap;gap:8px}.grid img{width:49%}.note{color:#555;font-size:13px}"""


def build_report(
    out_dir: str | Path,
    gt_frames: np.ndarray,
    systems: Mapping[str, Sequence[RDPoint | Mapping]],
    *,
    resolution: Mapping[int, Mapping[str, Sequence[RDPoint | Mapping]]] | None = None,
    main: str = "nerfvc",
    reference: str = "x265",
    cited: Sequence[str] = (),
    title: str = "nerfvc evaluation",
    notes: Sequence[str] = (),
    fps: float = 25.0,
    extra: Mapping | None = None,
) -> dict[str, Path]:
    """Write every report file into ``out_dir`` and return their paths by kind.

    ``systems``: name → rate points at the evaluation size (``gt_frames``' size). ``resolution``: size →
    (name → points) for the resolution plot (points need ``kbps`` and the plotted metric). ``main`` is the
    system under test (nerfvc; if absent the grid shows GT | reference | freeze), ``reference`` the codec
    shown at the matched rate. ``cited``: systems whose numbers are copied from a paper.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sys_pts = {k: [RDPoint.coerce(p) for p in v] for k, v in systems.items()}
    cited_set = set(cited)
    files: dict[str, Path] = {}
    present = [m for m in RD_METRICS if any(np.isfinite(_val(p, m)) for v in sys_pts.values() for p in v)]
    for m in present:
        files[f"rd_{m}"] = out / f"rd_{m}.png"
        plot_rd(files[f"rd_{m}"], sys_pts, m, cited_set)
    res_pts = None
    if resolution:
        res_pts = {
            int(s): {k: [RDPoint.coerce(p) for p in v] for k, v in d.items()} for s, d in resolution.items()
        }
        files["resolution"] = out / "resolution.png"
        plot_resolution(files["resolution"], res_pts)
    cols = comparison_columns(np.asarray(gt_frames), sys_pts, main, reference)
    if len(cols) > 1:
        files["grid"] = out / "grid.png"
        frame_grid(files["grid"], cols)
        files["video"] = out / "side_by_side.mp4"
        side_by_side_video(files["video"], cols, fps)
    results = {
        "title": title,
        "notes": list(notes),
        "frame_size": list(np.asarray(gt_frames).shape[1:3][::-1]),
        "num_frames": len(gt_frames),
        "cited": sorted(cited_set),
        "systems": {k: [_point_json(p) for p in v] for k, v in sys_pts.items()},
        "resolution": (
            {s: {k: [_point_json(p) for p in v] for k, v in d.items()}
             for s, d in res_pts.items()}
            if res_pts else None
        ),
        "machine": machine_record(),
        **(dict(extra) if extra else {}),
    }  # fmt: skip
    files["results"] = out / "results.json"
    write_json_atomic(files["results"], to_jsonable(results))
    files["html"] = out / "report.html"
    write_bytes_atomic(files["html"], _html(title, notes, sys_pts, cited_set, files, cols, res_pts).encode())
    for f in files.values():
        f.chmod(0o644)  # atomic writes create 0600 temporaries; a report is meant to be shared
    return files


def _point_json(p: RDPoint) -> dict:
    return {"label": p.label, "kbps": p.kbps, **p.metrics}


def _html(title, notes, sys_pts, cited, files, cols, res_pts) -> str:
    h = [f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title><style>{_CSS}</style>"]
    h.append(f"<h1>{html.escape(title)}</h1>")
    std = [
        "The freeze-frame row (first frame held, one intra frame of cost) is always shown: LPIPS, DISTS and "
        "CSIM alone "
        "cannot tell a frozen picture from a moving one — read them next to PSNR, PRMSE, AUCON and LMD.",
        "Next-frame ceiling: each frame scored against its neighbour (perfect picture, one frame late).",
        "AUCON (landmark AUs) uses mediapipe-landmark geometry detectors, not OpenFace (see docs/eval.md).",
    ]
    h.append("<ul class=note>" + "".join(f"<li>{html.escape(n)}</li>" for n in [*notes, *std]) + "</ul>")
    h.append("<h2>Rate points</h2>" + _table(sys_pts, TABLE_KEYS, cited))
    h.append("<h2>Trade-off ratios (bitrate in kbps)</h2>" + _table(sys_pts, ["kbps", *RATIO_KEYS], cited))
    if "grid" in files:
        names = " | ".join(c[0] for c in cols)
        video, grid = files["video"].name, files["grid"].name
        h.append(f"<h2>Side by side</h2><p class=note>{html.escape(names)} — <a href='{video}'>video</a></p>")
        h.append(f"<img src='{grid}'>")
    rd = [k for k in files if k.startswith("rd_")]
    h.append("<h2>Rate-distortion</h2><div class=grid>")
    h += [f"<img src='{files[k].name}' alt='{k}'>" for k in rd]
    h.append("</div>")
    if res_pts:
        h.append("<h2>Resolution</h2><img src='resolution.png'>")
        for s in sorted(res_pts):
            h.append(f"<h3>{s}²</h3>" + _table(res_pts[s], TABLE_KEYS, cited))
    h.append(_FOOTER)
    return "\n".join(h)


_FOOTER = "<p class=note>All numbers: <a href='results.json'>results.json</a>.</p>"


def add_section(out_dir: str | Path, key: str, title: str, body: str) -> Path:
    """Put a titled HTML section into ``out_dir/report.html`` before its closing note, replacing the
    section of the same ``key`` if the report has one (e.g. ``nerfvc mos results --report``)."""
    path = Path(out_dir) / "report.html"
    if not path.is_file():
        raise InputError(f"{out_dir}: no report.html (not a `nerfvc eval` report directory)")
    page = path.read_text()
    start, end = f"<!-- section:{key} -->", f"<!-- /section:{key} -->"
    if start in page and end in page:
        page = page[: page.index(start)] + page[page.index(end) + len(end) :].lstrip("\n")
    block = f"{start}\n<h2>{html.escape(title)}</h2>\n{body}\n{end}\n"
    at = page.find(_FOOTER)
    page = page[:at] + block + page[at:] if at >= 0 else page + "\n" + block
    write_bytes_atomic(path, page.encode())
    path.chmod(0o644)
    return path
