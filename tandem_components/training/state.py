"""Full training checkpoints: everything a run needs to continue bit-for-bit after a crash or a kill,
on the same number of ranks or another one.

Layout of one checkpoint, ``<checkpoint_dir>/step_{step:08d}/``::

    manifest.json        format, step, config fingerprint, world size, domains, torch version, and per
                         file (the DCP shards included) its bytes + sha256
    <name>.pt            one ``torch.save`` file per component of the replicated state (``lr_scheduler``,
                         ``mixture``, ``estimator``, ``train_loader``, ...): identical on every rank,
                         written once, by rank 0
    rng.pt               every rank's torch CPU (+ CUDA), numpy and python generators
    sharded/             the sharded state (both twins' model and optimizer), written by
                         ``torch.distributed.checkpoint`` (DCP): ``.metadata`` plus ``__<rank>_*.distcp``,
                         each rank writing its own shards (≈ 1/N of the bytes)

DCP is the engine torchtitan and torchtune's distributed recipes checkpoint with: its metadata records
each tensor's global shape and every shard's offsets, so a checkpoint written on N ranks loads into a
model sharded over M ranks (or not sharded at all): DCP reads the pieces each rank's shards need.
The state dicts come from ``torch.distributed.checkpoint.state_dict.get_state_dict`` (FQN keys, the same
for a plain and an FSDP2 model) and go back with ``set_state_dict``.

Atomic at the checkpoint level: everything is written under a hidden temp folder next to the final one
(every file fsynced), ``manifest.json`` is written last by rank 0 after a barrier, and the folder is
renamed into place: a ``step_*`` folder is complete or absent. Older checkpoints are deleted only after
the new one is in place (``keep_last``); so are newer ones, left by a run that was abandoned when this
one resumed from an older checkpoint.

Loading verifies every file listed (present, size, sha256: the ranks share the hashing) before anything
is read, then reads the components with ``torch.load(..., weights_only=True)``: no pickled objects, so a
component cannot run code. (DCP's own ``.metadata`` is a pickle, as in every DCP checkpoint: it is read
only after its checksum matched the manifest; load checkpoints you or your jobs wrote.)
``save_training_checkpoint`` refuses a component holding anything the weights-only unpickler cannot
rebuild (tensors, python scalars, strings, lists, tuples, dicts only). What the recipe's components
hold, checked against torch 2.13:
  - ``LambdaLR.state_dict()`` (torchtune's cosine schedule): ``lr_lambdas`` is ``[None]`` because torch
    stores only the ``__dict__`` of *callable objects*, never a function or closure; the schedule
    itself is rebuilt from the config, and ``last_epoch`` / ``_step_count`` / ``_last_lr`` restore it.
  - numpy's legacy global RNG state holds an ndarray: stored as an int64 tensor and rebuilt on restore.
  - ``WeightedDomainLoader`` / ``PerDomainSampler`` / ``MixtureState``: plain ints, strings, tensors;
    the loaders draw the global batch whatever the number of ranks, so their state is rank-free.
The replicated components are compared across ranks when saved (a sha256 of each rank's bytes): a
difference is a bug, refused before anything is written.

Every way a checkpoint can be unusable (missing file, checksum mismatch, truncated or corrupt file,
unreadable manifest, another domain list, a config that changed what training computes) is a one-line
``TandemError`` naming the file, raised on every rank before any state is touched.

Config fingerprint (``config_fingerprint``): sha256 of the resolved config as canonical JSON, minus
``FINGERPRINT_EXCLUDED`` - keys that do not change what training computes (where outputs go, how often
to log / evaluate / checkpoint, whether to resume, the shards' path: the corpus identity is passed as
``extra`` instead, so a moved dataset still resumes). ``max_steps`` stays *in*: it sets the length of
the cosine LR schedule, so changing it mid-run would silently bend the schedule. The number of ranks
is *not* in it: the batch keys are global sizes, so the same config trains the same way on any number.

Format v1 (before sharded checkpoints, single process) is no longer read: a checkpoint resumes only the
config that wrote it, and no shipped config of this version is one that v1 wrote (issue 25: the α step's
keys changed), so ``read_manifest`` refuses it in one line.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, MutableMapping, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from tandem_components.distributed.collectives import all_gather_object, barrier, rank_and_world_size
from tandem_components.errors import TandemError
from tandem_components.training.sharded_state import load_sharded, save_sharded

FORMAT = "tandem-training-checkpoint/v2"
FORMAT_V1 = "tandem-training-checkpoint/v1"  # single process, no sharded/: refused in one line
MANIFEST_NAME = "manifest.json"
RNG_KEY = "rng"
SHARDED_DIR = "sharded"
_FILE_NAME = re.compile(r"^([a-z][a-z0-9_]*\.pt|sharded/[A-Za-z0-9_.]+)$")
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
    ``index_sha256``, which decides the batches as much as any config key does)."""
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
    """Inverse of ``capture_rng_state`` (call it last when resuming: building models draws numbers).

    ``state``: one generator state, or a checkpoint's ``rng`` component (``{"world_size", "ranks"}``): on
    the number of ranks that wrote it each rank takes its own; on another number every rank takes rank
    0's (per-rank streams cannot be re-split; training draws its data from the loaders' own generators,
    which are rank-free and carry over exactly)."""
    if "ranks" in state:
        rank, world_size = rank_and_world_size()
        state = state["ranks"][rank if int(state["world_size"]) == world_size else 0]
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


