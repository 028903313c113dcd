"""``torch.compile`` on supernet training steps whose shapes change every step, on CPU.

Sandwich steps (the full net on labels, two random sub-networks and the smallest distilled, as
:func:`~lightning_nas.proxies.warmup` and ``SupernetCallback`` run them) over an MLP supernet,
with the network eager or compiled (inductor) as ``torch.compile(model, dynamic=...)``. Reported:
steps/s over the timed steps, and the frames dynamo compiled (recompiles: each new sub-network
shape can be one) over all steps; at dynamo's recompile limit it runs further shapes eagerly.
"unspec ints" sets ``torch._dynamo.config.allow_unspec_int_on_nn_module`` so that the elastic
layers' active sizes (integer attributes) can become symbolic. ``mark_dynamic`` is not a mode: it
marks dimensions of *input* tensors, while a sub-network's shapes change in its weights' slices.

    python benchmarks/compile_step.py --steps 100
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lightning_nas import Supernet  # noqa: E402
from lightning_nas._table import format_table  # noqa: E402
from lightning_nas.proxies import warmup  # noqa: E402

MODES = ["eager", "compile", "compile dynamic=True", "compile dynamic=True, unspec ints"]


def run(mode: str, steps: int, timed: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    net = Supernet(model, example_input=torch.zeros(2, 64))
    runner = net.model
    if mode != "eager":
        # Integer attributes of modules (the elastic layers' active sizes) are static unless asked.
        torch._dynamo.config.allow_unspec_int_on_nn_module = mode.endswith("unspec ints")
        runner = torch.compile(net.model, dynamic=None if mode == "compile" else True)
    batches = [(torch.randn(32, 64), torch.randint(0, 10, (32,))) for _ in range(8)]
    forward = lambda model, batch: runner(batch[0])  # noqa: E731 - the compiled module runs the step
    start = time.perf_counter()
    warmup(net, batches, steps=steps - timed, strategy="sandwich", forward=forward, lr=1e-3)
    middle = time.perf_counter()
    warmup(net, batches, steps=timed, strategy="sandwich", forward=forward, lr=1e-3, seed=1)
    end = time.perf_counter()
    from torch._dynamo.utils import counters

    return {
        "steps_per_s": timed / (end - middle),
        "first_s": middle - start,
        "frames": counters["stats"]["unique_graphs"],
        "archs": len(net.space.to_dict()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--timed", type=int, default=50, help="the last TIMED steps are timed")
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run(args.mode, args.steps, args.timed)))
        return
    rows = []
    for mode in MODES:
        command = [sys.executable, __file__, "--mode", mode, "--steps", str(args.steps), "--timed", str(args.timed)]
        done = subprocess.run(command, check=True, capture_output=True, text=True, env={**os.environ})
        r = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append([mode, f"{r['steps_per_s']:.1f}", f"{r['first_s']:.1f}", r["frames"]])
    header = ["network", "steps/s (timed)", f"first {args.steps - args.timed} steps s", "frames compiled"]
    print(format_table(header, rows))
    print(f"dynamo's recompile limit: {torch._dynamo.config.recompile_limit} frames")


if __name__ == "__main__":
    main()
