"""Full training checkpoints: everything a run needs to continue bit-for-bit after a crash or a kill.

Layout of one checkpoint, ``<checkpoint_dir>/step_{step:08d}/``::

    manifest.json        format, step, config fingerprint, torch version, and per file its bytes + sha256
    <name>.pt            one ``torch.save`` file per top-level key of ``state`` (``proxy_model``,
                         ``proxy_optimizer``, ``lr_scheduler``, ``mixture``, ``train_loader``, ...)
    rng.pt               torch CPU (+ CUDA) generators, numpy's global and python's ``random``

The directory is built under a hidden temp name next to it, every file is fsynced, ``manifest.json`` is
written last, and the directory is renamed into place: a ``step_*`` directory is complete or absent.
Older checkpoints are deleted only after the new one is in place (``keep_last``); so are newer ones,
left by a run that was abandoned when this one resumed from an older checkpoint.

Loading uses ``torch.load(..., weights_only=True)`` and nothing else: no pickled objects, so a checkpoint
cannot run code. ``save_training_checkpoint`` refuses a state holding anything the weights-only unpickler
cannot rebuild (it walks the state first: tensors, python scalars, strings, lists, tuples, dicts). What
the recipe's states hold, checked against torch 2.13:
  - ``Optimizer.state_dict()``: tensors, floats, bools, None, a ``betas`` tuple: fine.
  - ``LambdaLR.state_dict()`` (torchtune's cosine schedule): ``lr_lambdas`` is ``[None]`` because torch
    stores only the ``__dict__`` of *callable objects*, never a function or closure; the schedule
    itself is rebuilt from the config, and ``last_epoch`` / ``_step_count`` / ``_last_lr`` restore it.
  - numpy's legacy global RNG state holds an ndarray: stored as an int64 tensor and rebuilt on restore.
  - ``WeightedDomainLoader`` / ``PerDomainSampler`` / ``MixtureState``: plain ints, strings, tensors.

Every way a checkpoint can be unusable (missing file, checksum mismatch, truncated or corrupt file,
unreadable manifest, a config that changed what training computes) is a one-line ``TandemError`` naming
the file, raised before any state is touched.

Config fingerprint (``config_fingerprint``): sha256 of the resolved config as canonical JSON, minus
``FINGERPRINT_EXCLUDED`` - keys that do not change what training computes (where outputs go, how often
to log / evaluate / checkpoint, whether to resume, the shards' path: the corpus identity is passed as
``extra`` instead, so a moved dataset still resumes). ``max_steps`` stays *in*: it sets the length of
the cosine LR schedule, so changing it mid-run would silently bend the schedule.

Several ranks: rank 0 writes. Per-rank states (each rank's loaders and samplers draw different data,
and its global RNGs may differ) must reach it first, e.g. ``torch.distributed.all_gather_object`` into
a list indexed by rank saved as one component (``{"train_loader": [sd_rank0, sd_rank1, ...]}``; lists
are fine). Under FSDP2 ``model.state_dict()`` holds DTensors, which are refused: gather full tensors
first (``torch.distributed.checkpoint.state_dict.get_model_state_dict`` / ``get_optimizer_state_dict``
with ``StateDictOptions(full_state_dict=True, cpu_offload=True)``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from tandem_components.errors import TandemError

FORMAT = "tandem-training-checkpoint/v1"
MANIFEST_NAME = "manifest.json"
RNG_KEY = "rng"
_STEP_DIR = re.compile(r"^step_(\d{8,})$")
_STATE_KEY = re.compile(r"^[a-z][a-z0-9_]*$")
_HASH_CHUNK = 1 << 20

#: dotted config keys left out of the fingerprint: they may change between a run and its resume.
FINGERPRINT_EXCLUDED = (
    "output_dir",
    "metric_logger",
    "log_every_n_steps",
    "eval",  # evaluation reads fixed windows under no_grad and draws no random numbers
    "checkpoint",
    "resume",
    "data.shards",  # a path: pass the corpus identity (ShardedCorpus.index_sha256) in `extra`
)


# ----------------------------------------------------------------------------------------------------
# config fingerprint


def config_fingerprint(
    cfg: DictConfig | Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
    exclude: tuple[str, ...] = FINGERPRINT_EXCLUDED,
) -> str:
    """Hex sha256 of the resolved config minus ``exclude`` (dotted keys), plus ``extra`` (e.g. the corpus
    ``index_sha256`` and the world size, which decide the batches as much as any config key does)."""
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else copy.deepcopy(dict(cfg))
    for dotted in exclude:
        node: Any = plain
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    doc = {"config": plain, "extra": dict(extra or {})}
    data = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------------------------------
# random number generators


def capture_rng_state() -> dict[str, Any]:
    """Every global generator training may draw from, in a weights-only loadable form."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch_cpu": torch.get_rng_state(),
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "python": {"version": int(py_version), "internal": list(py_internal), "gauss_next": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of ``capture_rng_state`` (call it last when resuming: building models draws numbers)."""
    torch.set_rng_state(state["torch_cpu"])
    np_state = state["numpy"]
    np.random.set_state((
        np_state["name"], np_state["keys"].numpy().astype(np.uint32), int(np_state["pos"]),
        int(np_state["has_gauss"]), float(np_state["cached_gaussian"]),
    ))
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(x) for x in py["internal"]), py["gauss_next"]))
    if "torch_cuda" in state and torch.cuda.is_available():
        cuda_states = state["torch_cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


# ----------------------------------------------------------------------------------------------------
# saving


def _check_weights_only(obj: Any, where: str) -> None:
    """Refuse (TypeError naming the key) anything ``torch.load(weights_only=True)`` could not rebuild."""
    if obj is None or isinstance(obj, (bool, int, float, str, bytes, torch.Tensor, torch.dtype, torch.device)):
        if isinstance(obj, torch.Tensor) and type(obj) is not torch.Tensor and not isinstance(obj, torch.nn.Parameter):
            raise TypeError(f"{where}: tensor subclass {type(obj).__name__} is not weights_only loadable")
        return
    if type(obj) in (list, tuple):
        for i, item in enumerate(obj):
            _check_weights_only(item, f"{where}[{i}]")
        return
    if isinstance(obj, dict) and type(obj).__module__ in ("builtins", "collections"):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: dict key {key!r} ({type(key).__name__}) is not weights_only loadable")
            _check_weights_only(value, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"{where}: {type(obj).__module__}.{type(obj).__qualname__} is not weights_only loadable "
        "(store tensors, python scalars, strings, lists, tuples and dicts only)"
    )


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, write) -> None:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def save_training_checkpoint(
    checkpoint_dir: str | Path,
    step: int,
    state: Mapping[str, Any],
    *,
    fingerprint: str,
    keep_last: int = 2,
) -> Path:
    """Write ``checkpoint_dir/step_{step:08d}/`` atomically and keep only the newest ``keep_last``.

    Args:
        step: the number of completed training steps (resume continues at ``step + 1``).
        state: component name (``[a-z][a-z0-9_]*``) -> its state dict; one ``<name>.pt`` file each.
            The global RNG states are added as ``rng`` (do not pass that key).
        fingerprint: ``config_fingerprint(...)`` of the run; ``load_training_checkpoint`` compares it.
        keep_last: number of checkpoints (this one included) kept; older ``step_*`` dirs are deleted,
            and so are *newer* ones: they belong to a run that was abandoned by resuming from an older step.

    Returns the checkpoint directory. Call it on one process only (rank 0).
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step: expected an integer >= 0, got {step!r}")
    if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1:
        raise ValueError(f"keep_last: expected an integer >= 1, got {keep_last!r}")
    if RNG_KEY in state:
        raise ValueError(f"state: key {RNG_KEY!r} is reserved (the RNG states are captured by the saver)")
    for name in state:
        if not isinstance(name, str) or not _STATE_KEY.match(name) or name == "manifest":
            raise ValueError(f"state: key {name!r} is not a valid component name ([a-z][a-z0-9_]*)")
    components = {**state, RNG_KEY: capture_rng_state()}
    for name, value in components.items():
        _check_weights_only(value, name)  # before anything is written

    root = Path(checkpoint_dir)
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_dirs(root)
    final = root / step_dir_name(step)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}.partial-"))
    try:
        files = {}
        for name, value in components.items():
            path = tmp / f"{name}.pt"
            _write_synced(path, lambda f, v=value: torch.save(v, f))
            files[path.name] = {"bytes": path.stat().st_size, "sha256": _sha256_file(path)}
        manifest = {
            "format": FORMAT,
            "step": step,
            "config_fingerprint": fingerprint,
            "torch_version": torch.__version__,
            "components": sorted(components),
            "files": files,
        }
        data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")
        _write_synced(tmp / MANIFEST_NAME, lambda f: f.write(data))
        _fsync_dir(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        if final.exists():  # re-saving a step (after a resume): move the old one aside, then replace
            aside = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}.old-"))
            os.replace(final, aside / final.name)
            os.replace(tmp, final)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Newer checkpoints belong to an abandoned run (this one resumed from an older step): drop them, so
    # that find_latest_checkpoint never returns a state this run's history does not lead to.
    kept = [p for p in list_checkpoints(root) if _step_of(p) <= step]
    for stale in list_checkpoints(root):
        if _step_of(stale) > step or stale in kept[:-keep_last]:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def _step_of(path: Path) -> int:
    return int(_STEP_DIR.match(path.name).group(1))


