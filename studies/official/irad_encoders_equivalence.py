"""Do our encoders compute what the IRAD authors' LIIF encoders compute? A check against their code.

Loads the authors' ``models/edsr.py``, ``models/rdn.py`` and ``models/rcan.py`` from a checkout of tsingqguo/irad
(each file alone, with a stub ``models`` package that provides their ``register``; nothing else of theirs is imported),
builds each encoder with ``no_upsampling=True`` and their randomly initialised weights, renames its state dict with
:mod:`art_purifiers.weights.official`, loads it strictly into the network that :func:`encoder_spec` names, and compares
the features of CIFAR-10 test images (the bundled sample) and uniform-noise images, 32x32. Run as::

    mkdir -p /tmp/authors/irad && git -C IRAD_CLONE archive HEAD models utils.py | tar -x -C /tmp/authors/irad
    python studies/official/irad_encoders_equivalence.py --irad-code /tmp/authors/irad

It writes ``docs/results/official/irad_encoders_equivalence.json`` and fails (exit 1) if a difference exceeds
``--tolerance``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
import types
from pathlib import Path

import torch

from art_purifiers.data import load_test_images
from art_purifiers.nn.registry import create_network
from art_purifiers.weights.official import encoder_key_rules, encoder_spec, map_keys

#: ``(label, the authors' encoder spec)`` of each case; LIIF defaults, and an RDN whose kernel size and config differ.
CASES = (
    ("edsr-baseline", {"name": "edsr-baseline", "args": {"no_upsampling": True}}),
    ("edsr", {"name": "edsr", "args": {"no_upsampling": True}}),
    ("rdn", {"name": "rdn", "args": {"no_upsampling": True}}),
    ("rdn-A-k5-G0-32", {"name": "rdn", "args": {"G0": 32, "RDNkSize": 5, "RDNconfig": "A", "no_upsampling": True}}),
    ("rcan", {"name": "rcan", "args": {"no_upsampling": True}}),
)
_FILES = ("edsr.py", "rdn.py", "rcan.py")


def load_authors_registry(code: Path) -> tuple[dict, dict]:
    """The authors' encoder factories ``{name: factory}`` and the sha256 of each file read."""
    factories: dict = {}

    def register(name):
        def decorator(factory):
            factories[name] = factory
            return factory
        return decorator

    stub = types.ModuleType("models")
    stub.register = register
    saved = sys.modules.get("models")
    sys.modules["models"] = stub
    digests = {}
    try:
        for file in _FILES:
            path = code / "models" / file
            digests[f"models/{file}"] = hashlib.sha256(path.read_bytes()).hexdigest()
            spec = importlib.util.spec_from_file_location(f"irad_authors_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
    finally:
        if saved is None:
            sys.modules.pop("models", None)
        else:
            sys.modules["models"] = saved
    return factories, digests


def compare(factories: dict, authors_spec: dict, images: torch.Tensor) -> dict:
    """Features of the authors' encoder and of ours (their weights) on ``images``, compared."""
    theirs = factories[authors_spec["name"]](**authors_spec["args"]).eval()
    spec = encoder_spec(authors_spec)
    ours = create_network(spec).eval()
    rules, dropped = encoder_key_rules(authors_spec["name"])
    tensors, dropped_keys = map_keys(theirs.state_dict(), rules, dropped)
    ours.load_state_dict(tensors, strict=True)
    with torch.no_grad():
        expected = theirs(images)
        actual = ours(images)
    difference = (expected - actual).abs()
    return {
        "authors_spec": authors_spec,
        "our_spec": spec,
        "out_dim": [int(theirs.out_dim), int(ours.out_dim)],
        "parameters": int(sum(p.numel() for p in ours.parameters())),
        "tensors_loaded": len(tensors),
        "dropped_keys": dropped_keys,
        "max_abs_difference": float(difference.max()),
        "mean_abs_difference": float(difference.mean()),
        "max_abs_feature": float(expected.abs().max()),
        "max_relative_difference": float(difference.max() / expected.abs().max()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--irad-code", type=Path, required=True, help="checkout of tsingqguo/irad")
    parser.add_argument("--images", type=int, default=4, help="CIFAR-10 test images (and as many noise images)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest accepted max abs difference")
    parser.add_argument("--output", type=Path, default=Path("docs/results/official/irad_encoders_equivalence.json"))
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    factories, digests = load_authors_registry(args.irad_code)
    cifar, _ = load_test_images(None, args.images)
    images = torch.cat([torch.from_numpy(cifar), torch.rand(args.images, 3, 32, 32)])
    results = {}
    for label, authors_spec in CASES:
        results[label] = compare(factories, authors_spec, images)
        row = results[label]
        print(f"{label:16s} max |diff| {row['max_abs_difference']:.3e}  mean {row['mean_abs_difference']:.3e}  "
              f"max |feature| {row['max_abs_feature']:.3e}  ({row['parameters']} parameters)", flush=True)
    worst = max(row["max_abs_difference"] for row in results.values())
    report = {
        "what": "max abs difference between the features of the authors' LIIF encoders (no_upsampling=True, their "
                "random initialisation) and of ours loaded with their renamed weights",
        "images": f"CIFAR-10 test images 0..{args.images - 1} (bundled sample) and {args.images} uniform-noise "
                  "images, 32x32, float32, CPU",
        "seed": args.seed,
        "torch": torch.__version__,
        "authors_files_sha256": digests,
        "tolerance": args.tolerance,
        "worst_max_abs_difference": worst,
        "passed": worst <= args.tolerance,
        "cases": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"worst {worst:.3e} (tolerance {args.tolerance:g}); wrote {args.output}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
