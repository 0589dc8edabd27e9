"""Residency with small real torch models: load once, LRU by bytes, counts, pins, busy, keep-alive."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from conftest import wait_for
from modelq.config import load_settings
from modelq.errors import MemoryBudgetExceeded, ModelLoadError, ModelNotFound
from modelq.models import Budget, ModelRegistry, ModelSpec, Residency, ResidencyHooks, declare
from modelq_test_models import LOADS, load_linear, make_linear

LOADER = "modelq_test_models:load_linear"
MB = 1024 * 1024


def _declare(name: str, path: Path, **kw) -> ModelSpec:
    spec = ModelSpec(name=name, loader=kw.pop("loader", LOADER), source=str(path), device="cpu", **kw)
    declare(spec)
    return spec


def _residency(budget: Budget, hooks=None) -> Residency:  # noqa: ANN001
    return Residency(ModelRegistry(load_settings()), {"cpu": budget}, list(hooks or []))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "small": make_linear(root / "small.pt", 1),
        "big1": make_linear(root / "big1.pt", 48),
        "big2": make_linear(root / "big2.pt", 48),
        "big3": make_linear(root / "big3.pt", 48),
    }


def test_a_model_loads_once_and_serves_every_later_use(files: dict[str, Path]) -> None:
    _declare("once", files["small"])
    residency = _residency(Budget())
    before = LOADS.get(str(files["small"]), 0)
    with residency.use("once") as first:
        out = first(torch.ones(1, 256))
    with residency.use("once") as second:
        assert second is first
    assert out.shape == (1, 1024)
    assert LOADS[str(files["small"])] == before + 1
    (stats,) = residency.stats()
    assert (stats.loads, stats.hits, stats.resident) == (1, 1, True)


def test_the_measured_footprint_replaces_the_estimate(files: dict[str, Path]) -> None:
    _declare("measured", files["big1"], memory=1 * MB)
    residency = _residency(Budget())
    with residency.use("measured"):
        pass
    (stats,) = residency.stats()
    assert 40 * MB < stats.bytes < 80 * MB


def test_least_recently_used_idle_model_goes_first_by_bytes(files: dict[str, Path]) -> None:
    for name in ("big1", "big2", "big3"):
        _declare(f"lru-{name}", files[name], memory=48 * MB)
    residency = _residency(Budget(bytes=130 * MB))
    for name in ("lru-big1", "lru-big2", "lru-big1"):  # big1 is now the most recently used
        with residency.use(name):
            pass
    with residency.use("lru-big3"):
        pass
    assert sorted(residency.resident()) == ["lru-big1", "lru-big3"]
    evicted = {s.name: s.evictions for s in residency.stats()}
    assert evicted == {"lru-big1": 0, "lru-big2": 1, "lru-big3": 0}


def test_count_budget_of_one_and_pinned_models(files: dict[str, Path]) -> None:
    _declare("count-a", files["small"])
    _declare("count-b", files["small"])
    residency = _residency(Budget(models=1))
    with residency.use("count-a"):
        pass
    with residency.use("count-b"):
        pass
    assert residency.resident() == ["count-b"]

    _declare("pinned-p", files["small"], pinned=True)
    pinned = _residency(Budget(models=2))
    for name in ("pinned-p", "count-a", "count-b"):
        with pinned.use(name):
            pass
    assert sorted(pinned.resident()) == ["count-b", "pinned-p"]


def test_a_model_in_use_is_never_evicted(files: dict[str, Path]) -> None:
    _declare("busy-a", files["small"])
    _declare("busy-b", files["small"])
    residency = _residency(Budget(models=1))
    order: list[str] = []
    residency.acquire("busy-a")  # a job holds busy-a

    def other_job() -> None:
        with residency.use("busy-b"):
            order.append("b loaded")

    thread = threading.Thread(target=other_job)
    thread.start()
    # busy-b waits: the only slot is held
    wait_for(lambda: residency._released._waiters, timeout=10, what="the second load to wait for room")  # noqa: SLF001
    assert residency.resident() == ["busy-a"] and order == []
    order.append("a released")
    residency.release("busy-a")
    thread.join(timeout=30)
    assert order == ["a released", "b loaded"]
    assert residency.resident() == ["busy-b"]


def test_idle_models_expire_after_their_keep_alive(files: dict[str, Path]) -> None:
    _declare("short", files["small"], keep_alive=0.2)
    _declare("forever", files["small"], keep_alive=-1)
    residency = _residency(Budget())
    for name in ("short", "forever"):
        with residency.use(name):
            pass

    def short_expired() -> bool:
        residency.expire_idle()  # what the worker's sweeper thread calls every second
        return "short" not in residency.resident()

    wait_for(short_expired, timeout=10, what="the short keep-alive to expire")
    assert residency.resident() == ["forever"]


def test_concurrent_first_uses_load_once(files: dict[str, Path]) -> None:
    path = make_linear(files["small"].parent / "concurrent.pt", 1)
    _declare("concurrent", path, options={"slow": 0.3})
    residency = _residency(Budget())
    barrier = threading.Barrier(8)
    seen: list[int] = []

    def job() -> None:
        barrier.wait()
        with residency.use("concurrent") as model:
            seen.append(id(model))

    threads = [threading.Thread(target=job) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert LOADS[str(path)] == 1
    assert len(seen) == 8 and len(set(seen)) == 1


def test_a_model_too_big_for_the_budget_fails_clearly(files: dict[str, Path]) -> None:
    _declare("huge", files["small"], memory=2 * 1024 * MB)
    residency = _residency(Budget(bytes=100 * MB))
    with pytest.raises(MemoryBudgetExceeded) as info:
        residency.acquire("huge")
    assert str(info.value) == "model 'huge' needs 2.0 GiB but the cpu budget is 100.0 MiB"
    assert residency.resident() == []


def test_unknown_models_and_broken_loaders(files: dict[str, Path], tmp_path: Path) -> None:
    residency = _residency(Budget())
    with pytest.raises(ModelNotFound, match="unknown model 'nope'"):
        residency.acquire("nope")
    _declare("broken", tmp_path / "missing.pt")
    with pytest.raises(ModelLoadError, match="model 'broken' failed to load: FileNotFoundError"):
        residency.acquire("broken")


def test_hooks_see_every_event_and_a_failing_hook_breaks_nothing(files: dict[str, Path]) -> None:
    events: list[tuple[str, str]] = []

    class Recorder(ResidencyHooks):
        def before_load(self, spec, device):  # noqa: ANN001, ANN201
            events.append(("before_load", spec.name))

        def after_load(self, spec, device, nbytes, seconds):  # noqa: ANN001, ANN201
            events.append(("after_load", spec.name))

        def on_evict(self, spec, device, nbytes, reason):  # noqa: ANN001, ANN201
            events.append(("on_evict", spec.name))

    class Broken(ResidencyHooks):
        def after_load(self, spec, device, nbytes, seconds):  # noqa: ANN001, ANN201
            raise RuntimeError("observer bug")

    _declare("hook-a", files["small"])
    _declare("hook-b", files["small"])
    residency = _residency(Budget(models=1), hooks=[Broken(), Recorder()])
    for name in ("hook-a", "hook-b"):
        with residency.use(name):
            pass
    assert events == [
        ("before_load", "hook-a"),
        ("after_load", "hook-a"),
        ("on_evict", "hook-a"),
        ("before_load", "hook-b"),
        ("after_load", "hook-b"),
    ]


def test_models_from_the_config_file(files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "modelq.yml").write_text(
        f"models:\n  cfg-model:\n    loader: '{LOADER}'\n    source: '{files['small']}'\n    memory: 2MB\n    pinned: true\n"
    )
    registry = ModelRegistry(load_settings())
    spec = registry.get("cfg-model")
    assert (spec.memory, spec.pinned, spec.keep_alive) == (2_000_000, True, 300.0)
    assert Residency(registry, {}).acquire("cfg-model").weight.shape == (1024, 256)
    assert load_linear  # the loader is importable by the path the config names


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")


@cuda
def test_on_cuda_the_footprint_is_allocated_bytes_and_eviction_frees_them(files: dict[str, Path]) -> None:
    for name in ("big1", "big2"):
        declare(ModelSpec(name=f"gpu-{name}", loader=LOADER, source=str(files[name]), device="cuda"))
    residency = Residency(ModelRegistry(load_settings()), {"cuda": Budget(models=1)})
    base = torch.cuda.memory_allocated()
    with residency.use("gpu-big1") as model:
        assert next(model.parameters()).is_cuda
    (stats,) = [s for s in residency.stats() if s.name == "gpu-big1"]
    assert 40 * MB < stats.bytes < 60 * MB  # CUDA allocated delta: the weights, not the process's RSS
    with residency.use("gpu-big2"):
        pass
    assert residency.resident() == ["gpu-big2"]
    assert torch.cuda.memory_allocated() - base < 60 * MB  # big1's memory went back


@cuda
def test_a_prefork_worker_refuses_to_start_after_cuda_was_initialised(tmp_path: Path) -> None:
    import subprocess
    import sys

    from conftest import child_env

    code = "import torch; torch.zeros(1, device='cuda'); from modelq.cli import main; main(['worker', '-Q', 'cpu', '-P', 'prefork'])"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(MODELQ_HOME=str(tmp_path / "home")),
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "CUDA is already initialised" in result.stderr + result.stdout
