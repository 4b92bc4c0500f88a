"""Naive resampling defence (IRAD Table 1) on the bundled ResNet-20 and CIFAR-10 sample.

Runs in well under a minute on a laptop CPU:  python examples/resampling.py
"""

from __future__ import annotations

from art.attacks.evasion import ProjectedGradientDescent

from art_purifiers import ResamplingPreprocessor
from art_purifiers.data import load_sample
from art_purifiers.evaluation import accuracy, art_classifier
from art_purifiers.models import load_victim


def main(n: int = 64) -> None:
    x, y = load_sample(n)
    victim = load_victim("resnet20")
    bare = art_classifier(victim, device="cpu")
    defence = ResamplingPreprocessor(interpolation="bilinear", sampler="invariant", magnitude=1.5)
    defended = art_classifier(victim, [defence], device="cpu")
    print(f"clean accuracy: victim {accuracy(bare, x, y):.1f}%, defended {accuracy(defended, x, y):.1f}%")

    pgd = {"eps": 8 / 255, "eps_step": 2 / 255, "max_iter": 20, "verbose": False}
    # Oblivious: the attacker does not know about the defence.
    x_oblivious = ProjectedGradientDescent(bare, **pgd).generate(x, y=y)
    # Adaptive: the attacker back-propagates through the resampling (gradient="exact", the default).
    x_adaptive = ProjectedGradientDescent(defended, **pgd).generate(x, y=y)
    print(f"PGD-20 Linf 8/255, oblivious: {accuracy(defended, x_oblivious, y):.1f}%")
    print(f"PGD-20 Linf 8/255, adaptive:  {accuracy(defended, x_adaptive, y):.1f}%")


if __name__ == "__main__":
    main()
