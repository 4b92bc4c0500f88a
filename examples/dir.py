"""
DIR: complementary masks and a masked-ViT restorer
==================================================

DIR with the shipped CIFAR-10 weights (:class:`~art_purifiers.DIRPreprocessor`, trained for the bundled ResNet-20)
on the bundled CIFAR-10 sample. DIR draws fresh random masks at every call, so it is a random defence: its accuracy
is shown for three deployment seeds, and the attack that goes through it averages its gradients over mask draws
(EOT, ``deploy(victim, eot=k)``). Beside it, the same PGD with single-draw gradients. Then the same for the PGD
adversarially trained ResNet-20 that ships beside the bundled one, with the DIR weights trained for it.

With no arguments it uses 8 images and 4 draws, so that it runs in well under a minute on one CPU core (the
documentation's gallery runs it so): the printed accuracies are a demonstration on 8 images. ``python examples/dir.py
--n 100 --draws 8`` takes a few minutes. The figures of record (500 test images, 8 draws) are on the Results page.
"""

# %%
# Setup: victim, images, the defence
# ----------------------------------
import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from art.attacks.evasion import ProjectedGradientDescent

from art_purifiers import DIRPreprocessor
from art_purifiers.data import CLASSES, load_sample
from art_purifiers.evaluation import accuracy, art_classifier
from art_purifiers.evaluation.plots import plot_purification, plot_results_summary, read_result_tables
from art_purifiers.models import load_victim

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--n", type=int, default=8, help="images of the bundled sample (at most 200)")
parser.add_argument("--draws", type=int, default=4, help="mask draws averaged by the EOT attack")
args = parser.parse_args()

x, y = load_sample(args.n)
victim = load_victim("resnet20")
bare = art_classifier(victim, device="cpu")
deployed = {seed: DIRPreprocessor(seed=seed, device_type="cpu").deploy(victim).classifier(device="cpu")
            for seed in (0, 1, 2)}
print(f"clean accuracy on {args.n} images: victim {accuracy(bare, x, y):.1f}%, DIR with deployment seeds 0/1/2 "
      + "/".join(f"{accuracy(c, x, y):.1f}" for c in deployed.values()) + "%")

# %%
# PGD-20 through DIR: single draws and EOT
# ----------------------------------------
# The attacker does not know the deployment's masks: it draws its own (``seed=None``). With single draws every
# gradient belongs to one random pair of views; EOT averages the logits of ``--draws`` draws, so the gradient is
# that of the defence's expected output.
pgd = {"eps": 8 / 255, "eps_step": 2 / 255, "max_iter": 20, "verbose": False}
attacker = DIRPreprocessor(device_type="cpu")
single = attacker.deploy(victim).classifier(device="cpu")
eot = attacker.deploy(victim, eot=args.draws).classifier(device="cpu")
for name, classifier in (("single-draw gradients", single), (f"EOT over {args.draws} draws", eot)):
    np.random.seed(0)  # noqa: NPY002 (ART's random start uses numpy's global generator)
    x_adv = ProjectedGradientDescent(classifier, **pgd).generate(x, y=y)
    print(f"PGD-20 Linf 8/255, {name}: DIR (seeds 0/1/2) "
          + "/".join(f"{accuracy(c, x_adv, y):.1f}" for c in deployed.values()) + "%")

# %%
# The PGD-AT target
# -----------------
# The paper's main setting: DIR trained for an adversarially trained classifier (``dir_cifar10_at`` for the shipped
# ``resnet20-at``), beside that classifier alone under the same PGD-20.
robust = load_victim("resnet20-at")
robust_alone = art_classifier(robust, device="cpu")
dir_at = DIRPreprocessor("cifar10_at", seed=0, device_type="cpu").deploy(robust).classifier(device="cpu")
np.random.seed(0)  # noqa: NPY002
x_at_alone = ProjectedGradientDescent(robust_alone, **pgd).generate(x, y=y)
np.random.seed(0)  # noqa: NPY002
eot_at = DIRPreprocessor("cifar10_at", device_type="cpu").deploy(robust, eot=args.draws).classifier(device="cpu")
x_at_eot = ProjectedGradientDescent(eot_at, **pgd).generate(x, y=y)
print(f"PGD-AT ResNet-20 alone: clean {accuracy(robust_alone, x, y):.1f}%, "
      f"PGD-20 {accuracy(robust_alone, x_at_alone, y):.1f}%; with DIR (seed 0): clean {accuracy(dir_at, x, y):.1f}%, "
      f"EOT PGD-20 {accuracy(dir_at, x_at_eot, y):.1f}%")

# %%
# What DIR does to the images
# ---------------------------
# Clean and EOT-PGD images before and after DIR (deployment seed 0), with the victim's label and confidence under
# each; the last two columns: the perturbation, and what is left of it after DIR, amplified by the same factor.
plot_purification(victim, DIRPreprocessor(seed=0, device_type="cpu"), x[:3], x_adv[:3], y[:3], CLASSES,
                  title=f"DIR (shipped weights); PGD-20 Linf 8/255 through DIR, EOT over {args.draws} draws")

# %%
# The recorded results
# --------------------
# Not computed here: read from ``docs/results/dir_natural_main.json`` (500 test images, mean over the three
# deployment seeds), when it has been recorded.
HERE = Path(__file__).parent if "__file__" in globals() else Path.cwd()
RESULTS = HERE.resolve().parent / "docs" / "results"
if (RESULTS / "dir_natural_main.json").is_file():
    table = read_result_tables([RESULTS / "dir_natural_main.json"])
    plot_results_summary(table, title="DIR on the bundled ResNet-20, PGD-20 Linf 8/255, 500 test images (recorded)")
plt.show()
