"""Publish a base model, a robot adapter or an export bundle: ``create_repo`` + one commit holding the
folder's files and the rendered model card.

The commit is a single ``HfApi.create_commit`` of every file of the folder (what ``upload_folder`` sends
without Xet), so the Hub either moves to the new commit or stays where it was: an interrupted upload
leaves the repo at its previous commit, and re-running the same call completes it (LFS objects already
uploaded are skipped). The local folder is only read: the card is uploaded from memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .cards import EVAL_FILE, CardKind, RenderedCard, detect_kind, render_card

SKIP_DIRS = {".git", ".cache", "__pycache__", ".ipynb_checkpoints"}  # not walked, not reported
# never uploaded, and reported: credentials that end up next to a run (dotfiles such as .env, .netrc or
# .huggingface_token are skipped as dotfiles)
SECRET_NAMES = {"id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "credentials", "credentials.json", "token", "hf_token", "secrets.json", "secrets.yaml", "secrets.yml"}
SECRET_SUFFIXES = (".pem", ".key", ".p12", ".pfx")
CARD_FILE = "README.md"
ADAPTER_CONFIG = "adapter_config.json"


@dataclass
class PublishResult:
    """What was (or, for a dry run, would be) committed."""

    repo_id: str
    kind: CardKind
    files: list[tuple[str, int]]  # (path in repo, size in bytes), the card included
    card: str
    sha256: dict[str, str] = field(default_factory=dict)  # path in repo -> sha256 of the bytes committed there
    commit_oid: str | None = None
    commit_url: str | None = None
    dry_run: bool = False
    notes: list[str] = field(default_factory=list)


def folder_files(folder: str | os.PathLike) -> dict[str, Path]:
    """Files to upload, keyed by their path in the repo (POSIX): see ``scan_folder``."""
    return scan_folder(folder)[0]


def scan_folder(folder: str | os.PathLike) -> tuple[dict[str, Path], list[str]]:
    """``(files to upload, notes on what was skipped)``. Never uploaded: a README (the rendered card replaces
    it), ``__pycache__``, anything under a dot-folder or named with a leading dot (``.git``, ``.env``,
    ``.ssh/id_rsa``, ``.huggingface_token``), known secret names (``id_rsa``, ``*.pem``, ...) and symlinks
    leading out of the folder; the notes name each skipped file but those under ``SKIP_DIRS``."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    real = root.resolve()
    files, notes = {}, []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames) + [d for d in dirnames if (base / d).is_symlink()]:
            path = base / name
            rel = path.relative_to(root)
            if rel.as_posix() == CARD_FILE:
                continue
            if any(part.startswith(".") for part in rel.parts):
                notes.append(f"skipped {rel.as_posix()}: a dotfile (never uploaded)")
            elif name in SECRET_NAMES or name.endswith(SECRET_SUFFIXES):
                notes.append(f"skipped {rel.as_posix()}: a secret's name (never uploaded)")
            elif path.is_symlink() and not path.resolve().is_relative_to(real):
                notes.append(f"skipped {rel.as_posix()}: a symlink out of the folder")
            elif path.is_file():
                files[rel.as_posix()] = path
    return files, notes


def find_eval(folder: str | os.PathLike) -> Path | None:
    """The ``eval.json`` of a run: in the folder, or beside it (``embodyhub train --out RUN`` writes
    ``RUN/model`` and ``RUN/eval.json``), or beside its ``adapter`` folder (``embodyhub adapt`` writes
    ``RUN/adapter/ROBOT`` and ``RUN/eval.json``)."""
    path = Path(folder)
    adapter_run = [path.parent.parent / EVAL_FILE] if path.parent.name == "adapter" else []
    for candidate in (path / EVAL_FILE, path.parent / EVAL_FILE, *adapter_run):
        if candidate.is_file():
            return candidate
    return None


def publish(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    kind: CardKind | None = None,
    base_model: str | None = None,
    license: str = "apache-2.0",
    datasets: Sequence[str] = (),
    eval_path: str | os.PathLike | None = None,
    recipe_path: str | os.PathLike | None = None,
    commit_message: str | None = None,
    commit_description: str | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    dry_run: bool = False,
    complete_from_repo: bool = False,
) -> PublishResult:
    """Upload ``folder`` (``save_pretrained`` output, an adapter folder or an export bundle) to ``repo_id``
    with its rendered card, as one commit. ``dry_run`` renders and lists without any network call.

    ``complete_from_repo``: when the folder holds only part of a base model (``model.push_to_hub`` without
    the processor, or ``processor.push_to_hub``), read the repo's other half for the card.
    ``endpoint``: another Hub server than ``HF_ENDPOINT`` (a mirror, or a test server).
    """
    files, skipped = scan_folder(folder)
    kind = kind or detect_kind(folder)
    check_loads(folder, kind)
    card_kwargs = dict(kind=kind, base_model=base_model, license=license, datasets=datasets, eval_path=eval_path, recipe_path=recipe_path)
    rendered = render_card(folder, repo_id, **card_kwargs)  # before any network call: a bad card fails here
    with tempfile.TemporaryDirectory(prefix="embodyhub-publish-") as staged:
        if kind == "adapter" and ADAPTER_CONFIG in files:
            files[ADAPTER_CONFIG] = _adapter_config_for_hub(files[ADAPTER_CONFIG], base_model, Path(staged))
        if dry_run:
            return _result(repo_id, rendered, files, skipped, dry_run=True)

        from huggingface_hub import CommitOperationAdd, HfApi

        api = HfApi(endpoint=endpoint, token=token)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if complete_from_repo and kind == "base":
            with tempfile.TemporaryDirectory(prefix="embodyhub-card-") as context:
                if _fetch_card_context(api, repo_id, files, Path(context), revision):
                    rendered = render_card(folder, repo_id, context=context, **card_kwargs)
        operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(f)) for p, f in files.items()]
        operations += [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(f)) for p, f in rendered.extra_files.items() if p not in files]
        operations.append(CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=rendered.text.encode("utf-8")))
        info = api.create_commit(
            repo_id,
            operations,
            commit_message=commit_message or f"Upload {kind} with embodyhub",
            commit_description=commit_description,
            revision=revision,
            create_pr=create_pr,
        )
        result = _result(repo_id, rendered, files, skipped)
    result.commit_oid, result.commit_url = info.oid, info.commit_url
    return result


