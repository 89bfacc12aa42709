"""``tandem ls`` / ``tandem cp`` (tandem_components/cli.py), and the wheel a user installs without a clone:
its console script, the recipes and configs it ships, and a copied recipe run with ``tune run``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tandem_components.cli import main
from tests.recipe_runner import TINY

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_RESTRICTED_FILES = [
    "data_restricted.py", "gpt160m_stage1.yaml", "gpt160m_stage2.yaml", "pretrain.py", "tiny_stage1.yaml",
    "tiny_stage2.yaml",
]
#: a stage-1 run of a few seconds: α is updated once (E = 2, K = 1)
SHORT = [*TINY, "max_steps=2", "mixture.episode_len=2", "mixture.probe_steps=1",
         "mixture.probe_seqs_per_domain=2", "mixture.val_batch_size=4"]


def test_ls_lists_every_recipe_with_its_configs(capsys):
    assert main(["ls"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    recipes = {row[0]: row[1] for row in rows if len(row) >= 2 and "/" not in row[0]}
    assert set(recipes) == {"prepare_data", "pretrain", "data_restricted", "sft"}
    assert recipes["prepare_data"] == "data/embedded"
    listed = {row[-1] if len(row) == 1 else row[1] for row in rows}
    shipped = {f"{p.parent.name}/{p.stem}" for p in (REPO_ROOT / "configs").glob("*/*.yaml")}
    assert listed == shipped


def test_cp_copies_a_recipe_with_its_base_and_its_configs(tmp_path):
    dest = tmp_path / "mine"
    assert main(["cp", "data_restricted", str(dest)]) == 0
    assert sorted(p.name for p in dest.iterdir()) == DATA_RESTRICTED_FILES
    assert (dest / "pretrain.py").read_bytes() == (REPO_ROOT / "recipes" / "pretrain.py").read_bytes()
    assert (dest / "tiny_stage1.yaml").read_bytes() == (
        REPO_ROOT / "configs" / "data_restricted" / "tiny_stage1.yaml").read_bytes()


def test_cp_copies_one_config_to_a_file_or_into_a_folder(tmp_path):
    assert main(["cp", "pretrain/tiny_stage1", str(tmp_path / "my.yaml")]) == 0
    assert main(["cp", "data/embedded.yaml", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["embedded.yaml", "my.yaml"]
    assert (tmp_path / "my.yaml").read_bytes() == (REPO_ROOT / "configs/pretrain/tiny_stage1.yaml").read_bytes()


def test_cp_refuses_an_unknown_name_or_an_existing_file_in_one_line(tmp_path, capsys):
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "pretrain.py").write_text("# mine\n")
    capsys.readouterr()
    for args, culprit in ((["cp", "pretrian", str(tmp_path / "x")], "pretrian"),
                          (["cp", "data_restricted", str(dest)], str(dest / "pretrain.py"))):
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"tandem: error: {culprit}:")
    assert [p.name for p in dest.iterdir()] == ["pretrain.py"]  # nothing written
    assert not (tmp_path / "x").exists()
    assert main(["cp", "data_restricted", str(dest), "--force"]) == 0
    assert sorted(p.name for p in dest.iterdir()) == DATA_RESTRICTED_FILES


def test_pyproject_ships_every_package():
    """A package or a folder of configs missing from pyproject's list would be missing from the wheel."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10 (supported): its backport, a dev dependency there
        import tomli as tomllib
    listed = set(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {
        ".".join(p.parent.relative_to(REPO_ROOT).parts)
        for p in (REPO_ROOT / "tandem_components").rglob("__init__.py")
    }
    configs = {f"tandem_recipes.configs.{p.name}" for p in (REPO_ROOT / "configs").iterdir() if p.is_dir()}
    assert listed == packages | configs | {"tandem_recipes", "tandem_recipes.configs"}


def _clean_env() -> dict[str, str]:
    """The environment of a user without a clone: no PYTHONPATH, no user site, offline."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, "PYTHONNOUSERSITE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


def _venv_with_wheel(tmp_path: Path) -> Path:
    """A fresh venv holding the built wheel, reusing this environment's torch/torchtune. Returns its python.

    The venv sees this environment's site-packages as a plain path (a ``.pth`` line), so the ``.pth`` files
    in it are not run: neither the editable install nor the repo-path ``.pth`` of a dev venv leaks in."""
    src = tmp_path / "src"  # build from a copy: an in-tree build would write build/ and *.egg-info here
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, src / name)
    for name in ("tandem_components", "recipes", "configs"):
        shutil.copytree(REPO_ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    env = _clean_env()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, env=env, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("tandem-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, env=env)
    python = venv / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, env=env, capture_output=True, text=True).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(purelib, "_torch_from_dev_env.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed",
                    str(wheel)], check=True, env=env, capture_output=True)
    return python


@pytest.mark.slow
def test_wheel_runs_copied_recipes_without_the_clone(embedded_shards, tmp_path):
    """pip install of the wheel; ``tandem ls``; ``tandem cp pretrain mine``; ``tune run mine/pretrain.py`` from
    another folder; and a copied ``data_restricted`` (which extends pretrain) run from its own folder."""
    python = _venv_with_wheel(tmp_path)
    env, venv_bin = _clean_env(), python.parent
    work = tmp_path / "project"
    work.mkdir()

    def run(*args, cwd=work):
        proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
        return proc.stdout

    where = run(python, "-c", "import tandem_components, tandem_recipes; print(tandem_components.__file__); "
                              "print(tandem_recipes.__file__)").split()
    assert all(Path(p).is_relative_to(tmp_path / "venv") for p in where), where
    assert "pretrain/tiny_stage1" in run(venv_bin / "tandem", "ls")
    run(venv_bin / "tandem", "cp", "pretrain", "mine")
    run(venv_bin / "tandem", "cp", "data_restricted", "restricted")
    tune = [python, "-m", "torchtune._cli.tune", "run"]  # the venv's `tune`: torchtune comes from the dev env
    run(*tune, "mine/pretrain.py", "--config", "mine/tiny_stage1.yaml", *SHORT, f"data.shards={embedded_shards}",
        f"output_dir={tmp_path / 'out'}")
    assert (tmp_path / "out" / "mixture.yaml").is_file()
    run(*tune, "data_restricted.py", "--config", "tiny_stage1.yaml", *SHORT, f"data.shards={embedded_shards}",
        "data.total_token_budget=60000", f"output_dir={tmp_path / 'out_restricted'}", cwd=work / "restricted")
    assert (tmp_path / "out_restricted" / "generalization.json").is_file()
