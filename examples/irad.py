"""
IRAD: implicit representation and SampleNet
===========================================

IRAD with the shipped CIFAR-10 weights (:class:`~art_purifiers.IRADPreprocessor`) on the bundled ResNet-20
and CIFAR-10 sample, under PGD-20 (L-inf 8/255) in three settings: crafted on the bare victim (oblivious),
through IRAD with the identity as its backward pass (BPDA), and through IRAD with exact gradients (adaptive).

With no arguments it uses 8 images, so that it runs in well under a minute on one CPU core (the
documentation's gallery runs it so; back-propagating through IRAD costs about a second per image and
PGD-20): the printed accuracies are a demonstration on 8 images. ``python examples/irad.py --n 64`` takes a
few minutes. The figures of record (AutoAttack on 500 test images) are on the Results page.
"""

# %%
# Setup: victim, images, IRAD
# ---------------------------
# The shipped weights were trained against a ResNet-32: attacking this ResNet-20 is a transfer setting.
import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from art.attacks.evasion import ProjectedGradientDescent

from art_purifiers import IRADPreprocessor
from art_purifiers.data import CLASSES, load_sample
from art_purifiers.evaluation import accuracy, art_classifier
from art_purifiers.evaluation.plots import (
    irad_shift_fields,
    plot_accuracy_vs_eps,
    plot_purification,
    plot_shift_fields,
    read_result_tables,
)
from art_purifiers.models import load_victim

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--n", type=int, default=8, help="images of the bundled sample (at most 200)")
args = parser.parse_args()

x, y = load_sample(args.n)
victim = load_victim("resnet20")
bare = art_classifier(victim, device="cpu")
irad = IRADPreprocessor(gradient="exact")
defended = art_classifier(victim, [irad], device="cpu")
bpda = art_classifier(victim, [IRADPreprocessor(gradient="bpda")], device="cpu")
print(f"clean accuracy on {args.n} images: victim {accuracy(bare, x, y):.1f}%, IRAD {accuracy(defended, x, y):.1f}%")

# %%
# PGD-20 under three threat models
# --------------------------------
pgd = {"eps": 8 / 255, "eps_step": 2 / 255, "max_iter": 20, "verbose": False}
np.random.seed(0)  # noqa: NPY002 (ART's random start uses numpy's global generator)
settings = {
    "oblivious (crafted on the bare victim)": bare,
    "BPDA (identity backward through IRAD)": bpda,
    "adaptive (exact gradient through IRAD)": defended,
}
adversarial = {}
for name, attacked in settings.items():
    adversarial[name] = ProjectedGradientDescent(attacked, **pgd).generate(x, y=y)
    print(f"PGD-20 Linf 8/255, {name}: {accuracy(defended, adversarial[name], y):.1f}%")

# %%
# What IRAD does to the images
# ----------------------------
# Clean and oblivious adversarial images, reconstructed and resampled by IRAD, with the victim's label and
# confidence under each. The last two columns: the perturbation, and what is left of it after IRAD (purified
# adversarial minus purified clean), amplified by the same factor.
x_oblivious = adversarial["oblivious (crafted on the bare victim)"]
plot_purification(victim, irad, x[:3], x_oblivious[:3], y[:3], CLASSES,
                  title="IRAD (shipped weights); PGD-20 Linf 8/255 on the bare victim")

# %%
# Where SampleNet samples
# -----------------------
# SampleNet predicts, for every output pixel, a shift (in pixels) of the coordinate at which the implicit
# representation is queried. Beside it, the naive samplers of the paper's Table 8 with the same
# magnitude: one fixed shift (invariant) and a random shift per pixel (variant). Arrows go from each output
# pixel to the point it reads, to scale.
plot_shift_fields(x[0], irad_shift_fields(irad, x[0], magnitude=1.5, seed=0),
                  title="IRAD's sampling shifts on test image 0")

# %%
# Accuracy against eps, from the recorded results
# -----------------------------------------------
# Not computed here: read from ``docs/results/irad_oblivious.json`` and ``irad_adaptive.json`` (AutoAttack,
# 500 test images). Only eps = 8/255 was recorded, so each line joins SA (at eps 0) to that one RA (dotted).
# The recorded tables are in the repository's docs/results/; sphinx-gallery runs an example in its own folder
# and without __file__.
HERE = Path(__file__).parent if "__file__" in globals() else Path.cwd()
RESULTS = HERE.resolve().parent / "docs" / "results"
table = read_result_tables([RESULTS / "irad_oblivious.json", RESULTS / "irad_adaptive.json"])
plot_accuracy_vs_eps(table, defences=["none", "irad"], title="IRAD, AutoAttack, 500 test images (recorded)")
plt.show()