def _remove_stale_temp_dirs(root: Path) -> None:
    """Leftovers of a save that was killed mid-way (only one process writes checkpoints)."""
    for path in root.glob(".step_*"):
        if path.is_dir() and (".partial-" in path.name or ".old-" in path.name):
            shutil.rmtree(path, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------
# finding and loading


def list_checkpoints(checkpoint_dir: str | Path) -> list[Path]:
    """Complete ``step_*`` checkpoint dirs (with a manifest), oldest first."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and path.is_dir() and (path / MANIFEST_NAME).is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def find_latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The newest complete checkpoint under ``checkpoint_dir``, or None if there is none."""
    found = list_checkpoints(checkpoint_dir)
    return found[-1] if found else None


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of checkpoint dir ``path``, structurally checked (TandemError naming the file)."""
    manifest_path = Path(path) / MANIFEST_NAME
    if not manifest_path.is_file():
        raise TandemError(f"{manifest_path}: missing (not a complete training checkpoint)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest["format"] != FORMAT:
            raise ValueError(f"format {manifest['format']!r}, this code reads {FORMAT!r}")
        if isinstance(manifest["step"], bool) or not isinstance(manifest["step"], int) or manifest["step"] < 0:
            raise ValueError("step is not an integer >= 0")
        if not isinstance(manifest["config_fingerprint"], str):
            raise ValueError("config_fingerprint is not a string")
        files = manifest["files"]
        if not isinstance(files, dict) or not files:
            raise ValueError("files is not a non-empty mapping")
        for name, entry in files.items():
            if not re.match(r"^[a-z][a-z0-9_]*\.pt$", name):
                raise ValueError(f"bad file name {name!r}")
            if not isinstance(entry["sha256"], str) or not isinstance(entry["bytes"], int):
                raise ValueError(f"bad entry for {name}")
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as e:
        raise TandemError(f"{manifest_path}: unreadable checkpoint manifest ({type(e).__name__}: {e})") from None
    return manifest


def load_training_checkpoint(path: str | Path, expected_fingerprint: str | None) -> dict[str, Any]:
    """Verify and load a checkpoint dir written by ``save_training_checkpoint``.

    Every file is checked (present, size, sha256) before any is unpickled, and each is loaded with
    ``torch.load(weights_only=True, map_location="cpu")``. ``expected_fingerprint=None`` skips the
    config comparison (inspection tools only; a recipe always passes its own).

    Returns ``{"step": int, "config_fingerprint": str, <component>: state, ..., "rng": ...}``.
    Raises a one-line ``TandemError`` naming the file on any problem.
    """
    path = Path(path)
    if not path.is_dir():
        raise TandemError(f"{path}: training checkpoint directory not found")
    manifest = read_manifest(path)
    manifest_path = path / MANIFEST_NAME
    if expected_fingerprint is not None and manifest["config_fingerprint"] != expected_fingerprint:
        raise TandemError(
            f"{manifest_path}: checkpoint was written with a different config (fingerprint "
            f"{manifest['config_fingerprint'][:12]}..., this run {expected_fingerprint[:12]}...); resume with "
            "the same config (only output_dir, logging, eval, checkpoint and resume keys may change)"
        )
    for name, entry in manifest["files"].items():
        file = path / name
        if not file.is_file():
            raise TandemError(f"{file}: missing from training checkpoint (listed in {MANIFEST_NAME})")
        size = file.stat().st_size
        if size != entry["bytes"]:
            raise TandemError(f"{file}: truncated or corrupt ({size} bytes, the manifest says {entry['bytes']})")
        if _sha256_file(file) != entry["sha256"]:
            raise TandemError(f"{file}: checksum mismatch (sha256 differs from {MANIFEST_NAME}); the file is corrupt")
    result: dict[str, Any] = {"step": manifest["step"], "config_fingerprint": manifest["config_fingerprint"]}
    for name in manifest["files"]:
        file = path / name
        try:
            result[name[: -len(".pt")]] = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling failure means an unusable file
            reason = " ".join(str(e).split())[:200]
            raise TandemError(f"{file}: unreadable checkpoint file ({type(e).__name__}: {reason})") from None
    if RNG_KEY not in result:
        raise TandemError(f"{manifest_path}: no {RNG_KEY}.pt listed (not a complete training checkpoint)")
    return result


# ----------------------------------------------------------------------------------------------------
# the recipe's append-only trajectory


def truncate_trajectory(path: str | Path, num_updates: int) -> int:
    """Cut ``mixture_trajectory.jsonl`` back to its first ``num_updates`` rows (the checkpoint's
    ``MixtureState.num_updates``), dropping rows a killed run appended after the checkpoint, including a
    half-written last line. Rewritten atomically; returns the number of rows kept.

    Raises TandemError naming the file if it holds fewer complete rows than the checkpoint has updates,
    or if the rows kept are not updates 1..num_updates in order.
    """
    path = Path(path)
    if num_updates < 0:
        raise ValueError(f"num_updates: expected >= 0, got {num_updates}")
    lines: list[str] = []
    if path.is_file():
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().split("\n")
    elif num_updates > 0:
        raise TandemError(f"{path}: missing, but the checkpoint has {num_updates} mixture updates to continue")
    kept = []
    for line in lines:
        if len(kept) == num_updates:
            break
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            update = row["update"]
        except (ValueError, TypeError, KeyError):
            raise TandemError(f"{path}: row {len(kept) + 1} is not a trajectory row; cannot resume it") from None
        if update != len(kept) + 1:
            raise TandemError(f"{path}: row {len(kept) + 1} is update {update}, expected {len(kept) + 1}")
        kept.append(line)
    if len(kept) < num_updates:
        raise TandemError(
            f"{path}: holds {len(kept)} complete rows, the checkpoint has {num_updates} mixture updates"
        )
    text = "".join(line + "\n" for line in kept)
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_synced(tmp, lambda f: f.write(text.encode("utf-8")))
    os.replace(tmp, path)
    return len(kept)
