"""Sensitivity of the DIP defence to its settings, on CIFAR-10 *training* images, to choose the defaults without
touching the test images: DIP iterations x network size (the paper's Table 3), and with ``--vary`` the
reconstruction's parameters one at a time (the group of the paper's Fig. 6).

    python benchmarks/dip_sensitivity.py --data-root DIR --n 32 --traces runs/dip-traces \
        --input-jitter 0 --set warmup=100 step=0.5 --json docs/results/dip_sensitivity.json
    python benchmarks/dip_sensitivity.py --data-root DIR --n 128 --seeds 0 1 \
        --traces runs/dip-traces --at small:1500 --vary warmup=600,700,800 step=0.25,0.5,0.75 keep=5,10 --product \
        --json runs/jitter_warmup_step_keep.json

``--set`` gives every setting other values than the defence's defaults (the first command: the settings of the
first study, whose iteration counts lie below the current warm-up), ``--product`` varies the listed parameters
jointly (every combination) instead of one at a time, and ``--seeds`` repeats the study with other draws (PGD
random starts and DIP seeds), reporting the mean over seeds with each seed's figures in the JSON file.

For every network, one DIP trace per image is fitted to the largest iteration count and every setting is
reconstructed from it (:meth:`~art_purifiers.defences.dip.DIPPreprocessor.reconstruct`; the fit does not depend on
its length, so this equals running each setting alone); ``--traces`` keeps the fitted traces for later runs.
Each cell is the defence's accuracy on the clean images (SA) and on oblivious PGD adversarial examples crafted on
the undefended victim (RA), and their mean (the paper's Table 3 reports an average over attacks). Table 3 results
are saved after every network, and a rerun with the same settings skips the networks already in the JSON file.
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from art_purifiers.data.cifar10 import load_cifar10
from art_purifiers.defences.dip import DIPPreprocessor, TraceDecisions
from art_purifiers.evaluation.attacks import AttackSpec, parse_eps
from art_purifiers.evaluation.benchmark import machine
from art_purifiers.evaluation.runner import art_classifier
from art_purifiers.models import load_victim


def predict(victim: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([victim(chunk).argmax(1) for chunk in torch.split(images, 256)]).numpy()


def fit_traces(defence: DIPPreprocessor, wanted: np.ndarray, inputs: torch.Tensor, seed: int, chunk: int,
               cache: Path | None) -> tuple[torch.Tensor, float]:
    """``defence``'s trace images ``(len(wanted), len(inputs), C, H, W)`` of every input at the iterations ``wanted``,
    and the seconds the fit took; with ``cache``, read from there when it holds them all and saved there
    otherwise."""
    if cache is not None and cache.is_file():
        saved = torch.load(cache, weights_only=True)
        have = saved["iterations"].numpy()
        if np.isin(wanted, have).all() and torch.equal(saved["inputs"], inputs):
            return saved["snaps"][torch.from_numpy(np.isin(have, wanted))], float(saved["seconds"])
    generator = torch.Generator().manual_seed(seed)
    seeds = torch.randint(0, 2**62, (len(inputs),), generator=generator).tolist()
    start = time.perf_counter()
    snaps = torch.cat([defence.trace(inputs[lo : lo + chunk], seeds[lo : lo + chunk], wanted)
                       for lo in range(0, len(inputs), chunk)], dim=1)
    seconds = time.perf_counter() - start
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"iterations": torch.from_numpy(wanted), "inputs": inputs, "snaps": snaps, "seconds": seconds},
                   cache)
    return snaps, seconds


class Trace:
    """One seed's fitted traces of the clean images and their adversarial examples (``inputs``, in that order),
    with the victim's decisions on every snapshot computed once, and the snapshots of each setting's iterations
    and the on-boundary images (per grid size) shared by all the settings reconstructed from them."""

    def __init__(self, defence: DIPPreprocessor, inputs: torch.Tensor, snaps: torch.Tensor, wanted: np.ndarray,
                 labels: np.ndarray) -> None:
        self.inputs, self.snaps, self.wanted, self.labels = inputs, snaps, wanted, labels
        self.decisions = defence.decide(inputs, snaps)
        self.boundaries: dict[int, dict] = {}
        self.subsets: dict[bytes, tuple[torch.Tensor, TraceDecisions]] = {}

    def subset(self, mine: np.ndarray) -> tuple[torch.Tensor, TraceDecisions]:
        """The snapshots selected by the mask ``mine`` and the decisions on them, copied once per mask (settings
        that differ only in their reconstruction share them)."""
        if mine.tobytes() not in self.subsets:
            index = torch.from_numpy(mine)
            self.subsets[mine.tobytes()] = (self.snaps[index], TraceDecisions(
                self.decisions.probs[index], self.decisions.quality[index], self.decisions.input_labels))
        return self.subsets[mine.tobytes()]

    def score(self, defence: DIPPreprocessor) -> dict:
        """SA and RA (%) of ``defence`` reconstructing from its snapshots among the trace's."""
        mine = np.isin(self.wanted, defence.snapshot_iterations())
        snaps, decisions = self.subset(mine)
        outputs = defence.reconstruct(self.inputs, snaps, self.wanted[mine], decisions,
                                      self.boundaries.setdefault(defence.grid, {}))
        correct = predict(defence.classifier, outputs) == np.concatenate([self.labels, self.labels])
        n = len(self.labels)
        return {"clean": 100 * float(correct[:n].mean()), "robust": 100 * float(correct[n:].mean())}

    def settling(self) -> dict:
        """When the traces settle: for the clean images and for the adversarial examples, the quartiles (and 10th,
        90th percentiles) of the first snapshot iteration from which every later snapshot has the final label (the
        victim's label of the input, for almost every trace). The DIP defence's warm-up separates the two only
        where these distributions do not overlap."""
        labels = self.decisions.probs.argmax(-1).numpy()  # (S, 2n)
        unchanged = np.flip(np.cumprod(np.flip(labels == labels[-1], 0), 0), 0).astype(bool)  # labels[s:] final
        settle = self.wanted[unchanged.argmax(0)]
        n = len(self.labels)
        final_is_input = labels[-1] == self.decisions.input_labels.numpy()
        return {part: {"percentiles": {q: float(np.percentile(settle[sl], q)) for q in (10, 25, 50, 75, 90)},
                       "final_label_is_input_label": 100 * float(final_is_input[sl].mean())}
                for part, sl in (("clean", slice(0, n)), ("adversarial", slice(n, 2 * n)))}


