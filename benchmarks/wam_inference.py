"""predict_action latency of the tiny WAM at batch 1 on CPU: KV-cached vs uncached decoding.

Peer: the same model decoding without a cache (re-running the whole sequence per token), so the
ratio shows what the DynamicCache buys. Also splits token decoding from the native decode (IK).

    python benchmarks/wam_inference.py [--model DIR] [--robot panda] [--repeats 20]

Without ``--model`` a freshly initialised model with ``recipes/pretrain_tiny.yaml``'s sizes is used
(latency does not depend on the weights). A v2 base (object keypoints) is fed a real observation of the
manipulation benchmark (``--task`` on the simulator arm ``--robot``, first evaluation seed).
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

import embodyhub  # noqa: F401  (registers the Auto classes)
from embodyhub.embodiment import load_robot
from embodyhub.export.thor import median_ms
from embodyhub.models.wam import WamConfig, WamForActionPrediction, WamProcessor
from embodyhub.training import PretrainRecipe

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "pretrain_tiny.yaml"


def load(model_dir: str | None) -> tuple[WamForActionPrediction, WamProcessor]:
    if model_dir:
        from transformers import AutoModel, AutoProcessor

        return AutoModel.from_pretrained(model_dir).eval(), AutoProcessor.from_pretrained(model_dir)
    recipe = PretrainRecipe.from_yaml(RECIPE)
    processor = WamProcessor(**recipe.processor)
    config = WamConfig(chunk_length=processor.chunk_length, action_bins=processor.action_bins, **recipe.model)
    return WamForActionPrediction(config).eval(), processor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="saved model folder (default: fresh tiny model)")
    parser.add_argument("--robot", default="panda", help="a bundled robot, or a simulator arm for a v2 base")
    parser.add_argument("--task", default="stack", help="v2 base: the simulator task whose observation is fed")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    model, processor = load(args.model)
    if processor.max_keypoints:  # a v2 base: a real observation of the manipulation benchmark
        from embodyhub.envs.sim import EVAL_SEED_BASE, TASKS, SimEnv

        env = SimEnv(args.task, args.robot)
        obs = env.reset(EVAL_SEED_BASE)
        emb = env.embodiment
        inputs = processor({"state": obs["observation.state"][None], "environment_state": obs["observation.environment_state"][None],
                            "task": TASKS[args.task].description}, emb)
    else:
        emb = load_robot(args.robot)
        gen = torch.Generator().manual_seed(0)
        q = emb.sample(1, gen)
        goal = torch.stack([c.forward_kinematics(emb.sample(1, gen)[:, i]) for c, i in zip(emb.chains, emb.arm_indices)], 1)
        inputs = processor({"state": q, "goal": goal}, emb)
    prefix = {k: v for k, v in inputs.items() if k not in ("action_decoder", "action_dims", "action_steps")}
    dims, steps = inputs["action_dims"], inputs["action_steps"]

    def tokens(cache: bool) -> torch.Tensor:
        return model.sample_action_tokens(dims, steps, use_cache=cache, **prefix)["tokens"]

    cached_tokens = tokens(True)
    assert torch.equal(cached_tokens, tokens(False)), "cached and uncached decoding disagree"
    n_params = sum(p.numel() for p in model.parameters())
    rows = [
        ("tokens, KV cache", median_ms(lambda: tokens(True), args.repeats)),
        ("tokens, no cache", median_ms(lambda: tokens(False), args.repeats)),
        ("native decode (IK + clamps)", median_ms(lambda: inputs["action_decoder"](cached_tokens), args.repeats)),
        ("predict_action, KV cache", median_ms(lambda: model.predict_action(**inputs), args.repeats)),
        ("predict_action, no cache", median_ms(lambda: model.predict_action(**inputs, use_cache=False), args.repeats)),
    ]
    H = processor.chunk_length
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"model: {n_params / 1e6:.2f}M parameters, robot {emb.name}, chunk H={H}, {dims.shape[1]} action tokens, batch 1")
    print(f"{'case':<30} {'median ms':>10} {'chunks/s':>9} {'ms/token':>9}")
    for name, ms in rows:
        per_token = f"{ms / dims.shape[1]:.2f}" if name.startswith("tokens") else "-"
        print(f"{name:<30} {ms:>10.2f} {1e3 / ms:>9.1f} {per_token:>9}")
    cached, uncached = rows[0][1], rows[1][1]
    print(f"KV cache speed-up on token decoding: {uncached / cached:.2f}x")
    print(f"control budget for one chunk at {emb.control_hz:g} Hz: {H / emb.control_hz * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
