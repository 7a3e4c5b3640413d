"""Publishing to a local Hub-protocol server (embodyhub/hub/local_server.py on 127.0.0.1), model cards, embodiment checks.

huggingface_hub reads HF_ENDPOINT and HF_HUB_DISABLE_XET at import time and this process imported it at
collection: pushes made here pass the server's endpoint explicitly (``publish(endpoint=...)``) with Xet
switched off through ``huggingface_hub.constants``; every download and the CLI run in a subprocess with
its own environment and a fresh cache, which is what a user's fresh process sees.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard, ModelCardData

from embodyhub.cli import main
from embodyhub.embodiment import Embodiment, load_robot
from embodyhub.errors import EmbodimentMismatchError, EmbodyHubError
from embodyhub.hub import EmbodimentAdaptedWarning, find_eval, publish, render_card
from embodyhub.models.wam import WamConfig, WamForActionPrediction, WamProcessor
from embodyhub.training.lora import attach_adapter, lora_config, save_adapter

sys.path.insert(0, str(Path(__file__).parent))
from embodyhub.hub.local_server import LocalHub  # noqa: E402

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, chunk_length=2)
EVAL = {"panda": {"episodes": 4, "success_rate": 0.75, "pos_err": 0.0123, "rot_err": 0.2, "steps": 17.5}}

# Shared by the subprocesses: a fixed observation, greedy actions, and file hashes, printed as JSON.
CLIENT_PRELUDE = """
import hashlib, json, sys
import torch
torch.set_num_threads(1)
import embodyhub
from embodyhub.embodiment import load_robot

def observation(seed=0):
    emb = load_robot("panda")
    gen = torch.Generator().manual_seed(seed)
    q = emb.sample(2, gen)
    goal = torch.stack([c.forward_kinematics(emb.sample(2, gen)[:, i]) for c, i in zip(emb.chains, emb.arm_indices)], 1)
    return emb, {"state": q, "goal": goal}

def actions(model, processor):
    emb, obs = observation()
    torch.manual_seed(0)
    return model.predict_action(**processor(obs, processor.embodiments["panda"])).tolist()
"""


@pytest.fixture(scope="module")
def server():
    hub = LocalHub().start()
    yield hub
    hub.stop()


@pytest.fixture()
def hub(server, monkeypatch):
    """The server, with this process's huggingface_hub using the basic LFS transfer (no Xet) for pushes."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    return server


