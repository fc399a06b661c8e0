"""Packaging: the licence and citation files, ``python -m repsim``, the declared dependencies and
extras, and the recipes of analyses/configs shipped inside the package (repsim/configs) and
reachable by name from any folder."""

import configparser
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

import repsim
from repsim.config import config_path, load_config, recipe_dir, recipes
from repsim.errors import RepsimError

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "analyses" / "configs"


def setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return cfg


def listed(value: str) -> list[str]:
    """A setup.cfg list (one item a line), comments and blank lines left out."""
    return [line.split("#")[0].strip() for line in value.splitlines() if line.split("#")[0].strip()]


def python_m_repsim(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "repsim", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


# licence and citation

def test_license_file_is_mit_and_setup_cfg_names_it():
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 the repsim authors" in text
    meta = setup_cfg()["metadata"]
    assert meta["license"] == "MIT" and listed(meta["license_files"]) == ["LICENSE"]


def test_citation_cff_is_yaml_citing_repsim_and_the_paper():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert {"cff-version", "message", "title", "authors", "type", "references"} <= set(cff)
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert "repsim" in cff["title"] and cff["version"] == repsim.__version__ and cff["license"] == "MIT"
    assert all("name" in a or "family-names" in a for a in cff["authors"])
    (paper,) = cff["references"]
    assert {"type", "title", "authors"} <= set(paper)
    assert paper["title"] == "Rapid Learning or Feature Reuse? Towards Understanding the Effectiveness of MAML"
    assert [(a["given-names"], a["family-names"]) for a in paper["authors"]] == [
        ("Aniruddh", "Raghu"), ("Maithra", "Raghu"), ("Samy", "Bengio"), ("Oriol", "Vinyals")]
    assert paper["year"] == 2020 and "ICLR 2020" in paper["collection-title"]
    assert any("1909.09157" in i["value"] for i in paper["identifiers"]) and "1909.09157" in paper["url"]


# python -m repsim

def test_python_m_repsim_is_the_repsim_command():
    ok = python_m_repsim("--help")
    assert ok.returncode == 0 and ok.stdout.startswith("usage: repsim ")
    assert "train" in ok.stdout and "evaluate" in ok.stdout
    bad = python_m_repsim("no-such-command")
    assert bad.returncode != 0 and "invalid choice" in bad.stderr
    entry = listed(setup_cfg()["options.entry_points"]["console_scripts"])
    assert entry == ["repsim = repsim.cli:main"]  # what __main__.py calls


# dependencies and extras

def test_dependencies_and_extras():
    options = setup_cfg()["options"]
    required = [r.split(">")[0].split("=")[0].strip() for r in listed(options["install_requires"])]
    assert "scikit-learn" not in required  # nothing in repsim/ or tests/ imports sklearn
    assert "scipy" in required
    extras = setup_cfg()["options.extras_require"]
    assert "higher==0.2.1" in listed(extras["bench"]) and "higher==0.2.1" in listed(extras["test"])


def test_bench_train_without_higher_says_how_to_install_it_before_timing_anything(monkeypatch):
    from repsim.bench import train as bench
    monkeypatch.setitem(sys.modules, "higher", None)  # import higher raises ImportError
    monkeypatch.setattr(bench, "_tasks", lambda *a: pytest.fail("timed without its peer"))
    with pytest.raises(RepsimError, match=r'higher.*pip install -e "\.\[bench\]"') as caught:
        bench.run(quick=True, ways=5, shots=1)
    assert "\n" not in str(caught.value)


def test_every_subpackage_is_listed_in_setup_cfg():
    # setup.cfg lists the packages (find: cannot add repsim.configs, which package_dir maps)
    options = setup_cfg()["options"]
    declared = set(listed(options["packages"]))
    found = {".".join(p.relative_to(REPO).parent.parts) for p in (REPO / "repsim").rglob("__init__.py")}
    assert found | {"repsim.configs"} == declared
    assert listed(options["package_dir"]) == ["repsim.configs = analyses/configs"]
    assert listed(setup_cfg()["options.package_data"]["repsim.configs"]) == ["*.yaml"]


# recipes

def test_recipes_are_the_yaml_files_of_analyses_configs_and_not_copied():
    assert recipe_dir() == RECIPES  # a checkout (or an editable install) reads them in place
    assert not (REPO / "repsim" / "configs").exists()  # one copy of each recipe, in analyses/configs
    names = recipes()
    assert names == sorted(p.stem for p in RECIPES.glob("*.yaml"))
    assert {"omniglot_20w1s_maml", "omniglot_5w1s_anil", "miniimagenet_5w5s_boil", "synthetic_quick_maml"} <= set(names)
    for name in names:  # every recipe loads and resolves
        assert load_config(name).to_dict() == load_config(RECIPES / f"{name}.yaml").to_dict()


def test_a_recipe_loads_by_name_from_any_folder(tmp_path, monkeypatch):
    by_path = load_config(RECIPES / "omniglot_20w1s_maml.yaml")
    monkeypatch.chdir(tmp_path)
    assert load_config("omniglot_20w1s_maml") == by_path
    assert load_config("omniglot_20w1s_maml.yaml") == by_path
    assert (load_config("omniglot_20w1s_maml", ["ways=5"])
            == load_config(RECIPES / "omniglot_20w1s_maml.yaml", ["ways=5"]))
    assert config_path("omniglot_20w1s_maml") == RECIPES / "omniglot_20w1s_maml.yaml"


def test_a_file_that_exists_wins_over_a_recipe_of_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("omniglot_20w1s_maml.yaml").write_text("dataset: synthetic\nways: 3\n")
    mine = load_config("omniglot_20w1s_maml.yaml")
    assert (mine.dataset, mine.ways) == ("synthetic", 3)
    shipped = load_config("omniglot_20w1s_maml")  # no file of that name here: the recipe
    assert (shipped.dataset, shipped.ways) == ("omniglot", 20)


def test_an_unknown_recipe_name_lists_the_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RepsimError, match="neither a file nor a shipped recipe") as caught:
        load_config("omniglot_20w1s_mam")
    message = str(caught.value)
    assert "\n" not in message and all(name in message for name in recipes())
    with pytest.raises(RepsimError, match=r"not found.*omniglot_5w1s_maml, omniglot_5w1s_multiclass"):
        load_config("elsewhere/mine.yaml")
    # the README's checkout-relative path, outside the checkout: the name alone is the fix
    with pytest.raises(RepsimError, match=r"--config omniglot_5w1s_maml\)"):
        load_config("analyses/configs/omniglot_5w1s_maml.yaml")


