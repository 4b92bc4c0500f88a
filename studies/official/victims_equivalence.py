"""Do our victims compute what the authors' victims compute?

RobustBench's Standard WideResNet-28-10 (the class in ``robustbench/model_zoo/architectures/wide_resnet.py`` of a
checkout of tsingqguo/irad, which vendors RobustBench) and the CIFAR ResNet-18 of DIR's authors (``model.py`` of a
checkout of chenyyyykun/DIR) are built from the authors' own classes and given random weights (batch-norm affine
parameters and running statistics included, so that no layer is the identity). Their state dicts are saved as the
authors save them (RobustBench: ``{"state_dict": DataParallel state dict}``; DIR: the DataParallel state dict),
converted with our ``convert-victim`` code and loaded with ``load_victim``; the script reports the largest absolute
difference between the authors' logits and ours on CIFAR-10 test images ``0..n-1``.

Only the two files above are imported (by path, so the authors' packages' ``__init__`` never runs); nothing is
downloaded. Usage::

    PYTHONPATH=. python studies/official/victims_equivalence.py --irad-code IRAD_CHECKOUT --dir-code DIR_CHECKOUT \\
        --data-root CIFAR10_ROOT --n 100 --output victims_equivalence.json

Exit status 1 when a difference exceeds ``--tolerance`` (default 1e-4).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from art_purifiers.data import load_test_images
from art_purifiers.models import load_victim
from art_purifiers.training.victim import convert_reference_checkpoint
from art_purifiers.weights import read_metadata, sha256_of

WRN_FILE = Path("robustbench") / "model_zoo" / "architectures" / "wide_resnet.py"
DIR_FILE = Path("model.py")


def import_file(path: Path, name: str):
    """The module of one Python file, imported by path (no package ``__init__`` runs)."""
    if not path.is_file():
        raise SystemExit(f"No {path}: give the folder of a checkout of the authors' repository.")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def randomise(model: nn.Module, seed: int, x: torch.Tensor) -> nn.Module:
    """Random weights: the authors' initialisation for convolutions (drawn under the global seed), random
    batch-norm scales and shifts, a random classifier, and batch-norm running statistics measured on ``x`` (so that
    every layer sees normalised activations and the logits vary from image to image)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(0.5 + torch.rand(module.num_features, generator=generator))
                module.bias.copy_(0.2 * torch.randn(module.num_features, generator=generator))
                module.reset_running_stats()
                module.momentum = None  # a cumulative average: one pass gives the statistics of x
            elif isinstance(module, nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) / module.in_features**0.5)
                if module.bias is not None:
                    module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
        model.train()(x)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1  # as constructed, so the saved model is the authors' own
    return model.eval()


def logits(model: nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)])


def compare(name: str, authors: nn.Module, wrap_state: bool, code_file: Path, x: torch.Tensor, batch: int,
            folder: Path) -> dict:
    """Save the authors' model in their layout, convert it, and compare logits."""
    state = nn.DataParallel(authors).state_dict()  # keys "module.*", as a DataParallel training script saves them
    source = folder / f"{name}.pt"
    torch.save({"state_dict": state} if wrap_state else state, source)
    converted = folder / f"{name}.safetensors"
    start = time.perf_counter()
    convert_reference_checkpoint(source, converted)
    theirs = logits(authors, x, batch)
    ours = logits(load_victim(converted), x, batch)
    raw = logits(load_victim(source), x, batch)  # the published checkpoint read directly
    difference = (ours - theirs).abs()
    metadata = read_metadata(converted)
    return {
        "authors_file": str(code_file.name), "authors_file_sha256": sha256_of(code_file),
        "published_layout": "{'state_dict': {'module.' + key: tensor}}" if wrap_state else "{'module.' + key: tensor}",
        "published_tensors": len(state), "network": metadata["networks"][""],
        "normalization": metadata["normalization"],
        "max_abs_logit_difference": float(difference.max()),
        "mean_abs_logit_difference": float(difference.mean()),
        "max_abs_logit": float(theirs.abs().max()),
        "logit_std_over_images": float(theirs.std(0).mean()),
        "same_predictions": int((ours.argmax(1) == theirs.argmax(1)).sum()),
        "distinct_predicted_classes": int(theirs.argmax(1).unique().numel()),
        "raw_checkpoint_equals_converted": bool(torch.equal(raw, ours)),
        "seconds": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--irad-code", required=True, type=Path, help="checkout of tsingqguo/irad")
    parser.add_argument("--dir-code", required=True, type=Path, help="checkout of chenyyyykun/DIR")
    parser.add_argument("--data-root", default=os.environ.get("ART_PURIFIERS_CIFAR10"),
                        help="CIFAR-10 python-layout folder (default: $ART_PURIFIERS_CIFAR10, else the bundled "
                        "sample of test images 0..199)")
    parser.add_argument("--n", type=int, default=100, help="test images 0..n-1 (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest accepted |logit difference|")
    parser.add_argument("--output", type=Path, default=None, help="JSON report")
    args = parser.parse_args(argv)

    images, _ = load_test_images(args.data_root, args.n)
    x = torch.from_numpy(images)
    wrn_file, dir_file = args.irad_code / WRN_FILE, args.dir_code / DIR_FILE
    robustbench = import_file(wrn_file, "authors_robustbench_wide_resnet")
    dir_model = import_file(dir_file, "authors_dir_model")
    torch.manual_seed(args.seed)  # the authors' constructors draw their initial weights from the global generator
    victims = {}
    with tempfile.TemporaryDirectory() as folder:
        wrn = randomise(robustbench.WideResNet(depth=28, widen_factor=10), args.seed, x)
        victims["robustbench_standard_wrn_28_10"] = compare("robustbench_standard_wrn_28_10", wrn, True, wrn_file, x,
                                                            args.batch, Path(folder))
        victims["dir_resnet18"] = compare("dir_resnet18", randomise(dir_model.ResNet18(), args.seed + 1, x), False,
                                          dir_file, x, args.batch, Path(folder))
    worst = max(v["max_abs_logit_difference"] for v in victims.values())
    report = {
        "check": "max |logit difference| between the authors' victims and ours, same random weights",
        "images": f"CIFAR-10 test images 0..{len(x) - 1}",
        "data": str(args.data_root) if args.data_root else "bundled sample",
        "seed": args.seed, "tolerance": args.tolerance, "passed": worst <= args.tolerance,
        "victims": victims,
        "environment": {"torch": torch.__version__, "python": platform.python_version(), "device": "cpu",
                        "dtype": "float32", "threads": torch.get_num_threads()},
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n", encoding="utf-8")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
