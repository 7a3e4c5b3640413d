"""Model cards: what a published folder is (base model, robot adapter or Thor export bundle), rendered
from the Jinja templates in ``model_cards/`` with Hub metadata built through ``huggingface_hub.ModelCardData``.

The card is rendered from the folder itself (config, processor, embodiment cards, adapter config, bundle
manifest) plus an optional ``eval.json`` written by ``embodyhub eval``/``train``, so what the card says
about robots, frames and units is what the files hold.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Sequence

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..embodiment.spec import CARD_NAME

CardKind = Literal["base", "adapter", "export"]
KINDS: tuple[CardKind, ...] = ("base", "adapter", "export")
TEMPLATES: dict[CardKind, str] = {"base": "base_model.md.j2", "adapter": "robot_adapter.md.j2", "export": "thor_export.md.j2"}
LIBRARY_NAME = "embodyhub"
PIPELINE_TAG = "robotics"
MANIFEST = "manifest.json"
EVAL_FILE = "eval.json"
EVAL_PLOT = "eval.png"


def templates_dir() -> Path:
    """The installed ``model_cards`` folder (``embodyhub.model_cards``)."""
    return Path(str(resources.files("embodyhub.model_cards")))


def detect_kind(folder: str | os.PathLike) -> CardKind:
    """``export`` if the folder has a ``manifest.json``, ``adapter`` if it has ``adapter_config.json``,
    ``base`` if it has a ``config.json`` or ``processor_config.json``."""
    path = Path(folder)
    if (path / MANIFEST).is_file():
        return "export"
    if (path / "adapter_config.json").is_file():
        return "adapter"
    if (path / "config.json").is_file() or (path / "processor_config.json").is_file():
        return "base"
    raise FileNotFoundError(
        f"{path} is not a folder embodyhub can publish: expected save_pretrained output (config.json), "
        "an adapter (adapter_config.json) or an export bundle (manifest.json)"
    )


def embodiment_cards(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """Every ``embodiment.json`` under ``folder`` (the processor's, an adapter's, a bundle's), by name."""
    cards = {}
    for path in sorted(Path(folder).rglob(CARD_NAME)):
        if ".cache" in path.parts or ".git" in path.parts:
            continue
        card = json.loads(path.read_text())
        cards[card.get("name", path.parent.name)] = card
    return [cards[k] for k in sorted(cards)]


def _robot_row(card: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": card["name"],
        "dof": card.get("dof"),
        "arms": [f"{a['base']} → {a['tip']} ({len(a.get('joints', []))} joints)" for a in card.get("arms", [])],
        "grippers": [g["joint"] for g in card.get("grippers", [])],
        "control_hz": card.get("control_hz"),
        "action_representation": card.get("action_representation"),
        "slots": card.get("canonical", {}).get("filled_slots", []),
        "urdf_sha256": card.get("urdf_sha256", ""),
        "mjcf_sha256": (card.get("mjcf") or {}).get("sha256"),
    }


SIM_EVAL_KEYS = ("task", "robot", "control", "policy", "episodes", "seeds", "success_rate", "mean_steps")


def load_eval(path: str | os.PathLike | None) -> dict[str, dict[str, Any]]:
    """An ``eval.json`` of ``embodyhub eval``, by row name: the kinematic reach summary (``{robot: {episodes,
    success_rate, ...}}``) or the manipulation benchmark's list of per robot and task rows (``eval --env``),
    named ``"<robot> <task>"`` (``"<robot> <task> baseline"`` for a baseline row). A row with ``"baseline": true``
    (``embodyhub adapt``'s zero-shot rows) is a comparison, not the published model's result."""
    if path is None:
        return {}
    data = json.loads(Path(path).read_text())
    if isinstance(data, list):
        bad = [i for i, row in enumerate(data) if not isinstance(row, dict) or not all(k in row for k in SIM_EVAL_KEYS)]
        if bad:
            raise ValueError(f"{path}: rows {bad} lack some of {SIM_EVAL_KEYS}; expected the eval.json of `embodyhub eval --env`")
        return {f"{row['robot']} {row['task']}" + (" baseline" if row.get("baseline") else ""): row for row in data}
    required = ("episodes", "success_rate", "pos_err", "rot_err", "steps")
    bad = [name for name, row in data.items() if not all(k in row for k in required)]
    if bad:
        raise ValueError(f"{path}: rows {bad} lack some of {required}; expected the eval.json of `embodyhub eval`")
    return data


def eval_results(results: dict[str, dict[str, Any]]) -> list[EvalResult]:
    """``model-index`` entries: per robot reach success and final position error, or per robot and task the
    manipulation benchmark's success rate."""
    out = []
    for name, row in results.items():
        if "task" in row:
            common = dict(task_type="robotics", task_name=f"Closed-loop {row['task']} (robosuite, {row['control']} control)",
                          dataset_type=f"embodyhub/robosuite-{row['task']}", dataset_name=f"embodyhub {row['task']} ({row['robot']})",
                          dataset_config=row["robot"])
            out.append(EvalResult(metric_type="success_rate", metric_name=f"{row['task']} success rate", metric_value=float(row["success_rate"]), **common))
            continue
        common = dict(
            task_type="robotics",
            task_name="Closed-loop reach",
            dataset_type="embodyhub/reach-kinematic",
            dataset_name=f"embodyhub reach ({name})",
            dataset_config=name,
        )
        out.append(EvalResult(metric_type="success_rate", metric_name="reach success rate", metric_value=float(row["success_rate"]), **common))
        out.append(EvalResult(metric_type="pos_err", metric_name="final position error (m)", metric_value=float(row["pos_err"]), **common))
    return out


def sim_eval_command(rows: list[dict[str, Any]], repo_id: str, kind: CardKind = "base", base_model: str | None = None) -> str:
    """The ``embodyhub eval`` line that reruns the manipulation rows of a card (same episodes and seeds): the
    model's own rows, not the baselines (an adapter's zero-shot rows: the same line without ``--adapter``)."""
    rows = [r for r in rows if not r.get("baseline")] or rows
    tasks = ",".join(dict.fromkeys(r["task"] for r in rows))
    robots = " ".join(f"--robot {r}" for r in dict.fromkeys(r["robot"] for r in rows))
    first = rows[0]
    if first["policy"] == "expert":
        policy = "--policy expert"
    else:
        policy = f"--model {base_model} --adapter {repo_id}" if kind == "adapter" else f"--model {repo_id}"
    return (f"embodyhub eval --env {tasks} {robots} {policy} --control {first['control']} "
            f"--episodes {first['episodes']} --seed {first['seeds'][0]}")


@dataclass
class RenderedCard:
    """A rendered ``README.md`` and what it was rendered from."""

    kind: CardKind
    text: str
    card_data: ModelCardData
    extra_files: dict[str, Path]  # repo path -> local file to upload beside the folder (the eval plot)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def render_card(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    kind: CardKind | None = None,
    base_model: str | None = None,
    license: str = "apache-2.0",
    datasets: Sequence[str] = (),
    eval_path: str | os.PathLike | None = None,
    recipe_path: str | os.PathLike | None = None,
    extra_tags: Sequence[str] = (),
    context: str | os.PathLike | None = None,
) -> RenderedCard:
    """Render the card of ``folder`` as it will be published to ``repo_id``.

    ``base_model`` (a Hub id) is required for adapters and exports (a bundle's manifest may name it).
    ``eval_path`` is an ``eval.json`` of ``embodyhub eval``; an ``eval.png`` beside it is published too.
    ``context``: a folder with files the repo already holds (e.g. the model's ``config.json`` when only
    the processor is pushed), read for the card but not uploaded.
    """
    path = Path(folder)
    kind = kind or detect_kind(path)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    sources = [path] + ([Path(context)] if context is not None else [])
    manifest = _read_json(path / MANIFEST) if kind == "export" else {}
    base_model = base_model or manifest.get("base_model")
    if kind != "base" and not base_model:
        raise ValueError(f"a {kind} card needs base_model: the Hub id of the base model it was made from")

    cards: dict[str, dict[str, Any]] = {}
    for src in reversed(sources):  # the folder being published wins over the repo's current files
        cards.update({c["name"]: c for c in embodiment_cards(src)})
    config = next((c for c in (_read_json(s / "config.json") for s in sources) if c), {})
    for entry in manifest.get("embodiments", []) if isinstance(manifest.get("embodiments"), list) else []:
        if isinstance(entry, dict) and entry.get("robot") not in cards and "robot" in entry:  # a bundle's per-robot entry
            cards[entry["robot"]] = {"name": entry["robot"], **{k: entry[k] for k in ("dof", "control_hz", "urdf_sha256") if k in entry}}
    robots = [_robot_row(cards[n]) for n in sorted(cards)]
    for name, sha in sorted(config.get("embodiments", {}).items()):  # trained robots whose card is not here
        if name not in cards:
            robots.append({"name": name, "urdf_sha256": sha, "dof": None, "arms": [], "grippers": [], "control_hz": None, "action_representation": None, "slots": []})

    results = load_eval(eval_path)
    extra_files: dict[str, Path] = {}
    if eval_path is not None and (Path(eval_path).parent / EVAL_PLOT).is_file():
        extra_files[EVAL_PLOT] = Path(eval_path).parent / EVAL_PLOT
    tags = ["embodyhub", "robotics", "world-action-model", *([] if kind == "base" else ["lora" if kind == "adapter" else "jetson-thor"])]
    tags += [r["name"] for r in robots] + list(extra_tags)
    card_data = ModelCardData(
        library_name=LIBRARY_NAME,
        pipeline_tag=PIPELINE_TAG,
        license=license,
        tags=tags,
        base_model=base_model if kind != "base" else None,
        datasets=list(datasets) or None,
        model_name=repo_id,
        eval_results=eval_results({k: v for k, v in results.items() if not v.get("baseline")}) or None,  # this model's own rows
    )
    sim_rows = [v for v in results.values() if "task" in v]  # eval --env rows (per robot and task)
    values: dict[str, Any] = {
        "repo_id": repo_id,
        "kind": kind,
        "base_model": base_model,
        "robots": robots,
        "card_location": {"base": "`embodiments/<robot>/embodiment.json`", "adapter": "`embodiment.json`", "export": "the bundle"}[kind],
        "eval_rows": [{"robot": k, **v} for k, v in results.items() if "task" not in v],
        "sim_rows": sim_rows,
        "sim_command": sim_eval_command(sim_rows, repo_id, kind, base_model) if sim_rows else None,
        "sim_baselines": any(r.get("baseline") for r in sim_rows),
        "eval_plot": EVAL_PLOT if extra_files else None,
        "recipe": Path(recipe_path).read_text().strip() if recipe_path is not None else None,
    }
    if kind == "base":
        values.update(_model_facts(config, sources))
    elif kind == "adapter":
        values["lora"] = _read_json(path / "adapter_config.json")
        values["lora"].setdefault("target_modules", [])
        shape = _read_json(path / "wam_base.json")
        values["base_shape"] = ", ".join(f"{k} {v}" for k, v in shape.items() if k != "model_type") or "not recorded"
    else:
        values.update(_bundle_facts(manifest))

    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(
        loader=FileSystemLoader(str(templates_dir())), undefined=StrictUndefined, keep_trailing_newline=True, trim_blocks=True
    )
    text = env.get_template(TEMPLATES[kind]).render(card_data=card_data.to_yaml(), **values)
    ModelCard(text)  # fails loudly here, not on the Hub, if the metadata block does not parse
    return RenderedCard(kind, text, card_data, extra_files)