def test_repsim_train_with_an_unknown_recipe_fails_with_one_line(tmp_path):
    r = python_m_repsim("train", "--config", "no_such_recipe", "--out", tmp_path / "run", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    (line,) = r.stderr.splitlines()
    assert line.startswith("repsim: error: config 'no_such_recipe' is neither") and "omniglot_20w1s_maml" in line
    assert not (tmp_path / "run").exists()


def test_the_wheel_ships_the_recipes_and_the_license(tmp_path):
    """Builds the wheel with the installed setuptools (no network) from a copy of what it reads."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed")
    import setuptools
    if (tuple(int(x) for x in setuptools.__version__.split(".")[:2]) < (70, 1)
            and importlib.util.find_spec("wheel") is None):
        pytest.skip("setuptools < 70.1 builds wheels only with the wheel package")
    src = tmp_path / "src"
    for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "repsim", src / "repsim", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(RECIPES, src / "analyses" / "configs")
    out = tmp_path / "dist"
    out.mkdir()
    build = subprocess.run([sys.executable, "-c", f"from setuptools import build_meta; "
                            f"print(build_meta.build_wheel({str(out)!r}))"],
                           cwd=src, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = out.glob("repsim-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"repsim/configs/{n}.yaml" for n in recipes()} <= names
    assert {"repsim/__main__.py", "repsim/config.py"} <= names
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names)
    assert not any(n.startswith("analyses/") for n in names)
