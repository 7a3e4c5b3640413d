"""``embodyhub demo``: the whole pipeline on the tiny base shipped in the package, on CPU, no download.

Stages (``recipes/demo.yaml``): kinematics from every URDF; the base's zero-shot success on a robot it
never saw; LoRA adaptation to that robot; GRPO post-training of the adapter; an int8 Jetson Thor
bundle; publishing base, adapter and bundle to a local Hub-protocol server and pulling them back.
Each stage writes ``<out>/<stage>/result.json``: a rerun skips finished stages (resume), and
``--skip`` leaves stages out. The report holds only numbers measured by these runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .embodiment import KinematicAdapter, list_robots, load_robot, retarget
from .errors import EmbodyHubError
from .recipes import Recipe, recipe_path
from .training.evaluate import save_figure, success_bars

STAGES = ("kinematics", "base", "adapt", "grpo", "export", "publish")


@dataclass
class DemoRecipe(Recipe):
    """What ``embodyhub demo`` reads from ``recipes/demo.yaml``; ``smoke`` overrides apply with ``--smoke``."""

    robot: str = "kinova_jaco2"
    goal_distance: float = 0.6
    kinematics_robots: list[str] = field(default_factory=list)
    ik_targets: int = 100
    eval_episodes: int = 50
    eval_max_steps: int = 60
    adapt: dict[str, Any] = field(default_factory=dict)
    grpo: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    hub_org: str = "embodyhub-demo"
    smoke: dict[str, Any] = field(default_factory=dict)


@dataclass
class RobotRow:
    name: str
    dof: int
    arms: int
    round_trip_err: float
    ik_success: float
    ik_ms_per_target: float
    retarget_mm: float | None


def _panda_reach() -> torch.Tensor:
    """A smooth 10-step Panda reach around its ready pose (joint space, incl. the finger)."""
    ready = torch.tensor([0.0, -0.4, 0.0, -2.2, 0.0, 1.9, 0.8, 0.03], dtype=torch.float64)
    t = torch.linspace(0, 1, 10, dtype=torch.float64)[:, None]
    return ready + t * torch.tensor([0.5, 0.3, 0.0, 0.4, 0.2, -0.2, 0.3, 0.0], dtype=torch.float64)


def kinematics_stage(names: list[str], n_targets: int, seed: int = 0) -> list[RobotRow]:
    """Measure round trip, IK and retargeting for each robot."""
    gen = torch.Generator().manual_seed(seed)
    panda = load_robot("panda")
    trajectory = _panda_reach()
    rows = []
    for name in names:
        emb = load_robot(name)
        adapter = KinematicAdapter(emb)
        q = emb.sample(n_targets, gen)
        x, _ = adapter.to_canonical(q)
        round_trip = float((adapter.from_canonical(x) - q).abs().max())
        successes, seconds = 0, 0.0
        for chain, idx in zip(emb.chains, emb.arm_indices):
            target = chain.forward_kinematics(q[:, idx])
            start = time.perf_counter()
            successes += int(chain.inverse_kinematics(target, seed=seed).success.sum())
            seconds += time.perf_counter() - start
        n_solves = n_targets * len(emb.chains)
        retarget_mm = None
        if len(emb.arms) == 1 and name != "panda":
            moved = retarget(trajectory, panda, emb, seed=seed)
            src = panda.chains[0].forward_kinematics(trajectory[:, panda.arm_indices[0]])[:, :3, 3]
            dst = emb.chains[0].forward_kinematics(moved[:, emb.arm_indices[0]])[:, :3, 3]
            retarget_mm = float((dst - src).norm(dim=-1).max()) * 1e3
        rows.append(
            RobotRow(name, emb.dof, len(emb.arms), round_trip, successes / n_solves, seconds / n_solves * 1e3, retarget_mm)
        )
        shown = "-" if retarget_mm is None else f"{retarget_mm:.2f} mm"
        print(f"  {name:<14} IK {successes}/{n_solves} ok, round trip {round_trip:.1e}, Panda retarget {shown}")
    return rows


class Demo:
    """Runs the stages in order; each one reads what the earlier ones wrote under ``out``."""

    def __init__(self, out: Path, recipe: DemoRecipe, skip: set[str], verbose: bool = False) -> None:
        from transformers import AutoProcessor

        from .pretrained import tiny_base

        self.out, self.recipe, self.skip, self.verbose = out, recipe, skip, verbose
        self.base_dir = tiny_base()
        self.processor = AutoProcessor.from_pretrained(self.base_dir)
        self.robot = load_robot(recipe.robot)
        self.kinematics_robots = recipe.kinematics_robots or list_robots()
        self.results: dict[str, dict[str, Any] | None] = {}

    # ------------------------------------------------------------------ plumbing
    def run_stage(self, index: int, name: str, fn: Callable[[Path], dict[str, Any]]) -> None:
        folder = self.out / name
        done = folder / "result.json"
        tag = f"[{index}/{len(STAGES)}] {name}"
        if done.is_file():
            print(f"{tag}: finished in an earlier run, reusing {done}")
            self.results[name] = json.loads(done.read_text())
            return
        if name in self.skip:
            print(f"{tag}: skipped")
            self.results[name] = None
            return
        folder.mkdir(parents=True, exist_ok=True)
        print(f"{tag}: running", flush=True)
        start = time.perf_counter()
        result = fn(folder)
        result["seconds"] = time.perf_counter() - start
        done.write_text(json.dumps(result, indent=2))
        self.results[name] = result
        print(f"{tag}: done in {result['seconds']:.0f} s")

    def evaluate(self, model: Any, folder: Path, label: str) -> dict[str, Any]:
        """Closed-loop reach on held-out targets (same seed every stage), saved as eval.json + eval.png."""
        from .training import evaluate_reach, plot_results

        r = self.recipe
        results = evaluate_reach(model, self.processor, [self.robot], r.eval_episodes, r.eval_max_steps, goal_distance=r.goal_distance)
        res = results[self.robot.name]
        summary = {k: res[k] for k in ("episodes", "success_rate", "pos_err", "rot_err", "steps")}
        (folder / "eval.json").write_text(json.dumps({self.robot.name: summary}, indent=2))
        plot_results({f"{self.robot.name} ({label})": res}, folder / "eval.png", label)
        print(f"  {label}: {summary['success_rate']:.0%} success on {summary['episodes']} held-out reaches, "
              f"mean final error {summary['pos_err'] * 1e3:.1f} mm")
        return summary

    def base_model(self) -> Any:
        from transformers import AutoModel

        return AutoModel.from_pretrained(self.base_dir).eval()

    def latest_adapter(self) -> tuple[str, Path] | None:
        """The stage that wrote the latest adapter (GRPO's if it ran, else LoRA's) and the adapter folder."""
        for stage in ("grpo", "adapt"):
            result = self.results.get(stage)
            if result and result.get("adapter"):
                return stage, self.out / stage / result["adapter"]
        return None

    def adapter_dir(self) -> Path | None:
        latest = self.latest_adapter()
        return latest[1] if latest else None

    # ------------------------------------------------------------------ stages
    def kinematics(self, folder: Path) -> dict[str, Any]:
        rows = kinematics_stage(self.kinematics_robots, self.recipe.ik_targets)
        return {"ik_targets": self.recipe.ik_targets, "rows": [dataclasses.asdict(r) for r in rows]}

    def base(self, folder: Path) -> dict[str, Any]:
        print(f"  tiny base {self.base_dir} (trained on {', '.join(self.processor.embodiment_names)}); "
              f"{self.robot.name} was held out")
        return {"eval": self.evaluate(self.base_model(), folder, "zero-shot")}

    def adapt(self, folder: Path) -> dict[str, Any]:
        from .training import AdaptRecipe, adapt, prepare_data, save_adapter, trainable_share
        from .training.transfer import folder_bytes

        recipe = AdaptRecipe.from_yaml(recipe_path("adapt_lora"), goal_distance=self.recipe.goal_distance, **self.recipe.adapt)
        data = prepare_data(recipe, folder / "data", robots=[self.robot], episodes=recipe.episodes)[self.robot.name]
        model, log = adapt(self.base_model(), self.processor, self.robot, data, recipe)
        adapter = save_adapter(model, self.robot, folder / "adapter")
        return {
            "adapter": str(adapter.relative_to(folder)),
            "demos": min(recipe.episodes, data.num_episodes),
            "train_steps": recipe.train_steps,
            "train_seconds": log[-1]["seconds"],
            "trainable_share": trainable_share(model),
            "adapter_bytes": folder_bytes(adapter),
            "eval": self.evaluate(model.eval(), folder, "LoRA"),
        }

    def grpo(self, folder: Path) -> dict[str, Any]:
        from .training import attach_adapter, load_adapter, lora_config
        from .training.grpo import GrpoRecipe, run_grpo, trainable_adapter

        r = self.recipe
        recipe = GrpoRecipe.from_yaml(
            recipe_path("grpo_reach"), goal_distance=r.goal_distance, eval_episodes=r.eval_episodes,
            eval_max_steps=r.eval_max_steps, **r.grpo,
        )
        start_from = self.adapter_dir()
        torch.manual_seed(recipe.seed)  # before a new adapter: peft draws its initial weights from the global generator
        if start_from is not None:
            model, _ = load_adapter(self.base_model(), start_from, self.robot)
            trainable_adapter(model)
        else:
            model = attach_adapter(self.base_model(), self.robot, lora_config(**recipe.lora))
        result = run_grpo(model, self.processor, [self.robot], recipe, folder, verbose=self.verbose)
        adapter = folder / "model" / self.robot.name
        return {
            "adapter": str(adapter.relative_to(folder)),
            "steps": result["trainer"].state.global_step,
            "planned_steps": recipe.steps,
            "budget_stop": result["budget_stop"],
            "train_seconds": result["seconds"],
            "num_generations": recipe.num_generations,
            "rewards": result["rewards"],
            "eval": self.evaluate(model.eval(), folder, "LoRA + GRPO"),
        }

    def export(self, folder: Path) -> dict[str, Any]:
        from .export.quantize import WEIGHTS_NAME
        from .export.thor import ExportRecipe, build_bundle, load_model

        recipe = ExportRecipe.from_yaml(recipe_path("export_thor"), **self.recipe.export)
        adapter = self.adapter_dir()
        model, processor, _ = load_model(self.base_dir, adapter)
        float_bytes = sum(p.numel() * 4 for p in model.parameters())
        manifest = build_bundle(
            model, processor, folder / "bundle", recipe.quant_config(), [self.robot.name], recipe.batch_size,
            recipe.check_trials, recipe.latency_repeats, {"base_model": str(self.base_dir), "adapter": str(adapter)},
        )
        entry = manifest["embodiments"][0]
        latency = {k: v for k, v in entry["latency_ms"].items() if isinstance(v, (int, float))}
        return {
            "bundle": "bundle",
            "precision": manifest["precision"],
            "bundle_bytes": manifest["bytes_total"],
            "weights_bytes": manifest["files"][WEIGHTS_NAME]["bytes"],
            "float32_weight_bytes": float_bytes,
            "onnx_max_abs": entry["onnx_check"]["max_abs_canonical"],
            "latency_ms": latency,
            "latency_device": entry["latency_ms"].get("device", "this machine"),
            "budget_ms": entry["budget_ms"],
            "within_budget": entry["within_budget"],
            "trtexec": entry["trtexec"],
            "eval": self.evaluate(model, folder, f"{manifest['precision']} quantized"),
        }

    def publish(self, folder: Path) -> dict[str, Any]:
        import huggingface_hub
        from huggingface_hub import snapshot_download

        from .hub import find_eval, publish
        from .export.thor import sha256
        from .hub.local_server import LocalHub

        # The local server speaks the classic LFS protocol, not Xet: switch Xet off in this process.
        huggingface_hub.constants.HF_HUB_DISABLE_XET = True
        hub = LocalHub().start()
        org = self.recipe.hub_org
        uploads = [("base", self.base_dir, "base", f"{org}/wam-tiny", None)]
        latest = self.latest_adapter()
        if latest is not None:
            stage, adapter = latest
            uploads.append(("adapter", adapter, stage, f"{org}/wam-tiny-{self.robot.name}-lora", f"{org}/wam-tiny"))
        export = self.results.get("export")
        if export:
            bundle = self.out / "export" / export["bundle"]
            uploads.append(("export", bundle, "export", f"{org}/wam-tiny-{self.robot.name}-thor", f"{org}/wam-tiny"))
        repos = []
        try:
            for kind, local, stage, repo_id, base_model in uploads:
                eval_path = find_eval(local) or find_eval(self.out / stage)
                res = publish(local, repo_id, base_model=base_model, eval_path=eval_path, endpoint=hub.url)
                pulled = Path(snapshot_download(repo_id, endpoint=hub.url, cache_dir=folder / "cache"))
                same = all((pulled / rel).is_file() and sha256(pulled / rel) == digest for rel, digest in res.sha256.items())
                card = (pulled / "README.md").read_text()
                (folder / f"{kind}_card.md").write_text(card)
                repos.append({"kind": kind, "repo": repo_id, "commit": res.commit_oid, "files": len(res.files),
                              "pulled_identical": same, "card": f"{kind}_card.md"})
                print(f"  pushed {kind} to {repo_id} ({len(res.files)} files); pulled back {'identical' if same else 'DIFFERENT'}")
        finally:
            hub.stop()
        return {"endpoint": "local in-memory server (embodyhub.hub.local_server)", "repos": repos}


def _success_plot(stages: list[tuple[str, dict[str, Any]]], path: Path, robot: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 0.6 * len(stages) + 1.6))
    success_bars(ax, [n for n, _ in stages], [e["success_rate"] for _, e in stages], [e["episodes"] for _, e in stages],
                 f"{robot}: held-out reach success after each stage")
    ax.set_ylabel("stage")
    return save_figure(fig, path)


LATENCY_LABELS = {
    "onnxruntime_graph": "ONNX graph (onnxruntime)",
    "onnxruntime_graph_and_native_decode": "ONNX graph + decode (IK, clamp)",
    "torch_eager_predict_action": "PyTorch eager predict_action",
}


def _latency_plot(export: dict[str, Any], path: Path) -> Path:
    """Latency per chunk on a log scale, so a 17 ms bar stays readable next to an 870 ms one and the budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.6 * len(export["latency_ms"]) + 1.8))
    names = list(export["latency_ms"])
    values = [export["latency_ms"][n] for n in names]
    bars = ax.barh([LATENCY_LABELS.get(n, n.replace("_", " ")) for n in names], values, color="tab:orange")
    ax.bar_label(bars, labels=[f"{v:.1f} ms" for v in values], padding=4)
    ax.set_xscale("log")
    low, high = min(values + [export["budget_ms"]]), max(values + [export["budget_ms"]])
    ax.set_xlim(low / 2, high * 6)  # room for the labels right of the longest bar
    ax.invert_yaxis()
    ax.axvline(export["budget_ms"], color="k", ls="--", label=f"control budget {export['budget_ms']:.0f} ms")
    ax.set_xlabel("ms per action chunk (log scale)")
    ax.set_ylabel("path")
    ax.set_title(f"{export['precision']} bundle latency ({export['latency_device']})")
    ax.legend(loc="best", fontsize=8)
    return save_figure(fig, path)