def _model_facts(config: dict[str, Any], sources: list[Path]) -> dict[str, Any]:
    processor = next((c for c in (_read_json(s / "processor_config.json") for s in sources) if c), {})
    from safetensors import SafetensorError, safe_open

    params = 0
    for src in sources:
        for weights in sorted(src.glob("*.safetensors")):
            try:
                with safe_open(str(weights), "pt") as f:
                    for key in f.keys():
                        params += _numel(f.get_slice(key).get_shape())
            except SafetensorError:  # a broken file: counted as unknown here, refused by publish (check_loads)
                continue
        if params:
            break

    def get(key: str) -> Any:
        return config.get(key, "?")

    return {
        "parameters": f"{params / 1e6:.2f}M" if params else "?",
        "layers": get("num_hidden_layers"),
        "hidden_size": get("hidden_size"),
        "heads": get("num_attention_heads"),
        "intermediate_size": get("intermediate_size"),
        "action_bins": get("action_bins"),
        "chunk_length": config.get("chunk_length", processor.get("chunk_length", "?")),
        "action_dim": get("action_dim"),
        "max_arms": get("max_arms"),
    }


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _bundle_facts(manifest: dict[str, Any]) -> dict[str, Any]:
    """Scalar facts of the manifest as table rows, its file hashes, and its TensorRT command if any."""
    facts = [(k.replace("_", " "), v) for k, v in manifest.items() if isinstance(v, (str, int, float, bool)) and k not in ("trtexec", "base_model")]
    for key in ("latency", "latency_ms", "budget", "control_budget"):
        if isinstance(manifest.get(key), dict):
            facts += [(f"{key.replace('_', ' ')}: {k}", v) for k, v in manifest[key].items() if isinstance(v, (str, int, float, bool))]
    files = manifest.get("files", {})
    if isinstance(files, list):
        files = {f.get("path", f.get("name", "?")): f.get("sha256", "") for f in files if isinstance(f, dict)}
    bundle_files = sorted((name, v if isinstance(v, str) else v.get("sha256", "")) for name, v in files.items())
    entries = [e for e in manifest.get("embodiments", []) if isinstance(e, dict)] if isinstance(manifest.get("embodiments"), list) else []
    for e in entries:  # per-robot measurements of the export (latency per chunk vs the control budget)
        for key in ("latency_ms", "budget_ms", "within_budget", "warning"):
            value = e.get(key)
            rows = value.items() if isinstance(value, dict) else [("", value)] if value is not None else []
            facts += [(f"{e.get('robot', '?')}: {key.replace('_', ' ')}{' ' + k if k else ''}", v) for k, v in rows]
    trtexec = manifest.get("trtexec") or next((e["trtexec"] for e in entries if isinstance(e.get("trtexec"), str)), None)
    return {"manifest_facts": facts, "bundle_files": bundle_files, "trtexec": trtexec if isinstance(trtexec, str) else None}
