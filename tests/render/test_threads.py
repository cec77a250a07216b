"""Thread count on a shared machine: only other processes' load lowers it, and it comes back."""

import pytest
import torch

from nerfvc.render import threads as T


@pytest.fixture
def restore_threads(monkeypatch):
    monkeypatch.delenv("NERFVC_THREADS", raising=False)
    monkeypatch.setattr(T.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(T, "_LOWERED_FROM", [])
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_crowded_cores_lower_the_count_and_it_comes_back(restore_threads):
    torch.set_num_threads(2)
    assert T.configure_threads(busy=lambda: 1.8) == 1  # other jobs fill both cores
    assert T.configure_threads(busy=lambda: 1.9) == 1
    assert T.configure_threads(busy=lambda: 0.1) == 2  # they are gone: back to what it was


def test_a_count_the_caller_set_is_kept_on_a_free_machine(restore_threads):
    torch.set_num_threads(1)  # e.g. one render worker per core
    assert T.configure_threads(busy=lambda: 0.0) == 1
    torch.set_num_threads(2)
    assert T.configure_threads(busy=lambda: 0.2) == 2


def test_the_environment_wins(restore_threads, monkeypatch):
    monkeypatch.setenv("NERFVC_THREADS", "1")
    assert T.configure_threads(busy=lambda: 0.0) == 1


def test_own_cpu_time_is_not_counted_as_other_load():
    """Two snapshots where every busy tick of the machine was this process's: nothing else is busy; where
    none was, all of it is."""
    own = iter([(1000.0, 400.0, 100.0), (1100.0, 400.0, 200.0)])  # 100 ticks, all busy, all ours
    assert T.busy_cores(0.0, snapshot=lambda: next(own)) == 0.0
    other = iter([(1000.0, 400.0, 100.0), (1100.0, 400.0, 100.0)])  # 100 busy ticks, none ours
    assert T.busy_cores(0.0, snapshot=lambda: next(other)) == pytest.approx(T.os.cpu_count() or 1)
    assert T.busy_cores(0.0, snapshot=lambda: None) is None


def test_the_proc_snapshot_reads_this_machine():
    snap = T._proc_snapshot()
    if snap is None:
        pytest.skip("no /proc here")
    total, idle, own = snap
    assert total > idle >= 0 and own > 0
