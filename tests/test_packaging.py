"""Packaging: pins are exact, environment.yml agrees with requirements.txt, torch and torchvision pinned as a pair."""

import re
import tomllib

import yaml

from mnist_lib.core.paths import REPO_ROOT


def requirement_lines():
    lines = (REPO_ROOT / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_requirements_are_exact_pins_with_torch_and_torchvision_as_a_pair():
    reqs = requirement_lines()
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][A-Za-z0-9.+]*", r) for r in reqs), reqs
    assert "torch==2.14.1" in reqs and "torchvision==0.29.1" in reqs  # the pair PyPI's torchvision 0.29.1 requires


def test_environment_yml_matches_requirements():
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip_section == [*requirement_lines(), "-e ."]


def test_pyproject_declares_package_script_and_tools():
    meta = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "mnist_lib"
    assert meta["project"]["scripts"]["mnist-lib"] == "mnist_lib.cli:main"
    assert "ruff" in meta["tool"] and "pytest" in meta["tool"]


def test_makefile_targets_are_documented():
    text = (REPO_ROOT / "Makefile").read_text()
    for target in ("help", "setup", "test", "train", "lint"):
        assert re.search(rf"^{target}:.*## ", text, re.M), target