def _serialize(value: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(value, buf)
    return buf.getvalue()


def save_training_checkpoint(
    checkpoint_dir: str | Path,
    step: int,
    state: Mapping[str, Any],
    *,
    fingerprint: str,
    keep_last: int = 2,
    sharded: Mapping[str, Any] | None = None,
    domains: Sequence[str] | None = None,
) -> Path:
    """Write ``checkpoint_dir/step_{step:08d}/`` atomically and keep only the newest ``keep_last``.

    Call it on EVERY rank (a collective when distributed; a plain function in one process).

    Args:
        step: the number of completed training steps (resume continues at ``step + 1``).
        state: the replicated state, identical on every rank: component name (``[a-z][a-z0-9_]*``) -> its
            state dict, one ``<name>.pt`` file each, written by rank 0. The global RNG states of every
            rank are added as ``rng`` (do not pass that key).
        sharded: the sharded state (``sharded_state.get_sharded_state``: models and optimizers, DTensors
            under FSDP2), written by DCP into ``sharded/``, each rank its own shards. None: none.
        fingerprint: ``config_fingerprint(...)`` of the run; ``load_training_checkpoint`` compares it.
        keep_last: number of checkpoints (this one included) kept; older ``step_*`` dirs are deleted,
            and so are *newer* ones: they belong to a run that was abandoned by resuming from an older step.
        domains: the run's domain list, recorded in the manifest and compared on load.

    Returns the checkpoint directory.
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
    rank, world_size = rank_and_world_size()
    for name, value in state.items():
        _check_weights_only(value, name)  # before anything is written
    payload = {name: _serialize(value) for name, value in state.items()}
    _check_replicated(payload)
    rngs = all_gather_object(capture_rng_state())
    payload[RNG_KEY] = _serialize({"world_size": world_size, "ranks": rngs})

    root = Path(checkpoint_dir)
    final = root / step_dir_name(step)
    tmp = root / f".{final.name}.partial"  # the same name on every rank
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale_temp_dirs(root)
        tmp.mkdir()
    barrier()
    try:
        if rank == 0:
            for name, data in payload.items():
                _write_synced(tmp / f"{name}.pt", lambda f, d=data: f.write(d))
        if sharded is not None:
            save_sharded(sharded, tmp / SHARDED_DIR)
        barrier()  # every rank's files are on disk (DCP fsyncs its own): hash them, ranks sharing the work
        files = _hash_files(tmp)
        if rank == 0:
            manifest = {
                "format": FORMAT, "step": step, "config_fingerprint": fingerprint, "torch_version": torch.__version__,
                "world_size": world_size, "domains": list(domains) if domains is not None else None,
                "components": sorted(payload), "sharded": sharded is not None, "files": files,
            }
            data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")
            _write_synced(tmp / MANIFEST_NAME, lambda f: f.write(data))
            _fsync_dir(tmp)
            if final.exists():  # re-saving a step (after a resume): move the old one aside, then replace
                aside = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}.old-"))
                os.replace(final, aside / final.name)
                os.replace(tmp, final)
                shutil.rmtree(aside, ignore_errors=True)
            else:
                os.replace(tmp, final)
            _fsync_dir(root)
    except BaseException:
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if rank == 0:
        # Newer checkpoints belong to an abandoned run (this one resumed from an older step): drop them,
        # so that find_latest_checkpoint never returns a state this run's history does not lead to.
        kept = [p for p in list_checkpoints(root) if _step_of(p) <= step]
        for stale in list_checkpoints(root):
            if _step_of(stale) > step or stale in kept[:-keep_last]:
                shutil.rmtree(stale, ignore_errors=True)
    barrier()  # no rank goes on (or resumes) before the checkpoint is in place
    return final


def _check_replicated(payload: Mapping[str, bytes]) -> None:
    """The replicated components must be bit-identical on every rank (they are saved once)."""
    mine = {name: hashlib.sha256(data).hexdigest() for name, data in payload.items()}
    for other_rank, theirs in enumerate(all_gather_object(mine)):
        for name in mine:
            if theirs.get(name) != mine[name]:
                raise RuntimeError(f"checkpoint component {name!r} differs between rank "
                                   f"{rank_and_world_size()[0]} and rank {other_rank}; it must be replicated")


def _relative_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _hash_files(folder: Path) -> dict[str, dict[str, Any]]:
    """{relative path: {bytes, sha256}} of every file under ``folder``; rank r hashes every W-th file."""
    rank, world_size = rank_and_world_size()
    names = [n for n in _relative_files(folder) if n != MANIFEST_NAME]
    mine = {n: {"bytes": (folder / n).stat().st_size, "sha256": _sha256_file(folder / n)}
            for n in names[rank::world_size]}
    merged: dict[str, dict[str, Any]] = {}
    for part in all_gather_object(mine):
        merged.update(part)
    return dict(sorted(merged.items()))


def _step_of(path: Path) -> int:
    return int(_STEP_DIR.match(path.name).group(1))


def _remove_stale_temp_dirs(root: Path) -> None:
    """Leftovers of a save that was killed mid-way (only rank 0 calls this, before a save)."""
    for path in root.glob(".step_*"):
        if path.is_dir() and (".partial" in path.name or ".old-" in path.name):
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
        if manifest["format"] == FORMAT_V1:
            raise TandemError(f"{manifest_path}: a single-process checkpoint of format v1 (tandem before sharded "
                              "checkpoints) is no longer read; finish that run with the version that wrote it, "
                              "or start it anew")
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
            if not _FILE_NAME.match(name):
                raise ValueError(f"bad file name {name!r}")
            if not isinstance(entry["sha256"], str) or not isinstance(entry["bytes"], int):
                raise ValueError(f"bad entry for {name}")
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as e:
        raise TandemError(f"{manifest_path}: unreadable checkpoint manifest ({type(e).__name__}: {e})") from None
    return manifest


def _verify_file(file: Path, entry: Mapping[str, Any]) -> str | None:
    """Why ``file`` does not match its manifest entry, or None."""
    if not file.is_file():
        return f"{file}: missing from training checkpoint (listed in {MANIFEST_NAME})"
    size = file.stat().st_size
    if size != entry["bytes"]:
        return f"{file}: truncated or corrupt ({size} bytes, the manifest says {entry['bytes']})"
    if _sha256_file(file) != entry["sha256"]:
        return f"{file}: checksum mismatch (sha256 differs from {MANIFEST_NAME}); the file is corrupt"
    return None


def load_training_checkpoint(
    path: str | Path,
    expected_fingerprint: str | None,
    *,
    domains: Sequence[str] | None = None,
    sharded: MutableMapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Verify and load a checkpoint dir written by ``save_training_checkpoint``.

    Call it on every rank when distributed: the ranks share the checksum work and all raise the same
    error. Every file is checked (present, size, sha256) before any is read; components are loaded with
    ``torch.load(weights_only=True, map_location="cpu")``. ``expected_fingerprint=None`` skips the config
    comparison and ``domains=None`` the domain list's (inspection tools only; a recipe passes its own).

    ``sharded``: the state to load the ``sharded/`` part into, in place (this run's
    ``get_sharded_state``: DCP reshards to it).

    Returns ``{"step", "config_fingerprint", "world_size", "format", "sharded": bool, <component>: state,
    ..., "rng": ...}``. Raises a one-line ``TandemError`` (``every_rank``) naming the file on any problem.
    """
    try:
        return _load(Path(path), expected_fingerprint, domains, sharded)
    except TandemError as e:
        raise TandemError(str(e), every_rank=True) from None


def _load(path: Path, expected_fingerprint, domains, sharded) -> dict[str, Any]:
    if not path.is_dir():
        raise TandemError(f"{path}: training checkpoint directory not found")
    manifest = read_manifest(path)
    manifest_path = path / MANIFEST_NAME
    saved_domains = manifest.get("domains")
    if domains is not None and saved_domains is not None and list(saved_domains) != list(domains):
        raise TandemError(f"{manifest_path}: checkpoint was written for the domains {saved_domains}, this run has "
                          f"{list(domains)}; resume with the data it was trained on")
    if expected_fingerprint is not None and manifest["config_fingerprint"] != expected_fingerprint:
        raise TandemError(
            f"{manifest_path}: checkpoint was written with a different config (fingerprint "
            f"{manifest['config_fingerprint'][:12]}..., this run {expected_fingerprint[:12]}...); resume with "
            "the same config (only output_dir, logging, eval, checkpoint and resume keys may change)"
        )
    rank, world_size = rank_and_world_size()
    names = sorted(manifest["files"])
    problems = [p for n in names[rank::world_size] if (p := _verify_file(path / n, manifest["files"][n]))]
    problems = sorted(p for part in all_gather_object(problems) for p in part)
    if problems:
        raise TandemError(problems[0])
    result: dict[str, Any] = {
        "step": manifest["step"], "config_fingerprint": manifest["config_fingerprint"],
        "world_size": int(manifest.get("world_size", 1)), "format": manifest["format"],
        "sharded": bool(manifest.get("sharded", False)),
    }
    for name in names:
        if "/" in name:  # the DCP part: read below
            continue
        file = path / name
        try:
            result[name[: -len(".pt")]] = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling failure means an unusable file
            reason = " ".join(str(e).split())[:200]
            raise TandemError(f"{file}: unreadable checkpoint file ({type(e).__name__}: {reason})") from None
    if RNG_KEY not in result:
        raise TandemError(f"{manifest_path}: no {RNG_KEY}.pt listed (not a complete training checkpoint)")
    if result["sharded"] and sharded is not None:
        load_sharded(sharded, path / SHARDED_DIR)
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
