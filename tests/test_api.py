"""The public API keeps no silent no-ops (issue #25): every constructor argument that changes a defence's output is
in its ``params`` (or ``objects``, for networks), in its ``repr``, settable with ``set_params``/``configured`` and
part of its fingerprint; a misspelt key raises; every parameter is documented."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from art.estimators.classification import PyTorchClassifier
from conftest import TinyCNN
from defences_under_contract import (
    ConvPurifier,
    tiny_dip,
    tiny_dir_weights,
    tiny_idfr_weights,
    tiny_irad_weights,
)
from torch import nn

from art_purifiers import IRADPreprocessor
from art_purifiers.base import PurifierPreprocessor
from art_purifiers.defences import DEFENCES, ARTPreprocessor, DIRPreprocessor, IDFRDefence, IDFRPreprocessor
from art_purifiers.deploy import DefenceChain, EmbeddingDefence

#: Every public defence class: the registry's, ART's wrapper and the model-changing building block.
CLASSES = sorted({*DEFENCES.values(), ARTPreprocessor, EmbeddingDefence, IDFRPreprocessor}, key=lambda c: c.__name__)
#: Constructor arguments that are not settings of what the defence computes: ART's switches of *where* it runs, and
#: the DIP defences' progress bar and the full gradient's checkpoint spacing (memory only).
NOT_SETTINGS = {"device_type", "apply_fit", "apply_predict", "verbose", "checkpoint_every"}
BASE_ARGUMENTS = set(inspect.signature(PurifierPreprocessor.__init__).parameters) - {"self"}


def constructor_arguments(cls) -> set[str]:
    """Named constructor arguments, with the base options a ``**kwargs`` passes on to ``PurifierPreprocessor``."""
    parameters = inspect.signature(cls.__init__).parameters
    named = {name for name, p in parameters.items()
             if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        named |= BASE_ARGUMENTS
    return named


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_signature_equals_params(cls):
    """What the constructor takes is what ``params``/``objects`` name (less ART's device and apply switches)."""
    params, objects = set(cls.params), set(cls.objects)
    assert not params & objects, cls
    assert constructor_arguments(cls) - NOT_SETTINGS == params | objects, cls
    assert len(cls.params) == len(params), f"{cls.__name__}.params repeats a name"


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_parameter_is_documented(cls):
    """Every constructor argument (``kwargs`` included) has a ``:param NAME:`` line in the class docstring, or the
    base's for the shared options it passes on."""
    documented = set(re.findall(r":param (\w+):", inspect.getdoc(cls) or ""))
    parameters = inspect.signature(cls.__init__).parameters
    own = {name for name in parameters if name != "self"}
    missing = own - documented
    assert not missing, f"{cls.__name__} does not document {sorted(missing)}"
    base = set(re.findall(r":param (\w+):", inspect.getdoc(PurifierPreprocessor)))
    assert BASE_ARGUMENTS <= base


def _defences():
    """A cheap instance of every class, with another value for each setting that changes the output."""
    irad, idfr, dir_ = str(tiny_irad_weights()), str(tiny_idfr_weights()), str(tiny_dir_weights())
    return [
        (IRADPreprocessor(irad, "none", device_type="cpu"), {"weights": "cifar10"}),
        (IDFRPreprocessor(idfr, device_type="cpu"), {"weights": "cifar10"}),
        (DIRPreprocessor(dir_, seed=0, device_type="cpu"), {"weights": "cifar10"}),
        (IDFRDefence(idfr, device_type="cpu"), {"weights": "cifar10"}),
        (IDFRDefence(idfr, device_type="cpu"), {"restorer": False}),
        (IRADPreprocessor(irad, "invariant", device_type="cpu"), {"magnitude": 0.5}),
        (ARTPreprocessor("JpegCompression", options={"quality": 90}, device_type="cpu"), {"options": {"quality": 10}}),
        (ARTPreprocessor("JpegCompression", device_type="cpu"), {"preprocessor": "FeatureSqueezing",
                                                                "options": {"bit_depth": 2}}),
    ]


def _output(defence, x: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(0)
    victim = TinyCNN().eval()
    with torch.no_grad():
        return defence.deploy(victim).logits(x)


@pytest.mark.parametrize(("index"), range(len(_defences())))
def test_set_params_and_configured_change_output_repr_and_fingerprint(index):
    defence, change = _defences()[index]
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    before, fingerprint, text = _output(defence, x), defence.fingerprint(), repr(defence)
    copy = defence.configured(**change)
    assert defence.fingerprint() == fingerprint and repr(defence) == text  # the original is untouched
    assert copy.fingerprint() != fingerprint
    assert not torch.allclose(_output(copy, x), before)
    for key, value in change.items():
        assert f"{key}={value!r}" in repr(copy)
    defence.set_params(**change)
    assert defence.fingerprint() == copy.fingerprint() and repr(defence) == repr(copy)
    torch.testing.assert_close(_output(defence, x), _output(copy, x))


def test_set_params_weights_reloads_every_network():
    defence = IRADPreprocessor("cifar10", "none", device_type="cpu")
    assert "samplenet" in defence._networks
    shipped = {name: tensor.clone() for name, tensor in defence.weight_tensors()}
    defence.set_params(weights=tiny_irad_weights())
    assert defence.weights == str(tiny_irad_weights())
    assert {name.split(".")[0] for name, _ in defence.weight_tensors()} == {"representation", "samplenet"}
    assert {name for name, _ in defence.weight_tensors()} != set(shipped)  # the tiny file's architecture
    defence.set_params(weights="cifar10")
    for name, tensor in defence.weight_tensors():
        assert torch.equal(tensor, shipped[name])


@pytest.mark.parametrize("method", ["set_params", "configured"])
@pytest.mark.parametrize("defence", [
    lambda: IRADPreprocessor(tiny_irad_weights(), device_type="cpu"),
    lambda: IDFRDefence(tiny_idfr_weights(), device_type="cpu"),
    lambda: EmbeddingDefence(nn.Identity()),
    lambda: DefenceChain([ConvPurifier(device_type="cpu"), EmbeddingDefence(nn.Identity())]),
], ids=["irad", "idfr", "embedding", "chain"])
def test_misspelt_key_raises_naming_the_valid_ones(defence, method):
    defence = defence()
    with pytest.raises(ValueError, match=r"has no parameter\(s\) \['magnitudee'\]; its parameters: \[.*'gradient'"):
        getattr(defence, method)(magnitudee=3)


def test_chain_passes_each_member_its_own_parameters():
    chain = DefenceChain([ConvPurifier(device_type="cpu", seed=1), EmbeddingDefence(nn.Identity())])
    configured = chain.configured(seed=None, gradient="bpda")
    assert configured.defences[0].seed is None and configured.gradient == "bpda"
    assert chain.defences[0].seed == 1 and chain.gradient == "exact"


def test_objects_are_settable_and_shown_by_type():
    defence = tiny_dip(device_type="cpu")
    assert "classifier=<TinyCNN, " in repr(defence)
    other = TinyCNN()
    assert defence.configured(classifier=other).classifier is not defence.classifier
    assert defence.configured(classifier=other).fingerprint() != defence.fingerprint()
    module = nn.Linear(64, 64)
    embedding = EmbeddingDefence(nn.Identity()).configured(module=module)
    assert embedding.module.training is False and not any(p.requires_grad for p in embedding.module.parameters())


def test_deployment_repr_is_short():
    deployment = IDFRDefence(tiny_idfr_weights(), device_type="cpu").deploy(TinyCNN())
    text = repr(deployment)
    assert text.startswith("Deployment(model=<EmbeddingDefendedClassifier, ") and "\n" not in text
    assert "IDFRPreprocessor(" in text and len(text) < 400


def test_classifier_object_repr():
    classifier = PyTorchClassifier(TinyCNN(), nn.CrossEntropyLoss(), input_shape=(3, 32, 32), nb_classes=10)
    defence = tiny_dip(device_type="cpu").configured(classifier=classifier)
    assert "classifier=<ART PyTorchClassifier of <TinyCNN, " in repr(defence)
    assert np.isfinite(float(defence.lr))


DEFENCE_PAGES = sorted((Path(__file__).resolve().parents[1] / "docs" / "defences").glob("*.md"))


@pytest.mark.parametrize("page", DEFENCE_PAGES, ids=lambda p: p.stem)
def test_every_defence_page_has_a_python_example(page):
    """Each page shows the defence in Python; the example parses and its imports exist."""
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.DOTALL)
    assert blocks, f"{page.name} has no Python example"
    for block in blocks:
        tree = ast.parse(block)
        imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
        exec(compile(ast.Module(imports, type_ignores=[]), page.name, "exec"), {})  # noqa: S102


def test_project_urls_and_the_readme_link_agree():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    root = Path(__file__).resolve().parents[1]
    urls = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["urls"]
    assert {"Documentation", "Source", "Issues"} <= set(urls)
    home = urls["Source"]
    assert all(url.startswith(home) for url in urls.values())
    first_lines = "\n".join((root / "README.md").read_text(encoding="utf-8").splitlines()[:5])
    assert urls["Documentation"] in first_lines and home in first_lines
