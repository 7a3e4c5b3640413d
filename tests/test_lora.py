"""LoRA adapters per robot: attach, train, save with the embodiment, switch, merge, refuse mismatches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from embodyhub.embodiment import load_robot
from embodyhub.errors import EmbodimentMismatchError
from embodyhub.models.wam import WamConfig, WamForActionPrediction, WamProcessor
from embodyhub.training.lora import attach_adapter, load_adapter, lora_config, save_adapter

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, chunk_length=2)


def batch_for(processor, emb, n=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = emb.sample(n, gen)
    goal = torch.stack([c.forward_kinematics(emb.sample(n, gen)[:, i]) for c, i in zip(emb.chains, emb.arm_indices)], 1)
    batch = dict(processor({"state": q, "goal": goal}, emb, actions=q[:, None].expand(n, 2, emb.dof)))
    batch.pop("action_decoder")
    return batch


def nudge(model, adapter, scale=0.05):
    """Give one adapter's LoRA B matrices non-zero values (they start at zero) so it changes outputs."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name and f".{adapter}." in name:
                p.normal_(0, scale)


@pytest.fixture()
def setup():
    torch.manual_seed(0)
    base = WamForActionPrediction(WamConfig(**TINY)).eval()
    processor = WamProcessor(chunk_length=2)
    return base, processor, load_robot("panda"), load_robot("ur5")


def test_adapters_switch_save_load_and_merge(setup, tmp_path):
    base, processor, panda, ur5 = setup
    base.save_pretrained(tmp_path / "base")
    batch = batch_for(processor, panda)
    reference = base(**batch).logits.clone()
    model = attach_adapter(base, panda, lora_config(r=4))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    assert 0 < trainable / total < 0.2
    nudge(model, "panda")
    with_panda = model(**batch).logits.clone()
    assert not torch.allclose(with_panda, reference)
    model = attach_adapter(model, ur5, lora_config(r=4))
    nudge(model, "ur5")
    assert not torch.allclose(model(**batch).logits, with_panda)
    model.set_adapter("panda")
    torch.testing.assert_close(model(**batch).logits, with_panda)

    folder = save_adapter(model, panda, tmp_path / "adapters")
    assert (folder / "embodiment.json").is_file() and (folder / "robot.urdf").is_file()
    fresh = WamForActionPrediction.from_pretrained(tmp_path / "base").eval()
    loaded, robot = load_adapter(fresh, folder, embodiment=panda)
    assert robot.name == "panda"
    unmerged = loaded(**batch).logits.clone()
    torch.testing.assert_close(unmerged, with_panda, rtol=0, atol=1e-6)
    native = WamForActionPrediction.from_pretrained(tmp_path / "base").eval()
    native.load_adapter(str(folder), adapter_name="panda")  # transformers' own PEFT integration
    torch.testing.assert_close(native(**batch).logits, with_panda, rtol=0, atol=1e-6)
    merged = loaded.merge_and_unload()
    assert isinstance(merged, WamForActionPrediction)
    assert (merged(**batch).logits - unmerged).abs().max() <= 1e-5


def test_mismatched_base_or_robot_is_refused(setup, tmp_path):
    base, processor, panda, ur5 = setup
    model = attach_adapter(base, panda, lora_config(r=4))
    folder = save_adapter(model, panda, tmp_path / "a")
    wider = WamForActionPrediction(WamConfig(**{**TINY, "hidden_size": 48, "num_attention_heads": 2}))
    with pytest.raises(EmbodimentMismatchError, match="hidden_size"):
        load_adapter(wider, folder)
    other = WamForActionPrediction(WamConfig(**TINY))
    with pytest.raises(EmbodimentMismatchError, match="urdf_sha256"):
        load_adapter(other, folder, embodiment=ur5)
    with pytest.raises(EmbodimentMismatchError, match="not an embodyhub adapter"):
        load_adapter(other, tmp_path)


def test_transformers_adapter_methods_work_with_the_pinned_peft(setup, tmp_path):
    """transformers' own adapter API on our model (it refuses a peft older than it needs), with the
    transformers/peft pair setup.cfg pins installed."""
    from importlib.metadata import version

    from packaging.requirements import Requirement
    from setuptools.config.setupcfg import read_configuration

    pins = {r.name: r for r in map(Requirement, read_configuration(ROOT / "setup.cfg")["options"]["install_requires"])}
    for name in ("transformers", "peft"):
        assert pins[name].specifier.contains(version(name)), f"{name} {version(name)} is not the pinned {pins[name]}"
    base, processor, panda, ur5 = setup
    base.save_pretrained(tmp_path / "base")
    batch = batch_for(processor, panda)
    reference = base(**batch).logits.clone()
    folders = {}
    for emb in (panda, ur5):
        model = attach_adapter(WamForActionPrediction.from_pretrained(tmp_path / "base"), emb, lora_config(r=4))
        nudge(model, emb.name)
        folders[emb.name] = save_adapter(model, emb, tmp_path / emb.name)
    native = WamForActionPrediction.from_pretrained(tmp_path / "base").eval()
    for name, folder in folders.items():
        native.load_adapter(str(folder), adapter_name=name)
    native.set_adapter("ur5")
    assert native.active_adapters() == ["ur5"]
    with_ur5 = native(**batch).logits.clone()
    native.set_adapter("panda")
    assert native.active_adapters() == ["panda"]
    assert not torch.allclose(native(**batch).logits, with_ur5)
    native.disable_adapters()
    torch.testing.assert_close(native(**batch).logits, reference)
    native.enable_adapters()
    assert not torch.allclose(native(**batch).logits, reference)
    state = native.get_adapter_state_dict("panda")
    assert state and all("lora_" in key for key in state)
