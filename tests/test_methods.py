"""One registry of methods (issue #24, item 5): a method registered in one line is found by ``evaluate --defence``,
``train``, ``defences``, the package exports and the docs' methods table, and leaves no trace once removed; the
built-in methods' lines agree with their adapters, trainers, weight files and pages."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import art_purifiers
from art_purifiers import methods
from art_purifiers.base import PurifierPreprocessor
from art_purifiers.cli import main
from art_purifiers.methods import RegisteredObjects, register_method, registered_methods, unregister_method
from art_purifiers.training.registry import RunSettings, Trainer

DOCS = Path(__file__).resolve().parents[1] / "docs"


class ToyPurifier(PurifierPreprocessor):
    """A toy purifier: blends the image towards mid-grey.

    :param strength: Weight of the grey image, in ``[0, 1]``.
    :param kwargs: Shared options of :class:`~art_purifiers.base.PurifierPreprocessor`.
    """

    params = PurifierPreprocessor.params + ["strength"]

    def __init__(self, strength: float = 0.1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.strength = strength
        self._check_params()

    def purify(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return (1 - self.strength) * x + self.strength * 0.5


@dataclass(frozen=True)
class ToyConfig(RunSettings):
    """The toy trainer's settings."""

    rounds: int = 1


def _toy_run(config: ToyConfig, job) -> dict:
    job.out_dir.mkdir(parents=True, exist_ok=True)
    return {"rounds": config.rounds, "images": len(job.x), "seconds": 0.0}


TOY_TRAINER = Trainer(method="toy", summary="a toy trainer", presets={"tiny": ToyConfig()}, run=_toy_run)


@pytest.fixture
def toy():
    """The toy method, registered through the registry alone and removed afterwards."""
    method = register_method("toy", ToyPurifier, trainer=TOY_TRAINER, docs="defences/toy")
    try:
        yield method
    finally:
        unregister_method("toy")


