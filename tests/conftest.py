"""Suite-wide settings."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

# CI runs the fuzzers on a fixed example sequence (a red build is then reproducible); local runs explore.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """The tests run small batched ops, bound by per-op overhead; on a shared 2-core machine a second
    intra-op thread only spin-waits and contends (batched IK measured ~15x slower). Restored after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def check_saved_figures(monkeypatch):
    """Records every matplotlib figure saved during the test; calling the fixture's value checks each one is
    readable (it opens; every panel has a title, labelled axes and data; every bar carries its value) and
    returns the paths, so a test can also say which plots it expects."""
    from pathlib import Path

    from matplotlib.container import BarContainer
    from matplotlib.figure import Figure
    from matplotlib.image import imread

    saved: list[tuple[Path, Figure]] = []
    original = Figure.savefig

    def record(fig, fname, *args, **kwargs):
        saved.append((Path(fname), fig))
        return original(fig, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)

    def check() -> list[Path]:
        for path, fig in saved:
            assert imread(path).size > 0, path
            assert fig.axes, f"{path}: no panel"
            for ax in fig.axes:
                where = f"{path}, panel {ax.get_title()!r}"
                assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel(), f"{where}: title or axis label missing"
                assert ax.lines or ax.patches or ax.collections or ax.images, f"{where}: empty panel"
                bars = sum(len(c) for c in ax.containers if isinstance(c, BarContainer))
                values = [t for t in ax.texts if t.get_text()]
                assert len(values) >= bars, f"{where}: {bars} bars but {len(values)} values shown"
        return [path for path, _ in saved]

    return check


@pytest.fixture(scope="module")
def tiny_sim_model(tmp_path_factory):
    """A tiny, untrained v2 model built the way ``pretrain_sim`` builds its base (panda; lift and stack), saved:
    ``(model, processor, folder)``. Needs robosuite (the test module skips without it)."""
    from embodyhub.training import PretrainRecipe, build

    recipe = PretrainRecipe(robots=["panda"], source="sim", tasks=["lift", "stack"], processor={"chunk_length": 4},
                            model={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64})
    model, processor = build(recipe)
    folder = tmp_path_factory.mktemp("v2") / "model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor, folder
