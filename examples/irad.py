"""IRAD with the shipped CIFAR-10 weights on the bundled ResNet-20 and CIFAR-10 sample, under PGD-20.

Runs in a few minutes on a laptop CPU:  python examples/irad.py
The figures of record (AutoAttack on 500 test images) are in docs/results.md.
"""

from __future__ import annotations

import numpy as np
from art.attacks.evasion import ProjectedGradientDescent

from art_purifiers import IRADPreprocessor
from art_purifiers.data import load_sample
from art_purifiers.evaluation import accuracy, art_classifier
from art_purifiers.models import load_victim


def main(n: int = 64) -> None:
    x, y = load_sample(n)
    victim = load_victim("resnet20")
    bare = art_classifier(victim, device="cpu")
    # The shipped weights, trained against a ResNet-32: attacking this ResNet-20 is a transfer setting.
    defended = art_classifier(victim, [IRADPreprocessor(gradient="exact")], device="cpu")
    bpda = art_classifier(victim, [IRADPreprocessor(gradient="bpda")], device="cpu")
    print(f"clean accuracy: victim {accuracy(bare, x, y):.1f}%, IRAD {accuracy(defended, x, y):.1f}%")

    pgd = {"eps": 8 / 255, "eps_step": 2 / 255, "max_iter": 20, "verbose": False}
    np.random.seed(0)  # noqa: NPY002 (ART's random start uses numpy's global generator)
    settings = {
        "oblivious (crafted on the bare victim)": bare,
        "BPDA (identity backward through IRAD)": bpda,
        "adaptive (exact gradient through IRAD)": defended,
    }
    for name, attacked in settings.items():
        x_adv = ProjectedGradientDescent(attacked, **pgd).generate(x, y=y)
        print(f"PGD-20 Linf 8/255, {name}: {accuracy(defended, x_adv, y):.1f}%")


if __name__ == "__main__":
    main()
