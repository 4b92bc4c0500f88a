"""CPU milliseconds per iteration of a DIP fit (``dip_trace``) of ``B`` images (64 by default) under options that
might speed it up, timed in turns in one process, each fit's final images compared to the first option's to the bit.

    OMP_NUM_THREADS=1 python benchmarks/dip_fit_options.py --defence dipdefend --iterations 100 --repeat 3 \\
        --options flat per-parameter foreach flush-denormal

Options: ``flat`` is the code as it is (Adam over flat buckets of the parameters on the CPU); ``per-parameter``
torch's single-tensor Adam over the parameters one by one (the code before the buckets); ``foreach`` torch's
multi-tensor Adam over them; ``flush-denormal`` the code as it is under ``torch.set_flush_denormal(True)`` (restored
after each fit). The fit is that of the DIP defence (small network, input jitter) or of DIPDefend (its network,
noise input optimised) at their defaults but for the number of iterations, on the bundled CIFAR-10 sample, image
``i``'s network drawn from seed ``i``. CPU seconds of this process are less sensitive to other jobs than wall time,
but they share caches and memory bandwidth: compare options only within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

import torch

from art_purifiers.data import load_sample
from art_purifiers.defences.dip import DIPDEFEND_NETWORK
from art_purifiers.evaluation.benchmark import machine
from art_purifiers.nn import dip

OPTIONS = ("flat", "per-parameter", "foreach", "flush-denormal")


class _PerParameter(dip._FitOptimiser):
    """``_FitOptimiser`` without the flat buckets: Adam over the parameters one by one."""

    def __init__(self, parameters: list[torch.Tensor], lr: float, device: torch.device, foreach: bool = False) -> None:
        self.parameters, self.flats = parameters, None
        self.adam = torch.optim.Adam(parameters, lr=lr, foreach=foreach, fused=False)


@contextlib.contextmanager
def option(name: str):
    """The code under option ``name`` (see the module docstring), restored on exit."""
    optimiser = dip._FitOptimiser
    try:
        if name == "per-parameter":
            dip._FitOptimiser = _PerParameter
        elif name == "foreach":
            dip._FitOptimiser = lambda parameters, lr, device: _PerParameter(parameters, lr, device, foreach=True)
        elif name == "flush-denormal":
            torch.set_flush_denormal(True)
        yield
    finally:
        dip._FitOptimiser = optimiser
        torch.set_flush_denormal(False)


def fit(defence: str, x: torch.Tensor, iterations: int) -> torch.Tensor:
    """The final trace images of the defence's fit of ``x`` after ``iterations`` iterations."""
    config, options = ((dip.DIP_PRESETS["small"], {"input_jitter": 0.0333}) if defence == "dip"
                       else (DIPDEFEND_NETWORK, {"optimise_input": True}))
    last = []
    dip.dip_trace(x, config, iterations, [torch.Generator().manual_seed(i) for i in range(len(x))],
                  on_iteration=lambda t, out, _: last.append(out) if t == iterations else None, **options)
    return last[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--defence", default="dip", choices=["dip", "dipdefend"])
    parser.add_argument("--batch", type=int, default=64, help="images (default 64)")
    parser.add_argument("--iterations", type=int, default=100, help="iterations per fit (default 100)")
    parser.add_argument("--repeat", type=int, default=3, help="timed fits per option, in turns (default 3)")
    parser.add_argument("--options", nargs="+", default=list(OPTIONS), choices=OPTIONS)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    if not 1 <= args.batch <= 200 or args.iterations < 1 or args.repeat < 1:
        parser.error("--batch must be in 1..200 (the bundled sample), --iterations and --repeat at least 1.")

    torch.set_num_threads(1)
    x = torch.from_numpy(load_sample()[0][: args.batch])
    rows = {name: {"cpu_ms_per_iteration": [], "load_average_1min": []} for name in args.options}
    outputs = {}
    for name in args.options:  # warm-up
        with option(name):
            fit(args.defence, x[:2], 2)
    for _ in range(args.repeat):
        for name in args.options:
            with option(name):
                rows[name]["load_average_1min"].append(os.getloadavg()[0])
                start = time.process_time()
                outputs[name] = fit(args.defence, x, args.iterations)
                rows[name]["cpu_ms_per_iteration"].append(1000 * (time.process_time() - start) / args.iterations)
    for name, row in rows.items():
        row["best"] = min(row["cpu_ms_per_iteration"])
        row["equal_to_the_bit"] = bool(torch.equal(outputs[name], outputs[args.options[0]]))
        print(f"{args.defence} {name:15s} best {row['best']:6.1f} ms CPU per iteration, all "
              f"{[round(v, 1) for v in row['cpu_ms_per_iteration']]}, load {row['load_average_1min']}, "
              f"equal to {args.options[0]}: {row['equal_to_the_bit']}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"command": "python benchmarks/dip_fit_options.py " + " ".join(sys.argv[1:]),
                       "date": time.strftime("%Y-%m-%d %H:%M"), "defence": args.defence, "batch": args.batch,
                       "iterations": args.iterations, "rows": rows, "machine": machine()}, handle, indent=2)


if __name__ == "__main__":
    main()