def _adapter_config_for_hub(path: Path, base_model: str | None, out: Path) -> Path:
    """A copy of ``adapter_config.json`` whose ``base_model_name_or_path`` is the base's Hub id (the card's
    ``base_model``) instead of the local folder it was trained from, so peft and transformers find the base
    from the Hub on any machine. The local file is left as it is."""
    config = json.loads(path.read_text())
    config["base_model_name_or_path"] = base_model
    staged = out / ADAPTER_CONFIG
    staged.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return staged


def _result(repo_id: str, rendered: RenderedCard, files: dict[str, Path], notes: list[str], dry_run: bool = False) -> PublishResult:
    from huggingface_hub.utils.sha import sha_fileobj  # the hash the Hub's LFS upload computes

    uploads = {**{p: f for p, f in rendered.extra_files.items() if p not in files}, **files}
    listed = [(p, f.stat().st_size) for p, f in uploads.items()]
    card = rendered.text.encode("utf-8")
    listed.append((CARD_FILE, len(card)))
    digests = {CARD_FILE: hashlib.sha256(card).hexdigest()}
    for p, f in uploads.items():
        with open(f, "rb") as fh:
            digests[p] = sha_fileobj(fh).hex()
    return PublishResult(repo_id, rendered.kind, sorted(listed), rendered.text, digests, dry_run=dry_run, notes=notes)


def check_loads(folder: str | os.PathLike, kind: CardKind) -> None:
    """Refuse (``EmbodyHubError``) to publish a base model or adapter folder that does not load: a half-written
    weights file, weights that miss or add tensors, a config, processor or embodiment card that does not
    parse. An export bundle is checked against its manifest where it runs (``verify_bundle``)."""
    from ..errors import EmbodyHubError

    root = Path(folder)
    try:
        if kind == "base" and (root / "config.json").is_file():
            from ..models.wam import WamForActionPrediction

            _, info = WamForActionPrediction.from_pretrained(root, output_loading_info=True)
            wrong = [k for key in ("missing_keys", "unexpected_keys", "mismatched_keys") for k in info.get(key, [])]
            if wrong:
                raise EmbodyHubError(f"its weights do not match its config ({len(wrong)} tensors missing or unexpected, e.g. {wrong[0]})")
        if kind == "base" and (root / "processor_config.json").is_file():
            from ..models.wam import WamProcessor

            WamProcessor.from_pretrained(root)
        if kind == "adapter":
            from peft import PeftConfig
            from safetensors.torch import load_file

            from .checks import read_adapter

            PeftConfig.from_pretrained(str(root))
            load_file(root / "adapter_model.safetensors")
            read_adapter(root)
    except Exception as exc:  # noqa: BLE001 - whatever the loaders raise, the folder is not publishable
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EmbodyHubError(f"{root} does not load ({kind} folder: {detail[:300]}); nothing was uploaded") from exc


def _fetch_card_context(api: Any, repo_id: str, files: dict[str, Path], out: Path, revision: str | None) -> bool:
    """Download the repo's config and embodiment cards the folder lacks (small JSON files), for the card
    only; returns whether anything was fetched."""
    from huggingface_hub import snapshot_download

    wanted = [name for name in ("config.json", "processor_config.json") if name not in files]
    if not wanted:
        return False
    names = {s.rfilename for s in api.model_info(repo_id, revision=revision, files_metadata=False).siblings or []}
    patterns = [n for n in wanted if n in names]
    if "processor_config.json" in patterns:
        patterns.append("embodiments/*/embodiment.json")
    if patterns:
        snapshot_download(repo_id, revision=revision, allow_patterns=patterns, local_dir=out, token=api.token, endpoint=api.endpoint)
    return bool(patterns)


def push_pretrained(objects: Sequence[Any], repo_id: str, **publish_kwargs: Any) -> PublishResult:
    """``save_pretrained`` each object (model, processor) into one temporary folder and ``publish`` it:
    what ``WamForActionPrediction.push_to_hub``/``WamProcessor.push_to_hub`` call."""
    with tempfile.TemporaryDirectory(prefix="embodyhub-push-") as tmp:
        for obj in objects:
            obj.save_pretrained(tmp)
        return publish(tmp, repo_id, kind="base", complete_from_repo=True, **publish_kwargs)
