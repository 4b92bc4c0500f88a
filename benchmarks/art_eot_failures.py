"""What each ART attack does when ART's own EoT preprocessors sit next to one of our defences in a hand-built
``PyTorchClassifier`` (docs/evaluating.md, "ART's EoT preprocessors").

    OMP_NUM_THREADS=1 python benchmarks/art_eot_failures.py

Victim: the bundled ResNet-20; defence: random resampling (``sampler="variant"``); images: bundled CIFAR-10 test
images 0..3 (HopSkipJump: 0..1); EoT: ``EoTGaussianNoisePyTorch`` and ``EoTImageRotationPyTorch`` with
``nb_samples=2``. Prints one line per (EoT class, attack): ``runs`` or the exception and where ART raised it.
A few seconds on one CPU thread.
"""

from __future__ import annotations

import traceback

import art
import numpy as np
import torch
from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent, HopSkipJump, ProjectedGradientDescent
from art.estimators.classification import PyTorchClassifier
from art.preprocessing.expectation_over_transformation import EoTGaussianNoisePyTorch, EoTImageRotationPyTorch
from torch import nn

from art_purifiers import ResamplingPreprocessor
from art_purifiers.data import load_sample
from art_purifiers.models import load_victim

EPS = 8 / 255


def attacks(classifier: PyTorchClassifier, x: np.ndarray, y: np.ndarray) -> dict:
    """``{name: zero-argument callable running the attack}``, each as short as ART allows."""
    def pgd():
        return ProjectedGradientDescent(classifier, eps=EPS, eps_step=2 / 255, max_iter=2, verbose=False)

    def autoattack():
        apgd = AutoProjectedGradientDescent(classifier, eps=EPS, max_iter=2, nb_random_init=1, verbose=False)
        return AutoAttack(classifier, eps=EPS, attacks=[apgd])

    hsj = HopSkipJump(classifier, max_iter=2, max_eval=30, init_eval=5, init_size=20, verbose=False)
    return {
        "ProjectedGradientDescent with labels": lambda: pgd().generate(x, y=y),
        "ProjectedGradientDescent without labels": lambda: pgd().generate(x),
        "AutoAttack with labels": lambda: autoattack().generate(x, y=y),
        "AutoAttack without labels": lambda: autoattack().generate(x),
        "HopSkipJump": lambda: hsj.generate(x[:2]),
    }


def outcome(run) -> str:
    try:
        run()
    except Exception as error:  # noqa: BLE001 (the point is to report whatever ART raises)
        frame = traceback.extract_tb(error.__traceback__)[-1]
        where = frame.filename.split("site-packages/")[-1]
        return f"{type(error).__name__}: {str(error)[:120]} ({where}, line {frame.lineno})"
    return "runs"


def main() -> None:
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 (ART draws from numpy's global generator)
    x, y = load_sample(4)
    victim = load_victim()
    print(f"ART {art.__version__}, torch {torch.__version__}, numpy {np.__version__}")
    for eot in (EoTGaussianNoisePyTorch(nb_samples=2, clip_values=(0.0, 1.0), std=0.02, apply_predict=True),
                EoTImageRotationPyTorch(nb_samples=2, angles=10.0, clip_values=(0.0, 1.0), apply_predict=True)):
        classifier = PyTorchClassifier(victim, loss=nn.CrossEntropyLoss(), input_shape=(3, 32, 32), nb_classes=10,
                                       clip_values=(0.0, 1.0), device_type="cpu",
                                       preprocessing_defences=[ResamplingPreprocessor(sampler="variant"), eot])
        print(f"{type(eot).__name__}: predict on {len(x)} images -> {classifier.predict(x).shape[0]} rows")
        for name, run in attacks(classifier, x, y).items():
            print(f"  {name}: {outcome(run)}")


if __name__ == "__main__":
    main()