def client(hub: LocalHub, code: str, home: Path, offline: bool = False, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter pointed at the local server, with its own HF cache ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1", HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1", OMP_NUM_THREADS="1")
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run([sys.executable, "-c", CLIENT_PRELUDE + textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=240)
    if check and proc.returncode != 0:
        raise AssertionError(f"client failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}")
    return proc


def cli_push(hub: LocalHub, folder: Path, repo: str, home: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    code = f"sys.exit(__import__('embodyhub.cli', fromlist=['main']).main({['push', str(folder), '--repo', repo, *extra]!r}))"
    return client(hub, code, home, check=check)


def tiny_base(folder: Path, seed: int = 0) -> tuple[WamForActionPrediction, WamProcessor]:
    torch.manual_seed(seed)
    model = WamForActionPrediction(WamConfig(**TINY, embodiments={"panda": load_robot("panda").urdf_sha256})).eval()
    processor = WamProcessor(chunk_length=2)
    processor.add_embodiment(load_robot("panda"))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor


def digest_tree(folder: Path) -> dict[str, tuple[str, int]]:
    return {p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def fake_bundle(folder: Path) -> Path:
    """A bundle folder shaped like the export's: graph, weights, embodiment card, manifest with hashes."""
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(os.urandom(3000))
    (folder / "weights_int8.safetensors").write_bytes(os.urandom(5000))
    load_robot("panda").save_pretrained(folder / "embodiments" / "panda")
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.*")}
    entry = {"robot": "ur5", "dof": 6, "control_hz": 50.0, "urdf_sha256": load_robot("ur5").urdf_sha256, "latency_ms": {"onnxruntime_cpu_1_thread": 3.1},
             "budget_ms": 80.0, "within_budget": True, "trtexec": "trtexec --onnx=model.onnx --saveEngine=model.engine"}
    manifest = {"base_model": "org/wam-tiny", "precision": "int8", "target": "jetson-thor", "embodiments": [entry],
                "files": {name: {"sha256": digest, "bytes": 1} for name, digest in files.items()}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


# ---------------------------------------------------------------------------------------------- cards
def test_cards_of_the_three_kinds_parse_and_validate(tmp_path):
    model, _ = tiny_base(tmp_path / "base")
    (tmp_path / "eval.json").write_text(json.dumps(EVAL))
    (tmp_path / "eval.png").write_bytes(b"\x89PNG fake")
    peft_model = attach_adapter(model, load_robot("panda"), lora_config(r=2))
    adapter = save_adapter(peft_model, load_robot("panda"), tmp_path / "adapter")
    bundle = fake_bundle(tmp_path / "bundle")

    cards = {
        "base": render_card(tmp_path / "base", "org/wam-tiny", eval_path=tmp_path / "eval.json", datasets=["org/reach-demos"]),
        "adapter": render_card(adapter, "org/panda-lora", base_model="org/wam-tiny", eval_path=tmp_path / "eval.json"),
        "export": render_card(bundle, "org/wam-tiny-thor"),  # base_model comes from the manifest
    }
    for kind, rendered in cards.items():
        assert rendered.kind == kind
        card = ModelCard(rendered.text)
        data = card.data.to_dict()
        ModelCardData(**data)  # the metadata block round-trips through the Hub's own schema class
        assert data["library_name"] == "embodyhub" and data["pipeline_tag"] == "robotics" and data["license"] == "apache-2.0"
        assert "panda" in data["tags"]
        assert "pip install embodyhub" in card.text and "import embodyhub" in card.text
        for section in ("## Robots and action spaces", "## How to load", "## Training recipe", "## Evaluation", "## Limitations"):
            assert section in card.text, (kind, section)
        assert "b47ea8afdc89918a" in card.text  # panda's URDF sha256 in the robots table
        if kind != "base":
            assert data["base_model"] == "org/wam-tiny"
    base = ModelCard(cards["base"].text)
    assert base.data.datasets == ["org/reach-demos"]
    results = {(r.dataset_config, r.metric_type): r.metric_value for r in base.data.eval_results}
    assert results == {("panda", "success_rate"): 0.75, ("panda", "pos_err"): 0.0123}
    assert "75.0%" in base.text and "![closed-loop reach" in base.text and cards["base"].extra_files["eval.png"].is_file()
    assert "rank 2" in cards["adapter"].text and "q_proj" in cards["adapter"].text
    # an adapter's eval.json (embodyhub adapt) holds the base's zero-shot row as a baseline: shown, not reported as the adapter's
    adapted = {"panda zero-shot": {**EVAL["panda"], "baseline": True}, "panda LoRA": {**EVAL["panda"], "success_rate": 0.9}}
    (tmp_path / "adapt").mkdir()
    (tmp_path / "adapt" / "eval.json").write_text(json.dumps(adapted))
    card = ModelCard(render_card(adapter, "org/panda-lora", base_model="org/wam-tiny", eval_path=tmp_path / "adapt" / "eval.json").text)
    assert {(r.dataset_config, r.metric_type): r.metric_value for r in card.data.eval_results}[("panda LoRA", "success_rate")] == 0.9
    assert {r.dataset_config for r in card.data.eval_results} == {"panda LoRA"} and "panda zero-shot (baseline: not this model)" in card.text
    assert "int8" in cards["export"].text and "trtexec --onnx=model.onnx" in cards["export"].text
    assert "| `ur5` | 6 |" in cards["export"].text and "ur5: latency ms onnxruntime_cpu_1_thread | 3.1" in cards["export"].text
    assert "ur5" in ModelCard(cards["export"].text).data.tags  # robots from the manifest's per-robot entries too
    assert ModelCard(cards["export"].text).data.eval_results is None  # no eval attached: no model-index
    with pytest.raises(ValueError, match="base_model"):
        render_card(adapter, "org/panda-lora")


def test_adapter_card_of_a_simulator_adaptation_reports_its_own_rows_and_reruns_them_on_the_base(tmp_path):
    """`embodyhub adapt --env` writes RUN/adapter/ROBOT and RUN/eval.json with the base's zero-shot rows as baselines
    beside the adapter's, for the same robot and task."""
    model, _ = tiny_base(tmp_path / "base")
    adapter = save_adapter(attach_adapter(model, load_robot("panda"), lora_config(r=2)), load_robot("panda"), tmp_path / "run" / "adapter")
    row = {"task": "lift", "robot": "panda", "control": "joint", "policy": "runs/sim/model", "episodes": 50,
           "seeds": [1_000_000, 1_000_049], "mean_steps": 80.0}
    rows = [{**row, "adapter": None, "method": "zero-shot", "baseline": True, "success_rate": 0.4},
            {**row, "adapter": str(adapter), "method": "LoRA", "success_rate": 0.9}]
    (tmp_path / "run" / "eval.json").write_text(json.dumps(rows))
    assert find_eval(adapter) == tmp_path / "run" / "eval.json"
    card = ModelCard(render_card(adapter, "org/panda-lora", base_model="org/wam-sim", eval_path=find_eval(adapter)).text)
    assert [(r.dataset_config, r.metric_value) for r in card.data.eval_results] == [("panda", 0.9)]
    assert "| panda | lift | zero-shot (baseline: not this model) | joint | 50 (1000000-1000049) | 40.0% |" in card.text
    assert "| panda | lift | LoRA | joint | 50 (1000000-1000049) | 90.0% |" in card.text
    assert ("`embodyhub eval --env lift --robot panda --model org/wam-sim --adapter org/panda-lora --control joint --episodes 50 "
            "--seed 1000000`") in card.text


def test_push_dry_run_lists_files_and_card_without_network(tmp_path, capsys):
    tiny_base(tmp_path / "model")
    (tmp_path / "eval.json").write_text(json.dumps(EVAL))  # found beside the folder, like `embodyhub train --out`
    before = digest_tree(tmp_path / "model")
    assert main(["push", str(tmp_path / "model"), "--repo", "org/wam-tiny", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would upload" in out and "model.safetensors" in out and "embodiments/panda/embodiment.json" in out
    assert "library_name: embodyhub" in out and "model-index" in out
    assert digest_tree(tmp_path / "model") == before and not (tmp_path / "model" / "README.md").exists()
    result = publish(tmp_path / "model", "org/wam-tiny", dry_run=True)
    assert result.commit_oid is None and ("README.md", len(result.card.encode())) in result.files
    assert main(["push", str(tmp_path / "nope"), "--repo", "org/x", "--dry-run"]) == 2  # readable usage error


def test_push_skips_dotfiles_secrets_and_symlinks_out_of_the_folder_and_says_so(hub, tmp_path, capsys):
    """``push`` used to follow a symlink to a file outside the folder (uploading its contents) and upload
    ``.env``, ``.ssh/id_rsa`` and ``.huggingface_token``."""
    folder = tmp_path / "model"
    tiny_base(folder)
    secret = tmp_path / "passwd"
    secret.write_text("root:SECRET-OUTSIDE\n")
    planted = {".env": "HF_TOKEN=SECRET-ENV", ".ssh/id_rsa": "SECRET-SSH", ".huggingface_token": "SECRET-TOKEN",
               "id_ed25519": "SECRET-KEY", "certs/server.pem": "SECRET-PEM", "token": "SECRET-BARE"}
    for rel, text in planted.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    (folder / "passwd").symlink_to(secret)
    (folder / "outside_dir").symlink_to(tmp_path, target_is_directory=True)
    (folder / "config_link.json").symlink_to(folder / "config.json")  # a link inside the folder is fine
    skipped = {*planted, "passwd", "outside_dir"}

    assert main(["push", str(folder), "--repo", "org/leaky", "--dry-run"]) == 0
    out = capsys.readouterr().out
    for rel in skipped:
        assert f"skipped {rel}:" in out
    assert "SECRET" not in out

    result = publish(folder, "org/leaky", endpoint=hub.url)
    remote = hub.files("org/leaky")
    assert not skipped & set(remote) and "config_link.json" in remote and "model.safetensors" in remote
    assert not [name for name, data in remote.items() if b"SECRET" in data]
    assert sorted(n.split(" ")[1].rstrip(":") for n in result.notes) == sorted(skipped)


def test_push_refuses_a_model_or_adapter_folder_that_does_not_load(hub, tmp_path):
    """A half-written model or adapter used to be uploaded; now nothing is committed and the error says why."""
    model, _ = tiny_base(tmp_path / "model")
    weights = tmp_path / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(EmbodyHubError, match="does not load .base folder"):
        publish(tmp_path / "model", "org/half", dry_run=True)
    requests = len(hub.requests)
    assert cli_push(hub, tmp_path / "model", "org/half", tmp_path / "home", check=False).returncode == 2
    with pytest.raises(EmbodyHubError, match="does not load .base folder"):
        publish(tmp_path / "model", "org/half", endpoint=hub.url)
    assert len(hub.requests) == requests  # refused before any request

    tiny_base(tmp_path / "missing")
    (tmp_path / "missing" / "config.json").write_text(
        (tmp_path / "missing" / "config.json").read_text().replace('"num_hidden_layers": 2', '"num_hidden_layers": 3')
    )
    with pytest.raises(EmbodyHubError, match="weights do not match its config"):
        publish(tmp_path / "missing", "org/missing", dry_run=True)

    adapter = save_adapter(attach_adapter(model, load_robot("panda"), lora_config(r=2)), load_robot("panda"), tmp_path / "adapter")
    publish(adapter, "org/adapter-ok", base_model="org/base", dry_run=True)
    data = adapter / "adapter_model.safetensors"
    data.write_bytes(data.read_bytes()[:-100])
    with pytest.raises(EmbodyHubError, match="does not load .adapter folder"):
        publish(adapter, "org/adapter-half", base_model="org/base", dry_run=True)


# ---------------------------------------------------------------------------------------------- Hub round trips
def test_push_then_pull_in_fresh_process_is_bit_identical_and_offline_reload_is_silent(hub, tmp_path):
    model, processor = tiny_base(tmp_path / "model")
    (tmp_path / "eval.json").write_text(json.dumps(EVAL))
    before = digest_tree(tmp_path / "model")
    publish(tmp_path / "model", "org/wam-tiny", eval_path=find_eval(tmp_path / "model"), endpoint=hub.url)
    assert digest_tree(tmp_path / "model") == before  # the local folder was only read
    remote = hub.files("org/wam-tiny")
    assert remote["model.safetensors"] == (tmp_path / "model" / "model.safetensors").read_bytes()
    assert hub.repo("org/wam-tiny").resolve("main").files["model.safetensors"].lfs_sha256  # went through LFS
    assert hub.repo("org/wam-tiny").resolve("main").files["config.json"].lfs_sha256 is None  # regular file
    assert ModelCard(remote["README.md"].decode()).data.library_name == "embodyhub"

    local = {k: v.tolist() for k, v in model.state_dict().items()}
    pull = """
        from transformers import AutoModel, AutoProcessor
        model = AutoModel.from_pretrained("org/wam-tiny").eval()
        processor = AutoProcessor.from_pretrained("org/wam-tiny")
        print(json.dumps({"weights": {k: v.tolist() for k, v in model.state_dict().items()}, "actions": actions(model, processor),
                          "cache": sorted(str(p) for p in __import__("pathlib").Path(__import__("os").environ["HF_HOME"]).rglob("*.safetensors"))}))
    """
    fresh = json.loads(client(hub, pull, tmp_path / "home-pull").stdout.splitlines()[-1])
    assert fresh["weights"] == local and fresh["cache"]  # bit-identical (exact float lists), from the fresh cache
    exec(CLIENT_PRELUDE, ns := {})
    assert fresh["actions"] == ns["actions"](model, processor)  # identical greedy action chunk

    seen = len(hub.requests)
    offline = json.loads(client(hub, pull, tmp_path / "home-pull", offline=True).stdout.splitlines()[-1])
    assert len(hub.requests) == seen, hub.requests[seen:]  # zero requests reached the server
    assert offline["weights"] == local and offline["actions"] == fresh["actions"]


def test_interrupted_commit_keeps_previous_commit_and_retry_succeeds(hub, tmp_path):
    tiny_base(tmp_path / "v1", seed=1)
    publish(tmp_path / "v1", "org/interrupted", endpoint=hub.url)
    head, files_v1 = hub.head("org/interrupted"), hub.files("org/interrupted")
    tiny_base(tmp_path / "v2", seed=2)
    before = digest_tree(tmp_path / "v2")

    hub.drop_next_commit = True
    failed = cli_push(hub, tmp_path / "v2", "org/interrupted", tmp_path / "home", check=False)
    assert failed.returncode == 1 and "run the same command again" in failed.stderr, failed.stderr[-2000:]
    assert hub.head("org/interrupted") == head and hub.files("org/interrupted") == files_v1
    assert digest_tree(tmp_path / "v2") == before

    publish(tmp_path / "v2", "org/interrupted", endpoint=hub.url)  # the retry
    assert hub.head("org/interrupted") != head
    assert hub.repo("org/interrupted").resolve("main").parent == head  # one commit on top of the previous one
    assert hub.files("org/interrupted")["model.safetensors"] == (tmp_path / "v2" / "model.safetensors").read_bytes()
    assert digest_tree(tmp_path / "v2") == before


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_local_hub_refuses_a_truncated_commit_body(hub, framing):
    """The server committed what arrived of a commit body cut short by a dropped client (HEAD moved after 2
    of 5 lines); a body shorter than announced, or a chunked body without its last chunk, now commits nothing."""
    import base64
    import socket
    from urllib.parse import urlsplit

    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=hub.url)
    api.create_repo("org/truncated", exist_ok=True)
    api.create_commit("org/truncated", [CommitOperationAdd("a.txt", b"first")], commit_message="first")
    head = hub.head("org/truncated")
    lines = [{"key": "header", "value": {"summary": "five lines", "description": ""}}]
    lines += [{"key": "file", "value": {"path": f"f{i}.txt", "content": base64.b64encode(b"x").decode(), "encoding": "base64"}} for i in range(4)]
    body = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    sent = body[: body.index(b"\n", body.index(b"\n") + 1) + 1]  # the first 2 of the 5 lines, each complete
    url = urlsplit(hub.url)
    head_lines = f"POST /api/models/org/truncated/commit/main HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/x-ndjson\r\n"
    if framing == "content-length":
        request = (head_lines + f"Content-Length: {len(body)}\r\n\r\n").encode() + sent
    else:
        request = (head_lines + "Transfer-Encoding: chunked\r\n\r\n").encode() + f"{len(sent):x}\r\n".encode() + sent + b"\r\n"
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)  # the client is gone
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400") and b"truncated" in answer
    assert hub.head("org/truncated") == head and "f0.txt" not in hub.files("org/truncated")


def test_adapter_and_bundle_repos_and_push_to_hub_cards(hub, tmp_path):
    model, processor = tiny_base(tmp_path / "base")
    publish(tmp_path / "base", "org/lora-base", endpoint=hub.url)
    peft_model = attach_adapter(model, load_robot("panda"), lora_config(r=2))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    adapter = save_adapter(peft_model, load_robot("panda"), tmp_path / "adapter")
    exec(CLIENT_PRELUDE, ns := {})
    expected = ns["actions"](peft_model, processor)
    publish(adapter, "org/panda-lora", base_model="org/lora-base", endpoint=hub.url)
    bundle = fake_bundle(tmp_path / "bundle")
    publish(bundle, "org/wam-thor", endpoint=hub.url)
    assert hub.files("org/wam-thor")["model.onnx"] == (bundle / "model.onnx").read_bytes()
    assert ModelCard(hub.files("org/panda-lora")["README.md"].decode()).data.base_model == "org/lora-base"

    code = """
        from huggingface_hub import snapshot_download
        from transformers import AutoModel, AutoProcessor
        from embodyhub.models.wam import WamForActionPrediction, WamProcessor
        from embodyhub.training.lora import load_adapter
        processor = AutoProcessor.from_pretrained("org/lora-base")
        peft_model, robot = load_adapter(AutoModel.from_pretrained("org/lora-base").eval(), snapshot_download("org/panda-lora"))
        native = AutoModel.from_pretrained("org/lora-base").eval()
        native.load_adapter("org/panda-lora", adapter_name="panda")  # transformers' PEFT path, checked by us
        # the published adapter names its base by Hub id (the local training folder does not exist here)
        from peft import PeftConfig, PeftModel
        base_id = PeftConfig.from_pretrained("org/panda-lora").base_model_name_or_path
        via_peft = PeftModel.from_pretrained(AutoModel.from_pretrained(base_id).eval(), "org/panda-lora").eval()
        via_auto = AutoModel.from_pretrained("org/panda-lora").eval()
        bundle = snapshot_download("org/wam-thor")
        # push_to_hub goes through embodyhub's card, also when the model and processor are pushed separately
        model = WamForActionPrediction.from_pretrained("org/lora-base")
        model.push_to_hub("org/pushed")
        processor.push_to_hub("org/pushed")
        from huggingface_hub import hf_hub_download
        card = open(hf_hub_download("org/pushed", "README.md")).read()
        print(json.dumps({"peft": actions(peft_model, processor), "native": actions(native, processor), "robot": robot.name,
                          "base_id": base_id, "via_peft": actions(via_peft, processor), "via_auto": actions(via_auto, processor),
                          "manifest": json.load(open(bundle + "/manifest.json"))["precision"], "card": card}))
    """
    out = json.loads(client(hub, code, tmp_path / "home2").stdout.splitlines()[-1])
    assert out["robot"] == "panda" and out["manifest"] == "int8"
    assert out["peft"] == expected and out["native"] == expected
    assert out["base_id"] == "org/lora-base" and out["via_peft"] == expected and out["via_auto"] == expected
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] != "org/lora-base"  # local file untouched
    card = ModelCard(out["card"])
    assert card.data.library_name == "embodyhub" and "panda" in card.data.tags
    assert "| `panda` | 8 |" in card.text and "32 (2 heads" in card.text  # robots from the processor, shape from the config
    assert {"config.json", "model.safetensors", "processor_config.json", "embodiments/panda/robot.urdf"} <= set(hub.files("org/pushed"))


# ---------------------------------------------------------------------------------------------- embodiment checks
def _variant(emb: Embodiment, urdf_edit: tuple[str, str] | None = None, **changes) -> Embodiment:
    text = emb.urdf_text if urdf_edit is None else emb.urdf_text.replace(*urdf_edit, 1)
    card = emb.to_card()
    return Embodiment.from_urdf(text, arms=[(a.base, a.tip) for a in emb.arms], grippers=[g.joint for g in emb.grippers],
                                control_hz=emb.control_hz, name=changes.get("name", emb.name),
                                action_representation=changes.get("action_representation", card["action_representation"]))


def test_from_pretrained_checks_the_embodiment_card(tmp_path, recwarn):
    tiny_base(tmp_path / "model")
    panda = load_robot("panda")
    WamForActionPrediction.from_pretrained(tmp_path / "model", embodiment=panda)
    assert not [w for w in recwarn if issubclass(w.category, EmbodimentAdaptedWarning)]

    edited = _variant(panda, ('velocity="2.175"', 'velocity="2.0"'))  # same body, other URDF (new velocity limit)
    assert edited.urdf_sha256 != panda.urdf_sha256
    with pytest.warns(EmbodimentAdaptedWarning, match=r"(?s)urdf_sha256.*adapting through the canonical action space"):
        WamForActionPrediction.from_pretrained(tmp_path / "model", embodiment=edited)
    with pytest.raises(EmbodimentMismatchError, match=r"(?s)urdf_sha256: checkpoint '.*strict"):
        WamForActionPrediction.from_pretrained(tmp_path / "model", embodiment=edited, strict_embodiment=True)

    with pytest.raises(EmbodimentMismatchError, match=r"(?s)action_representation: checkpoint 'absolute', your robot 'delta'.*cannot adapt"):
        WamForActionPrediction.from_pretrained(tmp_path / "model", embodiment=_variant(panda, action_representation="delta"))

    ur5_as_panda = _variant(load_robot("ur5"), name="panda")  # no gripper: the canonical slots differ
    with pytest.raises(EmbodimentMismatchError, match=r"(?s)dof: checkpoint 8, your robot 6.*canonical slots differ"):
        WamForActionPrediction.from_pretrained(tmp_path / "model", embodiment=ur5_as_panda)

    from transformers import AutoModel

    with pytest.warns(EmbodimentAdaptedWarning, match="was not trained on 'ur5'"):  # an unseen robot runs zero-shot
        AutoModel.from_pretrained(tmp_path / "model", embodiment=load_robot("ur5"))


def test_native_load_adapter_checks_base_and_robot(tmp_path):
    model, _ = tiny_base(tmp_path / "model")
    adapter = save_adapter(attach_adapter(model, load_robot("panda"), lora_config(r=2)), load_robot("panda"), tmp_path / "adapter")
    wider = WamForActionPrediction(WamConfig(**{**TINY, "hidden_size": 48}))
    with pytest.raises(EmbodimentMismatchError, match="hidden_size: adapter 32, base 48"):
        wider.load_adapter(str(adapter), adapter_name="panda")
    fresh = WamForActionPrediction.from_pretrained(tmp_path / "model")
    with pytest.raises(EmbodimentMismatchError, match="urdf_sha256"):
        fresh.load_adapter(str(adapter), adapter_name="panda", embodiment=load_robot("ur5"))
    fresh.load_adapter(str(adapter), adapter_name="panda", embodiment=load_robot("panda"))
    assert "panda" in fresh.peft_config
    (adapter / "wam_base.json").unlink()
    with pytest.raises(EmbodyHubError, match="wam_base.json"):
        WamForActionPrediction.from_pretrained(tmp_path / "model").load_adapter(str(adapter), adapter_name="panda")


def test_adapt_reads_a_hub_base_config_before_loading_it(hub, tmp_path):
    """``adapt --base ORG/NAME --data DIR`` checks the dataset against what that base needs (its config.json,
    fetched alone) before any model loads; an unknown repo leaves the check to the loaded model."""
    tiny_base(tmp_path / "base")
    publish(tmp_path / "base", "org/adapt-base", endpoint=hub.url)
    code = """
        from embodyhub.cli import _base_config
        print(json.dumps([_base_config("org/adapt-base")["model_type"], _base_config("org/no-such-base")]))
    """
    assert json.loads(client(hub, code, tmp_path / "home").stdout.splitlines()[-1]) == ["wam", None]
