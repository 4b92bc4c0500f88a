"""Why DIR's stage 2 collapses through the natural ResNet-20 and not through the PGD-AT one: a probe.

From a stage-1 (MSE) checkpoint, train the denoiser on one term of stage 2 alone for a few steps (batches of 32
training images, the held-out 300 of the last 500 training images checked every 25 steps with fixed masks) and
print the loss, the gradient norm and the held-out clean accuracy through denoiser and target. The figures on
the Results page came from::

    python studies/dir_stage2_probe.py --term clean --lr 3e-5 --steps 50
    python studies/dir_stage2_probe.py --term adversarial --lr 3e-5 --steps 75
    python studies/dir_stage2_probe.py --term adversarial --lr 3e-5 --steps 75 --target resnet20-at
    python studies/dir_stage2_probe.py --term adversarial --lr 1e-4 --steps 100 --target resnet20-at

with ``--checkpoint runs/dir-nat/stage1.pt`` (the natural target's stage 1), ``--data-root DIR`` (the CIFAR-10
python-layout folder; default ``$ART_PURIFIERS_CIFAR10``) and one CPU thread.
"""

import argparse

import torch
import torch.nn.functional as F

from art_purifiers.data import load_cifar10
from art_purifiers.data.cifar10 import resolve_cifar10_root
from art_purifiers.models import load_victim
from art_purifiers.nn.masked_vit import MaskedViTDenoiser
from art_purifiers.training.dir import PRESETS, Restorer
from art_purifiers.training.loops import pgd_linf

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--term", choices=("clean", "adversarial"), required=True)
parser.add_argument("--lr", type=float, required=True, help="AdamW learning rate")
parser.add_argument("--steps", type=int, required=True)
parser.add_argument("--target", default="resnet20")
parser.add_argument("--checkpoint", default="runs/dir-nat/stage1.pt")
parser.add_argument("--data-root", default=None, help="CIFAR-10 folder (default: $ART_PURIFIERS_CIFAR10)")
args = parser.parse_args()

torch.manual_seed(0)
x, y = load_cifar10(resolve_cifar10_root(args.data_root), split="train")
x, y = torch.from_numpy(x), torch.from_numpy(y).long()
held_x, held_y, train = x[-300:], y[-300:], len(x) - 500
denoiser = MaskedViTDenoiser(**PRESETS["cpu"].architecture())
denoiser.load_state_dict(torch.load(args.checkpoint, weights_only=True)["modules"]["denoiser"])
restorer, target = Restorer(denoiser, 2, 0.5), load_victim(args.target).eval().requires_grad_(False)
optimizer = torch.optim.AdamW(denoiser.parameters(), lr=args.lr, weight_decay=0.05)


def held_out_accuracy() -> float:
    restorer.generator.manual_seed(0)
    with torch.no_grad():
        return 100 * float((target(restorer(held_x)).argmax(1) == held_y).float().mean())


print(f"start: held-out clean accuracy {held_out_accuracy():.1f} %", flush=True)
generator = torch.Generator().manual_seed(0)
for step in range(1, args.steps + 1):
    idx = torch.randint(0, train, (32,), generator=generator)
    images, labels = x[idx], y[idx]
    if args.term == "adversarial":
        restorer.eval()
        images = pgd_linf(torch.nn.Sequential(restorer, target), images, labels, 8 / 255, 2 / 255, 3, generator)
        restorer.train()
    loss = F.cross_entropy(target(restorer(images)), labels)
    optimizer.zero_grad()
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(denoiser.parameters(), float("inf"))
    optimizer.step()
    if step % 25 == 0:
        print(f"step {step}: loss {loss.item():.3f}, gradient norm {float(norm):.1f}, held-out clean accuracy "
              f"{held_out_accuracy():.1f} %", flush=True)
