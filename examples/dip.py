"""
DIP: reading the victim along a deep-image-prior trace
======================================================

The decision-space DIP defence (:class:`~art_purifiers.DIPPreprocessor`) on the bundled ResNet-20 and
CIFAR-10 sample, under PGD-20 (L-inf 8/255) crafted on the victim (oblivious); with ``--dipdefend`` also
DIPDefend, with ``--eot-draws`` also BPDA+EOT PGD crafted through the DIP defence.

Each image costs one DIP fit per prediction (seconds of CPU per image and hundred iterations), so with no
arguments this example is short: 4 images, and a DIP fit of **400 iterations** instead of the defence's
1500 (warm-up scaled to 187 from 700, 53 snapshots), which runs in well under a minute on one CPU core
(the documentation's gallery runs it so). Its accuracies are a demonstration of a shortened defence on 4
images, not the defence's figures:

    python examples/dip.py --iterations 1500 --n 16             # the defence's default fit
    python examples/dip.py --iterations 1500 --dipdefend        # adds DIPDefend at its defaults
    python examples/dip.py --iterations 1500 --eot-draws 4      # adds BPDA+EOT (steps x draws fits per image)

The figures of record are on the Results page.
"""

# %%
# Setup: victim, images, a shortened DIP defence
# ----------------------------------------------
import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from art.attacks.evasion import ProjectedGradientDescent

from art_purifiers import DIPDefendPreprocessor, DIPPreprocessor
from art_purifiers.data import CLASSES, load_sample
from art_purifiers.evaluation import EOTClassifier, accuracy, art_classifier
from art_purifiers.evaluation.plots import (
    dip_traces,
    plot_accuracy_vs_eps,
    plot_dip_trace,
    plot_purification,
    read_result_tables,
)
from art_purifiers.models import load_victim

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--n", type=int, default=4, help="images of the bundled sample")
parser.add_argument("--iterations", type=int, default=400, help="DIP iterations (the defence's default: 1500)")
parser.add_argument("--dipdefend", action="store_true", help="also evaluate DIPDefend (4000 iterations)")
parser.add_argument("--eot-draws", type=int, default=0, help="add BPDA+EOT PGD with this many draws")
parser.add_argument("--eot-steps", type=int, default=10)
args = parser.parse_args()

x, y = load_sample(args.n)
victim = load_victim("resnet20")
bare = art_classifier(victim, device="cpu")
# The defence's defaults, shortened: warm-up and snapshots keep their proportion to the iterations
# (700 of 1500 and 200 snapshots at the defaults). A seed fixes the DIP networks and noise.
settings = {"iterations": args.iterations, "warmup": round(args.iterations * 700 / 1500),
            "snapshots": min(200, max(2, round(args.iterations * 200 / 1500)))}
dip = DIPPreprocessor(victim, seed=0, **settings)
defences = {f"DIP defence ({args.iterations} iterations)": dip}
if args.dipdefend:
    defences["DIPDefend"] = DIPDefendPreprocessor(seed=0)
defended = {name: art_classifier(victim, [defence], device="cpu") for name, defence in defences.items()}

# %%
# Oblivious PGD-20
# ----------------
np.random.seed(0)  # noqa: NPY002 (ART's random start uses numpy's global generator)
x_adv = ProjectedGradientDescent(bare, eps=8 / 255, eps_step=2 / 255, max_iter=20, verbose=False).generate(x, y=y)
print(f"victim on {args.n} images: clean {accuracy(bare, x, y):.1f}%, "
      f"PGD-20 Linf 8/255 {accuracy(bare, x_adv, y):.1f}%")
for name, classifier in defended.items():
    print(f"{name}: clean {accuracy(classifier, x, y):.1f}%, "
          f"PGD-20 Linf 8/255 oblivious (crafted on the bare victim) {accuracy(classifier, x_adv, y):.1f}%")

if args.eot_draws:
    # BPDA+EOT: the attacker's model averages the victim's logits over fresh draws of the defence (seed None)
    # and passes gradients through it as the identity (the DIP defences are not differentiable).
    eot = art_classifier(EOTClassifier(victim, DIPPreprocessor(victim, **settings), draws=args.eot_draws),
                         device="cpu")
    x_eot = ProjectedGradientDescent(eot, eps=8 / 255, eps_step=2 / 255, max_iter=args.eot_steps,
                                     verbose=False).generate(x, y=y)
    print(f"DIP defence: PGD-{args.eot_steps} Linf 8/255 BPDA+EOT ({args.eot_draws} draws) "
          f"{accuracy(defended[next(iter(defended))], x_eot, y):.1f}%")

# %%
# The trace of one image, clean and adversarial
# ---------------------------------------------
# One DIP fit per image (same network and noise for both): PSNR of each snapshot to its input, and the
# victim's label of each snapshot. The defence looks for adjacent snapshots with different labels after the
# warm-up (shaded), both close enough to the input (SSIM), and keeps the last few (stars); without any, it
# keeps the last snapshots. A short fit (see above) may stop before an adversarial trace has fitted its
# perturbation, i.e. before the crossings the defence uses.
traces = dip_traces(dip, {"clean": x[0], "adversarial (oblivious PGD-20)": x_adv[0]}, seed=0)
plot_dip_trace(traces, CLASSES, title=f"DIP trace of test image 0, {args.iterations} iterations")

# %%
# What the shortened defence does to the images
# ---------------------------------------------
plot_purification(victim, dip, x[:2], x_adv[:2], y[:2], CLASSES,
                  title=f"DIP defence, {args.iterations} iterations; PGD-20 Linf 8/255 on the bare victim")

# %%
# Accuracy against eps, from the recorded results
# -----------------------------------------------
# Not computed here: read from ``docs/results/dip_default_pgd.json`` (oblivious PGD-20 at 2, 4 and 8/255,
# test images 0..99, the defence's defaults) and ``dipdefault_eot.json`` (BPDA+EOT PGD-20 at 8/255, test
# images 0..3 only: one image is 25 points).
# The recorded tables are in the repository's docs/results/; sphinx-gallery runs an example in its own folder
# and without __file__.
HERE = Path(__file__).parent if "__file__" in globals() else Path.cwd()
RESULTS = HERE.resolve().parent / "docs" / "results"
table = read_result_tables([RESULTS / "dip_default_pgd.json", RESULTS / "dipdefault_eot.json"])
plot_accuracy_vs_eps(table, title="DIP defence (defaults), PGD-20 (recorded; n = 100, EOT n = 4)")
plt.show()
