"""Fused density kernel against the unfused path: million points/s of the head field's density MLP.

    PYTHONPATH=. .venv/bin/python benchmarks/fused.py

For the fine and coarse head shapes, N = 2^17 and 2^18 points, 1 and 2 threads: (a) the C++ hash grid then
torch ``addmm`` in float32, (b) the same with the MLP in bfloat16 (as ``FrameHead`` renders), (c) the fused
kernel, forward; and forward+backward of (a) and (c). Points are 32 ordered samples along each of N/32
random chords of the unit cube (ray-like locality). Throughputs are N / median wall time and N / median
process CPU time (the machine is shared; CPU time is the steadier). The whole benchmark then runs again in a
subprocess that emulates an AVX2-only machine (``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``, both C++
kernels compiled with ``-march=haswell``). Writes ``benchmarks/results/fused.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from nerfvc.field.cpp import cpp_march
from nerfvc.field.encodings import load_cpp_extension
from nerfvc.field.fused import FusedDensityFn, fused_density, load_fused_extension
from nerfvc.record import machine_record

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "NERFVC_CPP_MARCH": "haswell"}
# name: levels, log2 table, base res, max res, hidden, out (features 2), as in nerfvc/render/model.py
SHAPES = {"fine": (16, 15, 16, 512, 64, 16), "coarse": (8, 13, 8, 96, 32, 8)}


def _inputs(shape: str, n: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    levels, log2_t, base, top, hidden, out = SHAPES[shape]
    g = torch.Generator().manual_seed(seed)
    growth = math.exp((math.log(top) - math.log(base)) / (levels - 1))
    res = torch.tensor([math.floor(base * growth**i) for i in range(levels)], dtype=torch.int64)
    a, b = torch.rand(n // 32, 1, 3, generator=g), torch.rand(n // 32, 1, 3, generator=g)
    t = (torch.arange(32).view(1, 32, 1) + 0.5) / 32
    x = (a + (b - a) * t).reshape(n, 3).contiguous()  # (N,3): 32 ordered samples per chord
    table = (torch.rand(levels, 2**log2_t, 2, generator=g) * 2 - 1) * 1e-2
    w1 = torch.randn(2 * levels, hidden, generator=g) / math.sqrt(2 * levels)
    b1 = torch.randn(1, hidden, generator=g) * 0.1
    w2 = torch.randn(hidden, out, generator=g) / math.sqrt(hidden)
    b2 = torch.randn(out, generator=g) * 0.1
    return x, table, res, w1, b1, w2, b2


def _timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median wall and process CPU seconds of ``repeat`` calls after one warm-up."""
    fn()
    wall, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def _variants(hg: object, args: tuple[torch.Tensor, ...], threads: int) -> dict[str, Callable[[], object]]:
    x, table, res, w1, b1, w2, b2 = args
    n, (levels, size, feats) = x.shape[0], table.shape
    bf = [t.to(torch.bfloat16) for t in (w1, b1, w2, b2)]
    grad_out = torch.randn(n, w2.shape[1])

    def unfused(dtype: torch.dtype = torch.float32) -> torch.Tensor:
        a1, c1, a2, c2 = bf if dtype == torch.bfloat16 else (w1, b1, w2, b2)
        f = hg.hashgrid_forward(x, table, res, threads).view(n, -1).to(dtype)  # type: ignore[attr-defined]
        return torch.addmm(c2, torch.addmm(c1, f, a1).relu_(), a2)

    def unfused_fb() -> None:  # what autograd runs for HashGrid + sigma_net in float32
        weights = [t.detach().requires_grad_() for t in (w1, b1, w2, b2)]
        f = hg.hashgrid_forward(x, table, res, threads).view(n, -1).requires_grad_()  # type: ignore[attr-defined]
        out = torch.addmm(weights[3], torch.addmm(weights[1], f, weights[0]).relu(), weights[2])
        out.backward(grad_out)
        hg.hashgrid_backward(f.grad.view(n, levels, feats), x, res, size, threads)  # type: ignore[attr-defined]

    def fused_fb() -> None:
        p = [t.detach().requires_grad_() for t in (table, w1, b1, w2, b2)]
        FusedDensityFn.apply(x, p[0], res, *p[1:]).backward(grad_out)

    return {
        "a_unfused_f32": unfused,
        "b_unfused_bf16": lambda: unfused(torch.bfloat16),
        "c_fused_f32": lambda: fused_density(x, table, res, w1, b1, w2, b2),
        "a_unfused_f32_fwd_bwd": unfused_fb,
        "c_fused_f32_fwd_bwd": fused_fb,
    }


def run(log2_sizes: list[int], threads_list: list[int], repeat: int) -> dict:
    """All variants for every shape, size and thread count → the results section."""
    if load_fused_extension() is None:
        raise SystemExit("fused kernel unavailable")
    hg = load_cpp_extension()  # built for NERFVC_CPP_MARCH, like the fused kernel
    rows = []
    for shape in SHAPES:
        for log2_n in log2_sizes:
            args = _inputs(shape, 2**log2_n)
            for threads in threads_list:
                torch.set_num_threads(threads)
                row: dict = {"shape": shape, "n": 2**log2_n, "threads": threads}
                for name, fn in _variants(hg, args, threads).items():
                    wall, cpu = _timed(fn, repeat)
                    row[f"{name}_mpts_s"] = round(2**log2_n / wall / 1e6, 2)
                    row[f"{name}_mpts_cpu_s"] = round(2**log2_n / cpu / 1e6, 2)
                print(json.dumps(row), file=sys.stderr, flush=True)
                rows.append(row)
    return {"machine": machine_record(), "march": cpp_march(), "results": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log2-sizes", default="17,18")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--section-only", action="store_true", help="print this process's section as JSON")
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "results" / "fused.json")
    args = ap.parse_args()
    sizes = [int(s) for s in args.log2_sizes.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    section = run(sizes, threads, args.repeat)
    if args.section_only:
        print(json.dumps(section))
        return
    child = subprocess.run(
        [sys.executable, __file__, *sys.argv[1:], "--section-only"],
        env={**os.environ, **AVX2_ENV},
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    emulated = json.loads(child.stdout.splitlines()[-1])
    emulated["note"] = "emulated AVX2-only machine on the same CPU: " + " ".join(
        f"{k}={v}" for k, v in AVX2_ENV.items()
    )
    out = {
        "description": __doc__.split("\n\n")[2].replace("\n", " "),
        "command": "PYTHONPATH=. .venv/bin/python benchmarks/fused.py " + " ".join(sys.argv[1:]),
        "native": section,
        "emulated_avx2": emulated,
    }
    args.output.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
