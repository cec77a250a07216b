"""The per-machine precision choice (measured, cached per CPU, overridable) and the machine record."""

import json

import pytest
import torch

from nerfvc import machine
from nerfvc.errors import InputError
from nerfvc.field import fields, frame
from nerfvc.field.fields import HeadField, HeadFieldConfig
from nerfvc.field.fused import fused_density_available
from nerfvc.record import machine_record


@pytest.fixture()
def fresh(monkeypatch, tmp_path):
    """No remembered choice, an empty cache directory and no override."""
    monkeypatch.setattr(machine, "_CHOSEN", {})
    monkeypatch.setenv("NERFVC_CACHE", str(tmp_path))
    monkeypatch.delenv("NERFVC_PRECISION", raising=False)
    monkeypatch.delenv("NERFVC_KERNEL", raising=False)
    return tmp_path


def fake_timer(seconds: dict[str, float], calls: list):
    def timer(dtype, device):
        calls.append(dtype)
        return seconds[machine.precision_name(dtype)]

    return timer


@pytest.mark.parametrize("fast", ["fp32", "bf16"])
def test_auto_keeps_the_faster_precision_and_caches_it_per_cpu(fresh, fast):
    slow = "bf16" if fast == "fp32" else "fp32"
    calls: list = []
    dtype = fields.mlp_dtype("cpu", fake_timer({fast: 0.01, slow: 0.11}, calls))
    assert dtype == machine.PRECISIONS[fast] and len(calls) == 4  # two interleaved rounds
    cached = json.loads((fresh / "choices.json").read_text())
    (key,) = cached
    assert machine.cpu_model() in key and torch.__version__ in key and cached[key]["choice"] == fast
    # a new process (no in-memory choice) reads the cache instead of measuring again
    machine._CHOSEN.clear()
    assert fields.mlp_dtype("cpu", fake_timer({fast: 9.0, slow: 0.0}, calls)) == dtype
    assert len(calls) == 4
    # another CPU model is measured anew
    machine._CHOSEN.clear()
    cached = {k.replace(machine.cpu_model(), "Other CPU"): v for k, v in cached.items()}
    (fresh / "choices.json").write_text(json.dumps(cached))
    assert fields.mlp_dtype("cpu", fake_timer({fast: 9.0, slow: 0.0}, calls)) == machine.PRECISIONS[slow]


def test_another_thread_count_is_measured_anew(fresh):
    calls: list = []
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert fields.mlp_dtype("cpu", fake_timer({"fp32": 0.0, "bf16": 1.0}, calls)) == torch.float32
        torch.set_num_threads(2)
        assert fields.mlp_dtype("cpu", fake_timer({"fp32": 1.0, "bf16": 0.0}, calls)) == torch.bfloat16
    finally:
        torch.set_num_threads(threads)
    assert len(calls) == 8 and len(json.loads((fresh / "choices.json").read_text())) == 2


def test_the_training_step_choice_is_keyed_by_the_architecture_not_the_head_box():
    from nerfvc.render.model import ModelConfig
    from nerfvc.train.trainer import architecture_digest

    base = architecture_digest(ModelConfig())
    moved = ModelConfig()
    moved.head_lo, moved.head_hi = [-1.0, -2.0, -3.0], [1.0, 2.0, 3.0]
    tiny = ModelConfig()
    tiny.n_fine = 4
    assert architecture_digest(moved) == base
    assert architecture_digest(tiny) != base


def test_the_environment_overrides_and_a_bad_value_is_a_clear_error(fresh, monkeypatch):
    calls: list = []
    timer = fake_timer({"fp32": 0.0, "bf16": 1.0}, calls)
    monkeypatch.setenv("NERFVC_PRECISION", "bf16")
    assert fields.mlp_dtype("cpu", timer) == torch.bfloat16
    monkeypatch.setenv("NERFVC_PRECISION", "fp32")
    assert fields.mlp_dtype("cpu", timer) == torch.float32
    assert calls == []  # forced: nothing measured
    monkeypatch.setenv("NERFVC_PRECISION", "fp16")
    with pytest.raises(InputError, match="NERFVC_PRECISION"):
        fields.mlp_dtype("cpu", timer)


