"""Command line: ``art-purifiers evaluate`` and ``art-purifiers convert-victim``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

DEFAULT_CACHE = Path.home() / ".cache" / "art-purifiers" / "adversarial"


def _evaluate_parser(sub) -> None:
    from art_purifiers.evaluation import ATTACKS, THREATS

    p = sub.add_parser(
        "evaluate",
        help="evaluate defences under threat models and print one table",
        description="Evaluate defences on CIFAR-10 test images. Without arguments: the bundled sample "
        "(test images 0..199), the bundled ResNet-20 and the bilinear resampling defence (d=1.5).",
    )
    p.add_argument("--defence", action="append", metavar="SPEC",
                   help="defence spec NAME[:key=value,...], repeatable (default: resampling)")
    p.add_argument("--victim", default="resnet20", help="'resnet20' (bundled) or a CIFAR ResNet checkpoint path")
    p.add_argument("--data-root", default=None, help="CIFAR-10 python-layout folder (default: bundled sample)")
    p.add_argument("--n", type=int, default=None, help="evaluate test images 0..n-1 (default: all available)")
    p.add_argument("--threat", nargs="+", default=["clean", "oblivious"], choices=THREATS, help="threat models")
    p.add_argument("--attack", default="autoattack", choices=ATTACKS)
    p.add_argument("--norm", default="inf", choices=["inf", "2"])
    p.add_argument("--eps", default="8/255", help="budget, e.g. 8/255 or 0.5")
    p.add_argument("--steps", type=int, default=100, help="iterations of iterative attacks")
    p.add_argument("--step-size", default=None, help="PGD/BIM step (default eps/4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="adversarial-example cache folder")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    p.add_argument("--format", default="text", choices=["text", "markdown", "json", "csv"])
    p.add_argument("--output", default=None, help="also write the table to this file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run_evaluate(args: argparse.Namespace) -> int:
    import torch

    from art_purifiers.data import load_test_images
    from art_purifiers.defences import make_defence
    from art_purifiers.evaluation import AttackSpec, evaluate, parse_eps
    from art_purifiers.models import load_victim

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    device_type = "cpu" if device == "cpu" else "gpu"
    specs = args.defence or ["resampling"]
    defences = {spec: make_defence(spec, device_type=device_type) for spec in specs}
    x, y = load_test_images(args.data_root, args.n)
    attack = AttackSpec(
        name=args.attack, norm=args.norm, eps=parse_eps(args.eps), steps=args.steps,
        step_size=None if args.step_size is None else parse_eps(args.step_size),
    )
    victim = load_victim(args.victim).to(device)
    table = evaluate(
        victim, defences, x, y, threats=tuple(args.threat), attack=attack, seed=args.seed,
        batch_size=args.batch_size, device=device, cache_dir=None if args.no_cache else args.cache_dir,
        victim_name=str(args.victim), verbose=not args.quiet,
    )
    table.meta["data"] = args.data_root or "bundled sample (CIFAR-10 test images 0..199)"
    table.meta["command"] = "art-purifiers " + " ".join(sys.argv[1:])
    text = table.render(args.format)
    print(text)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    return 0


def run_convert_victim(args: argparse.Namespace) -> int:
    from art_purifiers.training.victim import convert_reference_checkpoint

    print(convert_reference_checkpoint(args.source, args.destination))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="art-purifiers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _evaluate_parser(sub)
    convert = sub.add_parser("convert-victim", help="convert a reference CIFAR ResNet .th checkpoint to safetensors")
    convert.add_argument("source")
    convert.add_argument("destination")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "quiet", True) is False else logging.WARNING)
    return {"evaluate": run_evaluate, "convert-victim": run_convert_victim}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
