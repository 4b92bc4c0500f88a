"""
IDFR: input denoiser and feature restorer
=========================================

IDFR with the shipped CIFAR-10 weights (:class:`~art_purifiers.IDFRDefence`) on the bundled ResNet-20 and
CIFAR-10 sample: the input denoiser alone, then with the feature restorer between the victim's encoder and head,
under PGD-20 (L-inf 8/255) crafted on the bare victim (oblivious, the paper's white-box setting) and through the
whole defended model with exact gradients (adaptive, which the paper never ran).

With no arguments it uses 8 images, so that it runs in well under a minute on one CPU core (the documentation's
gallery runs it so): the printed accuracies are a demonstration on 8 images. ``python examples/idfr.py --n 100``
takes a few minutes. The figures of record (500 test images) are on the Results page.
"""

# %%
# Setup: victim, images, the two deployments
# ------------------------------------------
# The denoiser is a purifier (a preprocessing defence); the restorer changes the model, so the whole defence is
# deployed with ``deploy(victim)``, which returns the model and the preprocessing defences that ART is given.
import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from art.attacks.evasion import ProjectedGradientDescent

from art_purifiers import IDFRDefence
from art_purifiers.data import CLASSES, load_sample
from art_purifiers.evaluation import accuracy, art_classifier
from art_purifiers.evaluation.plots import plot_accuracy_vs_eps, plot_purification, read_result_tables
from art_purifiers.models import load_victim

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--n", type=int, default=8, help="images of the bundled sample (at most 200)")
args = parser.parse_args()

x, y = load_sample(args.n)
victim = load_victim("resnet20")
bare = art_classifier(victim, device="cpu")
denoiser_only = IDFRDefence(restorer=False, device_type="cpu").deploy(victim).classifier(device="cpu")
idfr = IDFRDefence(device_type="cpu")
full = idfr.deploy(victim).classifier(device="cpu")
print(f"clean accuracy on {args.n} images: victim {accuracy(bare, x, y):.1f}%, "
      f"denoiser {accuracy(denoiser_only, x, y):.1f}%, denoiser + restorer {accuracy(full, x, y):.1f}%")

# %%
# PGD-20, oblivious and adaptive
# ------------------------------
pgd = {"eps": 8 / 255, "eps_step": 2 / 255, "max_iter": 20, "verbose": False}
np.random.seed(0)  # noqa: NPY002 (ART's random start uses numpy's global generator)
x_oblivious = ProjectedGradientDescent(bare, **pgd).generate(x, y=y)
x_adaptive = ProjectedGradientDescent(full, **pgd).generate(x, y=y)
for name, classifier in (("denoiser", denoiser_only), ("denoiser + restorer", full)):
    print(f"PGD-20 Linf 8/255, oblivious (crafted on the bare victim), {name}: "
          f"{accuracy(classifier, x_oblivious, y):.1f}%")
print(f"PGD-20 Linf 8/255, adaptive (exact gradient through IDFR): {accuracy(full, x_adaptive, y):.1f}%")

# %%
# What the denoiser does to the images
# ------------------------------------
# Clean and oblivious adversarial images before and after the denoiser, with the bare victim's label and
# confidence under each (the restorer acts on the embedding, not on the image). The last two columns: the
# perturbation, and what is left of it after the denoiser, amplified by the same factor.
plot_purification(victim, idfr.defences[0], x[:3], x_oblivious[:3], y[:3], CLASSES,
                  title="IDFR's input denoiser (shipped weights); PGD-20 Linf 8/255 on the bare victim")

# %%
# Accuracy against eps, from the recorded results
# -----------------------------------------------
# Not computed here: read from ``docs/results/idfr_table4.json`` (BIM-20 crafted on the bare victim at 4, 8 and
# 16/255, 500 test images), when it has been recorded.
HERE = Path(__file__).parent if "__file__" in globals() else Path.cwd()
RESULTS = HERE.resolve().parent / "docs" / "results"
if (RESULTS / "idfr_table4.json").is_file():
    table = read_result_tables([RESULTS / "idfr_table4.json"])
    plot_accuracy_vs_eps(table, defences=["none", "idfr", "idfr:restorer=False"],
                         title="IDFR, examples crafted on the bare ResNet-20, 500 test images (recorded)")
plt.show()