def render_report(demo: Demo, seconds: float) -> str:
    """Markdown of what this run (and resumed earlier runs) measured."""
    res, robot = demo.results, demo.robot.name
    threads, load = torch.get_num_threads(), "/".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        "# embodyhub demo report",
        "",
        f"Total {seconds:.0f} s in this invocation (torch {torch.__version__}, {threads} thread{'s' * (threads > 1)}; "
        f"machine load average {load}, over the last 1/5/15 minutes at the end). "
        f"Robot adapted: **{robot}**, held out from the tiny base's pretraining; task: reaches to goals up to "
        f"{demo.recipe.goal_distance} rad per joint from the start (pretraining used 0.3), "
        f"{demo.recipe.eval_episodes} held-out targets, success = 2 cm and 0.1 rad within {demo.recipe.eval_max_steps} steps.",
        "",
    ]
    kin = res.get("kinematics")
    if kin:
        lines += [
            "## Kinematics from URDFs",
            "",
            f"Canonical round trip (max abs error), IK on {kin['ik_targets']} random reachable targets per arm, and the "
            "end-effector error of a Panda reach retargeted onto each robot.",
            "",
            "| robot | DoF | arms | round trip | IK success | IK ms/target | Panda retarget max error |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in kin["rows"]:
            shown = "-" if r["retarget_mm"] is None else f"{r['retarget_mm']:.2f} mm"
            lines.append(f"| {r['name']} | {r['dof']} | {r['arms']} | {r['round_trip_err']:.1e} | {r['ik_success']:.1%} "
                         f"| {r['ik_ms_per_target']:.2f} | {shown} |")
        lines += ["", "A retarget error above 1 mm means the Panda's end-effector poses leave that robot's workspace.", ""]
    stages = [(label, res[s]["eval"]) for s, label in
              (("base", "zero-shot"), ("adapt", "LoRA"), ("grpo", "LoRA+GRPO"), ("export", "int8 bundle")) if res.get(s)]
    if stages:
        png = _success_plot(stages, demo.out / "success.png", robot)
        lines += ["## Success after each stage", "", "| stage | success | mean final error | mean steps |", "|---|---|---|---|"]
        lines += [f"| {n} | {e['success_rate']:.0%} | {e['pos_err'] * 1e3:.1f} mm | {e['steps']:.1f} |" for n, e in stages]
        lines += ["", f"![success]({png.name})", ""]
    if res.get("adapt"):
        a = res["adapt"]
        lines += ["## LoRA adaptation", "",
                  f"{a['demos']} synthetic demonstrations, {a['train_steps']} steps in {a['train_seconds']:.0f} s, "
                  f"{a['trainable_share']:.1%} of the parameters trained, adapter {a['adapter_bytes'] / 1e6:.2f} MB on disk.",
                  "Example paths: ![lora](adapt/eval.png)", ""]
    if res.get("grpo"):
        g = res["grpo"]
        rewards = [r for _, r in g["rewards"]]
        trend = f"mean group reward {rewards[0]:.2f} at the first step, {rewards[-1]:.2f} at the last" if rewards else "no reward logged"
        stop = g.get("budget_stop")
        budget = (f" **Stopped on its time budget ({stop['time_budget_s']:g} s) after {stop['steps']} of "
                  f"{stop['planned_steps']} planned steps**: the numbers below GRPO come from a shorter run." if stop else "")
        lines += ["## GRPO post-training (TRL)", "",
                  f"{g['steps']} GRPO steps ({g['num_generations']} sampled chunks per observation, reward from executing "
                  f"each chunk in the reach environment) in {g['train_seconds']:.0f} s; {trend}.{budget}",
                  "![grpo](grpo/grpo_curve.png)", ""]
    if res.get("export"):
        e = res["export"]
        lat = ", ".join(f"{k}: {v:.1f} ms" for k, v in e["latency_ms"].items())
        lines += ["## Jetson Thor bundle", "",
                  f"{e['precision']} weights {e['weights_bytes'] / 1e6:.2f} MB vs {e['float32_weight_bytes'] / 1e6:.2f} MB in float32 "
                  f"({e['weights_bytes'] / e['float32_weight_bytes']:.2f}x); whole bundle (weights, ONNX graphs, cards, manifest) "
                  f"{e['bundle_bytes'] / 1e6:.2f} MB. ONNX vs PyTorch max abs difference {e['onnx_max_abs']:.1e}. "
                  f"Latency per chunk ({e['latency_device']}): {lat}; control budget {e['budget_ms']:.0f} ms "
                  f"({'within' if e['within_budget'] else 'MISSED on this CPU'}). On the Thor: `{e['trtexec']}`.",
                  f"![latency]({_latency_plot(e, demo.out / 'latency.png').name})", ""]
    if res.get("publish"):
        lines += ["## Published (local Hub-protocol server)", "", "| kind | repo | files | pulled back identical | card |", "|---|---|---|---|---|"]
        lines += [f"| {p['kind']} | {p['repo']} | {p['files']} | {p['pulled_identical']} | [card](publish/{p['card']}) |"
                  for p in res["publish"]["repos"]]
        lines.append("")
    skipped = [s for s in STAGES if res.get(s) is None]
    if skipped:
        lines += [f"Skipped stages: {', '.join(skipped)}.", ""]
    return "\n".join(lines)


def run_demo(
    out: Path,
    robot: str | None = None,
    smoke: bool = False,
    skip: list[str] | None = None,
    recipe: str = "demo",
    verbose: bool = False,
) -> Path:
    """Run (or resume) every stage and write ``out/report.md``; returns its path. ``verbose`` prints TRL's logs."""
    start = time.perf_counter()
    settings = DemoRecipe.from_yaml(recipe_path(recipe))
    if smoke:
        settings = dataclasses.replace(settings, **settings.smoke)
    if robot:
        settings = dataclasses.replace(settings, robot=robot)
    unknown = set(skip or ()) - set(STAGES)
    if unknown:
        raise EmbodyHubError(f"unknown stages {sorted(unknown)}; stages are {', '.join(STAGES)}")
    out.mkdir(parents=True, exist_ok=True)
    demo = Demo(out, settings, set(skip or ()), verbose)
    for i, name in enumerate(STAGES, 1):
        demo.run_stage(i, name, getattr(demo, name))
    report = out / "report.md"
    report.write_text(render_report(demo, time.perf_counter() - start))
    return report
