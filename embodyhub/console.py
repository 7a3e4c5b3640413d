"""How the command line talks to a person: thread count, one-line warnings, one-line errors, Hub reachability.

None of this imports torch or transformers: the CLI sets it up before any command runs."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import warnings
from typing import Iterator
from urllib.parse import urlsplit

from .errors import EmbodyHubError

THREADS_ENV = "EMBODYHUB_THREADS"


def _positive_int(value: str, source: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise EmbodyHubError(f"{source} must be a positive whole number of threads, got {value!r}")
    return n


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def choose_threads(flag: int | None = None) -> tuple[int, str]:
    """Torch/OpenMP threads and where the number came from: ``--threads``, then ``EMBODYHUB_THREADS``, then
    ``OMP_NUM_THREADS``, else half the CPUs, at most 4. The models here are small: per-op overhead dominates,
    and on a shared machine a second busy thread mostly spin-waits (one thread ran LoRA 3x faster under load)."""
    if flag is not None:
        return _positive_int(str(flag), "--threads"), "--threads"
    for env in (THREADS_ENV, "OMP_NUM_THREADS"):
        if os.environ.get(env):
            return _positive_int(os.environ[env], env), env
    return max(1, min(4, available_cpus() // 2)), f"default for small models, {available_cpus()} CPUs"


@contextlib.contextmanager
def using_threads(n: int) -> Iterator[None]:
    """Run with ``n`` intra-op threads: through the environment for a torch imported later, directly for one
    already loaded; both restored afterwards (``main`` may be called from Python, e.g. by the tests)."""
    env = os.environ.get("OMP_NUM_THREADS")
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    os.environ["OMP_NUM_THREADS"] = str(n)
    if torch is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env
        if torch is not None:
            torch.set_num_threads(before)


def _format_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None) -> str:
    text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
    return f"embodyhub: warning: {text}\n"


@contextlib.contextmanager
def quiet_output(verbose: bool) -> Iterator[None]:
    """Warnings print as one ``embodyhub: warning: ...`` line. Unless ``verbose``: no library deprecation
    notices, transformers logs errors only, and no Hub download or weight-loading bars (ours stay)."""
    formatter = warnings.formatwarning  # formatted, not replaced: a caller recording warnings still gets them
    with warnings.catch_warnings():
        warnings.formatwarning = _format_warning  # type: ignore[assignment]
        if not verbose:
            for category in (FutureWarning, DeprecationWarning, PendingDeprecationWarning):
                warnings.filterwarnings("ignore", category=category)
            os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # read when transformers is imported
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        try:
            yield
        finally:
            warnings.formatwarning = formatter


def hub_unreachable_reason(timeout: float = 3.0) -> str | None:
    """Why the Hub cannot be reached (offline mode set, or no connection to ``HF_ENDPOINT``), or None if it can."""
    for env in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(env, "").upper() in ("1", "ON", "YES", "TRUE"):
            return f"{env} is set"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parts = urlsplit(endpoint)
    try:
        socket.create_connection((parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)), timeout).close()
    except OSError as exc:
        return f"no connection to {endpoint}: {exc.strerror or exc}"
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def describe_error(exc: BaseException) -> tuple[str, int]:
    """One line saying what went wrong and what to do, and the exit status, for an exception that ends a command.

    ``EmbodyHubError`` (a user error embodyhub names itself) exits 2; a file, network or Hub problem 1 with a
    hint; anything else is a bug, reported as such (``--debug`` shows where)."""
    if isinstance(exc, EmbodyHubError):
        return str(exc), 2
    names = {type(e).__name__ for e in _chain(exc)}
    if names & {"RepositoryNotFoundError", "GatedRepoError"}:
        return f"{_first_line(exc)} (check the repo id; for a private or gated repo log in with `hf auth login`)", 1
    if names & {"OfflineModeIsEnabled", "LocalEntryNotFoundError", "ConnectError", "ConnectTimeout", "gaierror"}:
        return f"cannot reach the Hub and the files are not cached ({_first_line(exc)}): connect, or give a local folder", 1
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.strerror or _first_line(exc)}: {exc.filename} (check the path)", 1
    if isinstance(exc, OSError):
        return _first_line(exc), 1
    return f"unexpected {type(exc).__name__}: {_first_line(exc)} (a bug: rerun with --debug and report the traceback)", 1
