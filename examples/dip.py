"""The DIP defence and DIPDefend on the bundled ResNet-20 and CIFAR-10 sample, under PGD-20 crafted on the
victim (oblivious) and, with --eot-draws, BPDA+EOT PGD crafted through the DIP defence.

Each image costs one DIP fit per prediction (the DIP defence's default fit, 1500 iterations of the small
network with its jittered input, took 3 s per image at batch 64 on one CPU thread in the second sensitivity
study; DIPDefend runs 4000 iterations of a smaller network), so the default run uses 8 images and takes a few
minutes on a CPU:

    python examples/dip.py
    python examples/dip.py --n 16 --eot-draws 4   # adds BPDA+EOT (much slower: steps x draws fits per image)

The figures of record are in docs/results.md.
"""

from __future__ import annotations

import argparse

import numpy as np
from art.attacks.evasion import ProjectedGradientDescent

from art_purifiers import DIPDefendPreprocessor, DIPPreprocessor
from art_purifiers.data import load_sample
from art_purifiers.evaluation import EOTClassifier, accuracy, art_classifier
from art_purifiers.models import load_victim


def main(n: int = 8, eot_draws: int = 0, eot_steps: int = 10) -> None:
    x, y = load_sample(n)
    victim = load_victim("resnet20")
    bare = art_classifier(victim, device="cpu")
    # The DIP defence reads the victim's decisions along each image's DIP trace; a seed fixes its randomness.
    defences = {"DIP defence": DIPPreprocessor(victim, seed=0), "DIPDefend": DIPDefendPreprocessor(seed=0)}
    defended = {name: art_classifier(victim, [defence], device="cpu") for name, defence in defences.items()}

    np.random.seed(0)  # noqa: NPY002 (ART's random start uses numpy's global generator)
    x_adv = ProjectedGradientDescent(bare, eps=8 / 255, eps_step=2 / 255, max_iter=20, verbose=False).generate(x, y=y)
    print(f"victim: clean {accuracy(bare, x, y):.1f}%, PGD-20 Linf 8/255 {accuracy(bare, x_adv, y):.1f}%")
    for name, classifier in defended.items():
        print(f"{name}: clean {accuracy(classifier, x, y):.1f}%, "
              f"PGD-20 Linf 8/255 oblivious (crafted on the bare victim) {accuracy(classifier, x_adv, y):.1f}%")

    if eot_draws:
        # BPDA+EOT: the attacker's model averages the victim's logits over fresh draws of the defence (seed None)
        # and passes gradients through it as the identity (the DIP defences are not differentiable).
        eot = art_classifier(EOTClassifier(victim, DIPPreprocessor(victim), draws=eot_draws), device="cpu")
        x_eot = ProjectedGradientDescent(eot, eps=8 / 255, eps_step=2 / 255, max_iter=eot_steps,
                                         verbose=False).generate(x, y=y)
        print(f"DIP defence: PGD-{eot_steps} Linf 8/255 BPDA+EOT ({eot_draws} draws) "
              f"{accuracy(defended['DIP defence'], x_eot, y):.1f}%")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=8, help="images of the bundled sample")
    parser.add_argument("--eot-draws", type=int, default=0, help="add BPDA+EOT PGD with this many draws")
    parser.add_argument("--eot-steps", type=int, default=10)
    args = parser.parse_args()
    main(args.n, args.eot_draws, args.eot_steps)