def test_a_corrupt_cache_is_measured_again(fresh):
    (fresh / "choices.json").write_text("{not json")
    calls: list = []
    assert fields.mlp_dtype("cpu", fake_timer({"fp32": 0.0, "bf16": 1.0}, calls)) == torch.float32
    assert len(calls) == 4


def test_options_are_timed_in_interleaved_rounds_and_keep_their_best_time():
    # "a" is timed first while another process loads the machine: its first time alone would lose
    order: list[str] = []
    times = {"a": [0.5, 0.1], "b": [0.2, 0.2]}

    def timer(name: str):
        def run() -> float:
            order.append(name)
            return times[name].pop(0)

        return run

    entry = machine.measure({"a": timer("a"), "b": timer("b")})
    assert order == ["a", "b", "b", "a"]
    assert entry == {"choice": "a", "seconds": {"a": 0.1, "b": 0.2}}


def test_the_real_timers_measure_every_option(fresh):
    cpu = torch.device("cpu")
    entry = machine.measure(
        {k: (lambda d=d: fields._time_head(d, cpu, rows=256)) for k, d in machine.PRECISIONS.items()}
    )
    assert set(entry["seconds"]) == {"fp32", "bf16"} and all(v > 0 for v in entry["seconds"].values())
    assert entry["choice"] == min(entry["seconds"], key=entry["seconds"].get)
    for backward in (False, True):  # measured: the fused C++ pass or torch, whichever was faster here
        kernel = fields.density_kernel(cpu, backward)
        assert kernel in ("fused", "torch")
        if not fused_density_available():
            assert kernel == "torch"
    # the frame renderer's choice is timed on whole marches of a frame-like ray grid, one per kernel
    entry = machine.measure({k: (lambda k=k: frame._time_march(False, kernel=k)) for k in frame.KERNELS})
    assert set(entry["seconds"]) == ({"fused", "torch"} if fused_density_available() else {"torch"})
    assert frame.render_kernel(cpu) in frame.KERNELS


def test_the_head_field_runs_its_mlps_in_the_chosen_precision(fresh, monkeypatch):
    monkeypatch.setenv("NERFVC_KERNEL", "torch")  # the MLPs in torch, where the precision applies
    torch.manual_seed(0)
    field = HeadField(HeadFieldConfig(), consistency_dim=8)
    for p in field.parameters():  # non-trivial weights so rounding shows
        p.data.uniform_(-0.5, 0.5)
    x, code = torch.rand(512, 3), torch.randn(1, 16)
    view, cons = torch.nn.functional.normalize(torch.randn(512, 3), dim=-1), torch.randn(1, 8)
    out = {}
    for name in ("fp32", "bf16"):
        monkeypatch.setenv("NERFVC_PRECISION", name)
        out[name] = field(x, code, view, cons)
    (s32, c32), (s16, c16) = out["fp32"], out["bf16"]
    assert s32.dtype == s16.dtype == torch.float32
    assert not torch.equal(c32, c16)  # bf16 really ran
    torch.testing.assert_close(c16, c32, atol=0.03, rtol=0)


def test_the_machine_record_names_the_cpu_and_its_isa(fresh, monkeypatch):
    monkeypatch.setenv("NERFVC_PRECISION", "fp32")
    rec = machine_record(threads=2)
    assert rec["cpu_model"] == machine.cpu_model() and rec["threads"] == 2
    assert set(rec["isa"]) == set(machine.ISA_FLAGS) and rec["mlp_precision"] == "fp32"
    assert rec["torch"] == torch.__version__ and rec["cores"] >= 1
    monkeypatch.setenv("NERFVC_KERNEL", "torch")
    rec = machine_record()
    assert rec["density_kernel"] == {"rendering": "torch", "training": "torch"}
    assert rec["frame_renderer_kernel"] == "torch" and rec["grid_storage_rendering"] == "fp32"