def average(per_seed: list[dict]) -> dict:
    """The mean over seeds of SA and RA, their mean, and each seed's figures."""
    clean = float(np.mean([r["clean"] for r in per_seed]))
    robust = float(np.mean([r["robust"] for r in per_seed]))
    return {"clean": clean, "robust": robust, "mean": (clean + robust) / 2, "per_seed": per_seed}


def union_of_snapshots(defences: list[DIPPreprocessor]) -> np.ndarray:
    return np.unique(np.concatenate([d.snapshot_iterations() for d in defences])).astype(int)


def study(variants: list[tuple[dict, DIPPreprocessor]], data: dict[int, tuple], chunk: int,
          cache) -> tuple[list[dict], dict]:
    """Every variant's SA and RA, averaged over the seeds of ``data`` (seed -> inputs, labels), and each seed's
    :meth:`Trace.settling`; the variants share the fit's settings (network, learning rate, input jitter), so one
    trace per seed serves them all."""
    first = variants[0][1]
    wanted = union_of_snapshots([d for _, d in variants])
    per_seed: list[list[dict]] = [[] for _ in variants]
    settling = {}
    for seed, (inputs, labels) in data.items():
        snaps, seconds = fit_traces(first, wanted, inputs, seed, chunk, cache(first, seed, int(wanted[-1])))
        print(f"seed {seed}: {seconds:.0f} s for {len(inputs)} traces of {wanted[-1]} iterations ({first.network}, "
              f"lr {first.lr}, input jitter {first.input_jitter})", flush=True)
        trace = Trace(first, inputs, snaps, wanted, labels)
        settling[seed] = trace.settling()
        print("  traces settle (10/25/50/75/90th percentile iteration): " + "; ".join(
            f"{part} {'/'.join(f'{v:.0f}' for v in stats['percentiles'].values())}"
            for part, stats in settling[seed].items()), flush=True)
        for scores, (setting, defence) in zip(per_seed, variants, strict=True):
            scores.append({"seed": seed, **trace.score(defence), "trace_seconds": seconds})
            print(f"  {setting}: SA {scores[-1]['clean']:.1f} RA {scores[-1]['robust']:.1f}", flush=True)
    rows = [{**setting, **average(scores), "images": len(labels)}
            for (setting, _), scores in zip(variants, per_seed, strict=True)]
    return rows, settling