def _help(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_toy_method_is_a_defence_of_evaluate(toy, capsys, tmp_path):
    assert "toy" in _help(capsys, ["evaluate", "--help"])
    with pytest.raises(SystemExit):
        main(["evaluate", "--quiet", "--no-cache", "--defence", "toy:strenght=0.2"])
    assert "Unknown parameter(s) ['strenght'] for defence 'toy'" in capsys.readouterr().err
    out = tmp_path / "table.json"
    assert main(["evaluate", "--quiet", "--no-cache", "--defence", "toy:strength=0.2", "--n", "2", "--threat",
                 "clean", "--attack", "fgsm", "--json", str(out)]) == 0
    assert "toy:strength=0.2" in {row["defence"] for row in json.loads(out.read_text())["rows"]}


def test_toy_method_is_listed_by_defences(toy, capsys):
    assert main(["defences"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"^toy  \(ToyPurifier\): A toy purifier", text, re.MULTILINE)
    assert "strength=0.1  Weight of the grey image, in [0, 1]." in text


def test_toy_method_is_a_method_of_train(toy, capsys, monkeypatch, tmp_path):
    assert "toy" in _help(capsys, ["--help"])
    assert "toy (presets: tiny)" in " ".join(_help(capsys, ["train", "--help"]).split())  # wherever argparse wraps
    assert "--rounds" in _help(capsys, ["train", "toy", "--help"])
    import art_purifiers.data as data

    monkeypatch.setattr(data, "resolve_cifar10_root", lambda root: tmp_path)
    monkeypatch.setattr(data, "load_cifar10", lambda root, split, indices: (np.zeros((3, 3, 32, 32), np.float32),
                                                                          np.zeros(3, np.int64)))
    assert main(["train", "toy", "--preset", "tiny", "--rounds", "4", "--out", str(tmp_path / "run")]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["rounds"] == 4 and report["images"] == 3


def test_toy_method_is_exported(toy):
    from art_purifiers import defences

    assert art_purifiers.ToyPurifier is ToyPurifier and defences.ToyPurifier is ToyPurifier
    assert "ToyPurifier" in art_purifiers.__all__ and "ToyPurifier" in dir(art_purifiers)
    assert "ToyPurifier" in defences.__all__
    assert defences.DEFENCES["toy"] is ToyPurifier and "toy" in defences.DEFENCES
    assert isinstance(defences.make_defence("toy:strength=0.5", device_type="cpu"), ToyPurifier)


def test_toy_method_is_in_the_docs_table(toy):
    from art_purifiers.catalogue import methods_markdown

    text = methods_markdown()
    row = next(line for line in text.splitlines() if line.startswith("| `toy` |"))
    assert "ToyPurifier" in row and "A toy purifier" in row and "tiny" in row and "{doc}`/defences/toy`" in row
    assert "\ndefences/toy\n" in text.split("```{toctree}")[1]


def test_a_removed_method_leaves_no_trace(capsys):
    register_method("toy", ToyPurifier, trainer=TOY_TRAINER, docs="defences/toy")
    unregister_method("toy")
    from art_purifiers import defences
    from art_purifiers.catalogue import methods_markdown
    from art_purifiers.training import TRAINERS

    assert "toy" not in methods.defence_names() and "toy" not in TRAINERS and "toy" not in defences.DEFENCES
    assert "ToyPurifier" not in art_purifiers.__all__
    with pytest.raises(AttributeError):
        art_purifiers.ToyPurifier  # noqa: B018
    assert "`toy`" not in methods_markdown()
    with pytest.raises(SystemExit):
        main(["evaluate", "--defence", "toy"])
    assert "Unknown defence 'toy'" in capsys.readouterr().err


def test_registering_the_same_method_again_changes_nothing(toy):
    before = registered_methods()
    assert register_method("toy", ToyPurifier, trainer=TOY_TRAINER, docs="defences/toy") == toy
    assert registered_methods() == before


@pytest.mark.parametrize(("arguments", "message"), [
    (("Toy", ToyPurifier), "A method name is lower case"),
    (("", ToyPurifier), "A method name is lower case"),
    ((3, ToyPurifier), "A method name is lower case"),
    (("toy:x", ToyPurifier), "A method name is lower case"),
    (("art", ToyPurifier), "A method name is lower case"),
    (("none", ToyPurifier), "A method name is lower case"),
    (("toy",), "needs an adapter, a trainer or both"),
    (("toy", "art_purifiers.defences.irad"), "adapter must be 'module:attribute'"),
    (("toy", "a b:C"), "adapter must be 'module:attribute'"),
    (("toy", ToyPurifier, {"trainer": "irad"}), "trainer must be 'module:attribute'"),
    (("toy", ToyPurifier, {"docs": "defences/toy.md"}), "docs is a page of docs/ without suffix"),
    (("toy", ToyPurifier, {"docs": 3}), "docs is a page of docs/ without suffix"),
    (("toy", "tests.x:Toy", {"exports": ("not a name",)}), "exports are Python names"),
    (("toy", ToyPurifier, {"exports": ("Other",)}), "the adapter must be a 'module:attribute' reference"),
    (("irad", ToyPurifier), "A method named 'irad' is registered already"),
    (("toy", "art_purifiers.defences.other:IRADPreprocessor"), r"exports \['IRADPreprocessor'\], which method 'irad'"),
])
def test_bad_registrations_are_refused(arguments, message):
    *positional, options = arguments if isinstance(arguments[-1], dict) else (*arguments, {})
    with pytest.raises(ValueError, match=message):
        register_method(*positional, **options)
    assert "toy" not in registered_methods()


def test_unregistering_an_unknown_method_raises():
    with pytest.raises(KeyError, match="No method named 'nope'"):
        unregister_method("nope")


def test_a_trainer_of_another_method_is_refused_when_loaded():
    register_method("toy", trainer=Trainer(method="other", summary="", presets={"p": ToyConfig()}, run=_toy_run))
    try:
        with pytest.raises(ValueError, match="must be a Trainer with method='toy'"):
            RegisteredObjects("trainer")["toy"]
    finally:
        unregister_method("toy")


def test_registered_objects_role_is_checked():
    with pytest.raises(ValueError, match="role must be 'adapter' or 'trainer'"):
        RegisteredObjects("network")


# --- the built-in methods -------------------------------------------------------------------------------------------
def test_builtin_references_load():
    from art_purifiers.deploy import Defence

    for name, method in registered_methods().items():
        if method.adapter is not None:
            adapter = method.load_adapter()
            assert issubclass(adapter, Defence), name
        if method.trainer is not None:
            assert method.load_trainer().method == name
        for export, reference in method.export_table().items():
            assert getattr(art_purifiers, export) is methods.resolve(reference)


def test_every_defence_page_is_a_registered_method_page():
    registered = {method.docs for method in registered_methods().values() if method.docs}
    pages = {f"defences/{page.stem}" for page in (DOCS / "defences").glob("*.md")}
    assert registered == pages
    assert "   methods\n" in (DOCS / "index.rst").read_text(encoding="utf-8")
    assert "{include} _generated/methods.md" in (DOCS / "methods.md").read_text(encoding="utf-8")


def test_every_shipped_weight_file_belongs_to_a_method_or_is_a_victim():
    from art_purifiers.weights import registry

    assert {entry["method"] for entry in registry().values()} <= {*registered_methods(), "victim"}


def test_parameters_read_from_source_equal_the_signatures():
    """The command line reads the adapters' parameters from their source; they are those of the imported class."""
    from art_purifiers.defences import _resolve
    from art_purifiers.specs import source_parameters

    for name, method in registered_methods().items():
        if method.adapter is not None:
            assert source_parameters(method.adapter) == _resolve(name)[3], name
    assert source_parameters(ToyPurifier) is None
    assert source_parameters("art_purifiers.defences.irad:NoSuchClass") is None
    assert source_parameters("art_purifiers.no_such_module:Class") is None


def test_spec_checks_names_and_exports_need_no_torch():
    """The registry, the command line's spec check and the exports table import neither torch nor ART."""
    code = ("import sys, art_purifiers; from art_purifiers.specs import check_spec\n"
            "check_spec('irad:magnitude=1'); check_spec('art:JpegCompression:quality=5')\n"
            "try:\n    check_spec('dir:ratioo=0.5')\nexcept ValueError as error:\n    print(error)\n"
            "print(sorted(art_purifiers.__all__)[0], 'torch' in sys.modules or 'art' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Unknown parameter(s) ['ratioo'] for defence 'dir'; its parameters: [")
    assert lines[1].split() == ["ARTPreprocessor", "False"]
