"""
Naive resampling (IRAD Table 1)
===============================

The bilinear resampling defence with a fixed shift of 1.5 pixels (:class:`~art_purifiers.ResamplingPreprocessor`)
on the bundled ResNet-20 and CIFAR-10 sample, under PGD-20 (L-inf 8/255) crafted on the bare victim
(oblivious) and through the resampling (adaptive, exact gradient).

With no arguments it uses 32 images and runs in seconds on one CPU core (the documentation's gallery runs it
so); ``python examples/resampling.py --n 200`` uses the whole bundled sample. The figures of record
(AutoAttack on 500 test images) are on the Results page.
"""

# %%
# Setup: victim, images, defence
# ------------------------------
import argparse
from pathlib import Path

import matplotlib.pyplot as plt
from art.attacks.evasion import ProjectedGradientDescent

from art_purifiers import ResamplingPreprocessor
from art_purifiers.data import CLASSES, load_sample
from art_purifiers.evaluation import accuracy, art_classifier
from art_purifiers.evaluation.plots import plot_accuracy_vs_eps, plot_purification, read_result_tables
from art_purifiers.models import load_victim

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--n", type=int, default=32, help="images of the bundled sample (at most 200)")
args = parser.parse_args()

x, y = load_sample(args.n)
victim = load_victim("resnet20")
bare = art_classifier(victim, device="cpu")
defence = ResamplingPreprocessor(interpolation="bilinear", sampler="invariant", magnitude=1.5)
defended = art_classifier(victim, [defence], device="cpu")
print(f"clean accuracy on {args.n} images: victim {accuracy(bare, x, y):.1f}%, "
      f"defended {accuracy(defended, x, y):.1f}%")

# %%
# Oblivious and adaptive PGD-20
# -----------------------------
# Oblivious: the attacker does not know about the defence. Adaptive: it back-propagates through the
# resampling (``gradient="exact"``, the default), which is differentiable.
pgd = {"eps": 8 / 255, "eps_step": 2 / 255, "max_iter": 20, "verbose": False}
x_oblivious = ProjectedGradientDescent(bare, **pgd).generate(x, y=y)
x_adaptive = ProjectedGradientDescent(defended, **pgd).generate(x, y=y)
print(f"PGD-20 Linf 8/255, oblivious: {accuracy(defended, x_oblivious, y):.1f}%")
print(f"PGD-20 Linf 8/255, adaptive:  {accuracy(defended, x_adaptive, y):.1f}%")

# %%
# What the defence does to the images
# -----------------------------------
# Clean and oblivious adversarial images before and after resampling, with the victim's label and confidence
# under each (green: correct). The last two columns show the perturbation and what is left of it after
# resampling (purified adversarial minus purified clean), amplified by the same factor: the shift moves the
# perturbation with the image and the bilinear weights blur it, which is all the defence does.
plot_purification(victim, defence, x[:3], x_oblivious[:3], y[:3], CLASSES,
                  title="bilinear resampling, d = 1.5 px; PGD-20 Linf 8/255 on the bare victim")

# %%
# Accuracy against eps, from the recorded results
# -----------------------------------------------
# Not computed here: read from ``docs/results/resampling_adaptive.json`` (AutoAttack, 500 test images, every
# threat model). Only eps = 8/255 was recorded, so each line joins SA (at eps 0) to that one RA (dotted).
# The recorded tables are in the repository's docs/results/; sphinx-gallery runs an example in its own folder
# and without __file__.
HERE = Path(__file__).parent if "__file__" in globals() else Path.cwd()
RESULTS = HERE.resolve().parent / "docs" / "results"
plot_accuracy_vs_eps(read_result_tables([RESULTS / "resampling_adaptive.json"]),
                     title="bilinear resampling d = 1.5 px, AutoAttack, 500 test images (recorded)")
plt.show()