def markdown(result: dict) -> str:
    s = result["settings"]
    if "vary" in s:
        fit = f"{s['network']}, T = {s['at_iterations']}, input jitter {s.get('input_jitter', 0.0):g}"
        lines = [f"| parameter ({fit}) | value | SA | RA | mean |",
                 "|---|---|---|---|---|"]
        lines += [f"| {row['parameter']} | {'' if row['value'] is None else row['value']} | {row['clean']:.1f} | "
                  f"{row['robust']:.1f} | **{row['mean']:.1f}** |" for row in result["rows"]]
        if "per_seed" in result["rows"][0] and len(s["seeds"]) > 1:
            lines[0] = lines[0].replace("| mean |", "| mean | SA, RA per seed |")
            lines[1] += "---|"
            lines[2:] = [line + " " + "; ".join(f"{r['clean']:.1f}, {r['robust']:.1f}" for r in row["per_seed"]) + " |"
                         for line, row in zip(lines[2:], result["rows"], strict=True)]
    else:
        counts = s["iterations"]
        lines = ["| network | " + " | ".join(f"T = {t}" for t in counts) + " |", "|---|" + "---|" * len(counts)]
        for network in dict.fromkeys(row["network"] for row in result["rows"]):
            cells = {row["iterations"]: row for row in result["rows"] if row["network"] == network}
            lines.append(f"| {network} | " + " | ".join(
                f"{cells[t]['clean']:.1f} / {cells[t]['robust']:.1f} (**{cells[t]['mean']:.1f}**)" for t in counts)
                + " |")
    lines += ["", f"SA / RA (mean) in %, CIFAR-10 training images {s['images'][0]}..{s['images'][1]}, victim "
              f"{s['victim']} (undefended: SA {result['victim']['clean']:.1f}, RA {result['victim']['robust']:.1f}), "
              f"oblivious {s['attack']}, DIP input jitter {s.get('input_jitter', 0.0):g}"
              + "".join(f", {name} {value}" for name, value in s.get("set", {}).items())
              + f", mean over seeds {', '.join(map(str, s.get('seeds', [s.get('seed')])))}."]
    return "\n".join(lines) + "\n"


def parse_vary(items: list[str]) -> dict[str, list[float]]:
    """``["step=0,0.25", "keep=1,3"]`` -> ``{"step": [0.0, 0.25], "keep": [1, 3]}`` (integers stay integers)."""
    vary = {}
    for item in items:
        name, _, values = item.partition("=")
        vary[name] = [int(v) if v.lstrip("-").isdigit() else float(v) for v in values.split(",")]
    return vary


