"""torchvision's metadata for the MNIST family, read from its source without importing it.

    tv = dataset_class("KMNIST")
    tv.mirrors      # ('http://codh.rois.ac.jp/kmnist/dataset/kmnist/',)
    tv.resources    # (('train-images-idx3-ubyte.gz', 'bdb82020997e1d708af4cf47b453dcf7'), ...)
    tv.classes      # ('o', 'ki', 'su', 'tsu', 'na', 'ha', 'ma', 'ya', 're', 'wo')
    tv.folder       # 'KMNIST': torchvision keeps its files in <root>/KMNIST/raw/

The dataset registry (datasets.py) takes file names, mirrors, the MD5s of the
.gz files and class names from torchvision's classes MNIST, FashionMNIST and
KMNIST rather than from copies of its own. Why the source and not an import:
`import torchvision` costs about 2 s per process (its C++ ops and every
submodule), and every command-line run and test subprocess builds the registry.
The class attributes are plain literals, read with ast; a subclass inherits what
it does not set. tests/test_datasets.py checks the result against the imported
classes.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

ATTRIBUTES = ("mirrors", "resources", "classes")


class TorchvisionSourceError(RuntimeError):
    """torchvision is missing or its dataset source does not hold what the registry reads."""


@dataclass(frozen=True)
class TorchvisionDataset:
    """What one torchvision MNIST-family class says about its files."""

    folder: str  # the class's name: torchvision's files lie in <root>/<folder>/raw/
    mirrors: tuple[str, ...]  # base URLs, tried in order
    resources: tuple[tuple[str, str], ...]  # (file name.gz, MD5 of the .gz), in torchvision's order
    classes: tuple[str, ...]  # class names, index = label


def mnist_source() -> Path:
    """torchvision/datasets/mnist.py of the installed torchvision, found without importing torchvision."""
    spec = importlib.util.find_spec("torchvision")  # a top-level name: found, not imported
    if spec is None or not spec.submodule_search_locations:
        raise TorchvisionSourceError(
            "torchvision is not installed: the dataset registry reads file names, mirrors and checksums "
            "from its dataset classes; install it with pip install -r requirements.txt"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "mnist.py"


@functools.lru_cache(maxsize=8)
def _class_bodies(source: Path) -> dict[str, ast.ClassDef]:
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    except (OSError, SyntaxError, UnicodeDecodeError) as e:
        raise TorchvisionSourceError(f"cannot read torchvision's dataset source {source}: {e}") from None
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def _attribute(classes: dict[str, ast.ClassDef], name: str, attribute: str, source: Path) -> object:
    """The literal value `attribute` takes in class `name`, following its bases within the file."""
    node = classes.get(name)
    if node is None:
        raise TorchvisionSourceError(f"{source}: no class {name}")
    for statement in node.body:
        if isinstance(statement, ast.Assign):
            targets = statement.targets
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            targets = [statement.target]
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == attribute for t in targets):
            try:
                return ast.literal_eval(statement.value)
            except ValueError:
                raise TorchvisionSourceError(
                    f"{source}: {name}.{attribute} is not a literal, so it cannot be read without importing"
                ) from None
    for base in node.bases:
        if isinstance(base, ast.Name) and base.id in classes:
            return _attribute(classes, base.id, attribute, source)
    raise TorchvisionSourceError(f"{source}: class {name} sets no {attribute}")


def dataset_class(name: str, source: Path | None = None) -> TorchvisionDataset:
    """The metadata of torchvision's dataset class `name` ("MNIST", "FashionMNIST", "KMNIST"), read from `source` (default: the installed one)."""
    source = source or mnist_source()
    classes = _class_bodies(source)
    mirrors, resources, names = (_attribute(classes, name, a, source) for a in ATTRIBUTES)
    try:
        resources = tuple((str(file), str(md5)) for file, md5 in resources)
    except (TypeError, ValueError):
        raise TorchvisionSourceError(f"{source}: {name}.resources is not a list of (file, md5) pairs") from None
    return TorchvisionDataset(name, tuple(map(str, mirrors)), resources, tuple(map(str, names)))