def test_the_first_ask_may_come_from_inside_a_render(fresh):
    with torch.inference_mode():  # the timers run forward + backward: they must not inherit the mode
        assert fields.mlp_dtype("cpu") in (torch.float32, torch.bfloat16)
        assert fields.density_kernel("cpu", backward=True) in ("fused", "torch")
        assert frame.render_kernel("cpu") in frame.KERNELS


def test_a_measurement_where_nothing_runs_is_a_clear_error():
    def broken() -> float:
        raise RuntimeError("no such kernel")

    with pytest.raises(RuntimeError, match=r"no option could run.*no such kernel"):
        machine.measure({"a": broken, "b": broken})


def test_without_the_cpp_kernels_the_density_is_torch_whatever_was_cached(fresh, monkeypatch):
    from nerfvc.field import cpp

    key = machine._cache_key(torch.device("cpu"))
    uses = ("rendering", "training")
    cached = {f"head density kernel for {u}|{key}": "fused" for u in uses}
    others = {f"frame renderer kernels|{key}": "fused", f"head MLP precision|{key}": "fp32"}  # not timed here
    monkeypatch.setattr(machine, "_CHOSEN", cached | others)
    monkeypatch.setenv("NERFVC_NO_CPP", "1")
    monkeypatch.setattr(cpp, "_LOADED", {})
    for backward in (False, True):
        assert fields.density_kernel("cpu", backward) == "torch"
    assert frame.render_kernel("cpu") == "torch"
    head = HeadField(HeadFieldConfig(), consistency_dim=8)
    with torch.inference_mode():
        sigma, _ = head.density(torch.rand(10, 3), torch.zeros(1, 16))
    assert sigma.shape == (10,)


def test_choices_are_remembered_per_kernel_build(monkeypatch):
    """Another -march (or changed kernel sources) is another key: its choices are measured anew."""
    cpu = torch.device("cpu")
    monkeypatch.setenv("NERFVC_CPP_MARCH", "native")
    native = machine._cache_key(cpu)
    monkeypatch.setenv("NERFVC_CPP_MARCH", "haswell")
    assert machine._cache_key(cpu) != native and "kernels " in native


def test_a_loop_trial_times_its_own_iterations_in_turns_and_remembers_the_winner(fresh):
    names = ["a", "b", "c"]
    cost = {"a": 0.15, "b": 0.1, "c": 0.12}
    trial = machine.LoopTrial("toy loop", "cpu", "NERFVC_TOY", names, provisional="a", start=5, block=3)
    ran = []
    for i in range(40):
        name = trial.name(i)
        ran.append(name)
        # the first iteration of a block pays the switch (ignored); "b" is slow before the trial starts
        trial.record(i, cost[name] + (5.0 if i < 5 or ran[i - 1 : i] != [name] else 0.0))
    assert ran[:5] == ["a"] * 5  # provisional until the trial starts
    assert ran[5:23] == [n for n in names + names[::-1] for _ in range(3)]  # two rounds, blocks of 3
    assert trial.chosen == "b" and set(ran[23:]) == {"b"}
    cached = json.loads((fresh / "choices.json").read_text())
    (entry,) = cached.values()
    assert entry["choice"] == "b" and entry["seconds"]["a"] == pytest.approx(0.15)
    # the next run starts with the remembered winner and times nothing
    machine._CHOSEN.clear()
    again = machine.LoopTrial("toy loop", "cpu", "NERFVC_TOY", names, provisional="a", start=0)
    assert again.chosen == "b" and again.name(0) == "b"


def test_a_loop_trial_drops_a_far_slower_candidate_after_one_round(fresh):
    cost = {"a": 0.1, "b": 0.12, "slow": 1.0}
    trial = machine.LoopTrial("toy loop", "cpu", "NERFVC_TOY", list(cost), provisional="a", start=0, block=2)
    ran = []
    for i in range(20):
        ran.append(trial.name(i))
        trial.record(i, cost[ran[-1]])
    assert ran[:6] == ["a", "a", "b", "b", "slow", "slow"]
    assert ran[6:10] == ["b", "b", "a", "a"] and trial.chosen == "a" and ran.count("slow") == 2