def variants_of(victim: torch.nn.Module, args: argparse.Namespace, settings: dict) -> list[list[tuple]]:
    """The settings to compare, grouped by what their traces share (network and learning rate): Table 3's rows, or
    the ``--vary`` variants around the defaults (one at a time, or every combination with ``--product``)."""
    def defence(**kwargs) -> DIPPreprocessor:
        return DIPPreprocessor(victim, **{"lr": args.lr, "input_jitter": args.input_jitter, **settings["set"],
                                          **kwargs})

    if not args.vary:
        return [[({"network": network, "iterations": t}, defence(network=network, iterations=t))
                 for t in settings["iterations"]] for network in args.networks]
    fixed = {"network": settings["network"], "iterations": settings["at_iterations"]}
    vary = settings["vary"]
    base = defence(**fixed)
    base_values = ", ".join(f"{name}={getattr(base, name)}" for name in vary)
    if args.product:
        combos = [dict(zip(vary, values, strict=True)) for values in itertools.product(*vary.values())]
        group = [({"parameter": ", ".join(vary), "value": ", ".join(map(str, c.values()))}, defence(**fixed, **c))
                 for c in combos]
    else:
        group = [({"parameter": name, "value": value}, defence(**fixed, **{name: value}))
                 for name, values in vary.items() for value in values]
    return [[({"parameter": "defaults", "value": base_values}, base)] + group]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True, help="CIFAR-10 python-layout folder (training images used)")
    parser.add_argument("--n", type=int, default=32, help="training images 0..n-1")
    parser.add_argument("--networks", nargs="+", default=["small", "medium", "large"])
    parser.add_argument("--iterations", nargs="+", type=int, default=[500, 750, 1000, 1250, 1500])
    defaults = inspect.signature(DIPPreprocessor).parameters
    parser.add_argument("--lr", type=float, default=defaults["lr"].default, help="DIP's Adam learning rate")
    parser.add_argument("--input-jitter", type=float, default=defaults["input_jitter"].default,
                        help="DIP's per-iteration input perturbation")
    parser.add_argument("--vary", nargs="+", default=None, metavar="NAME=V1,V2",
                        help="instead of Table 3: vary these reconstruction parameters one at a time (with --at)")
    parser.add_argument("--product", action="store_true", help="with --vary: every combination of the values")
    parser.add_argument("--set", nargs="+", default=[], metavar="NAME=V",
                        help="other values than the defaults for every setting (e.g. warmup=100)")
    parser.add_argument("--at", default="medium:1000", metavar="NETWORK:T", help="network and iterations for --vary")
    parser.add_argument("--eps", default="8/255")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--step-size", default="2/255")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="PGD start and DIP seeds, one study each")
    parser.add_argument("--chunk", type=int, default=64, help="images fitted together")
    parser.add_argument("--traces", default=None, help="folder caching the fitted traces (reused by later runs)")
    parser.add_argument("--json", required=True, help="results (read first: networks already there are skipped)")
    parser.add_argument("--output", default=None, help="also write the markdown table here")
    args = parser.parse_args()

    x, y = load_cifar10(args.data_root, "train", range(args.n))
    spec = AttackSpec("pgd", eps=parse_eps(args.eps), steps=args.steps, step_size=parse_eps(args.step_size))
    settings = {"split": "train", "images": [0, args.n - 1], "victim": "resnet20", "attack": spec.label(),
                "attack_settings": spec.settings(), "seeds": args.seeds, "lr": args.lr,
                "input_jitter": args.input_jitter, "set": {k: v[0] for k, v in parse_vary(args.set).items()}}
    if args.vary:
        network, _, at_iterations = args.at.partition(":")
        settings.update(vary=parse_vary(args.vary), product=args.product, network=network,
                        at_iterations=int(at_iterations))
    else:
        settings["iterations"] = sorted(args.iterations)
    path = Path(args.json)
    result = json.loads(path.read_text()) if path.is_file() else {}
    if result.get("settings") != settings:
        result = {"settings": settings, "rows": []}
    victim = load_victim("resnet20").eval()
    data, robust = {}, []
    for seed in args.seeds:
        np.random.seed(seed)  # noqa: NPY002 (ART draws PGD's random start from numpy's global generator)
        torch.manual_seed(seed)
        x_adv = spec.build(art_classifier(victim, device="cpu"), seed=seed).generate(x, y)
        data[seed] = (torch.from_numpy(np.concatenate([x, x_adv])), y)
        robust.append(100 * float((predict(victim, data[seed][0][args.n :]) == y).mean()))
    result["victim"] = {"clean": 100 * float((predict(victim, torch.from_numpy(x)) == y).mean()),
                        "robust": float(np.mean(robust))}
    result["command"] = "python benchmarks/dip_sensitivity.py " + " ".join(sys.argv[1:])
    result["machine"] = machine()

    def cache(defence: DIPPreprocessor, seed: int, last: int) -> Path | None:
        """The traces' file, named by what the fit depends on (settings at their defaults left out)."""
        if args.traces is None:
            return None
        fit = "".join(f"-{name}{value:g}" for name, value, default in
                      [("lr", defence.lr, 0.01), ("jitter", defence.input_jitter, 0.0)] if value != default)
        return Path(args.traces) / f"{defence.network}{fit}-n{args.n}-seed{seed}-T{last}.pt"

    done = {row.get("network") for row in result["rows"]}
    for group in variants_of(victim, args, settings):
        network = group[0][0].get("network")
        if network is not None and network in done:
            print(f"{network}: already in {path}")
            continue
        rows, settling = study(group, data, args.chunk, cache)
        result["rows"] += rows
        result.setdefault("settling", {})[group[0][1].network] = settling
        path.write_text(json.dumps(result, indent=2))  # after every network: a rerun skips it
    table = markdown(result)
    print(table)
    if args.output:
        Path(args.output).write_text(table, encoding="utf-8")


if __name__ == "__main__":
    main()
