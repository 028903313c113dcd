"""What weight entanglement costs: elastic modules, supernet training steps, extracted models.

(a) forward+backward of each elastic module at full size vs the plain torch module;
(b) a supernet training step with each strategy vs a plain training step (same LightningModule,
    same batch; the strategy runs several sub-networks, so the table also divides by that number);
(c) a sub-network's inference inside the supernet vs the same architecture extracted.

Run:  python benchmarks/elastic_overhead.py [--device cpu|cuda] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.benchmark import Timer

from lightning_nas import Supernet
from lightning_nas._table import format_table
from lightning_nas.demo import DigitsCNN
from lightning_nas.elastic import ELASTIC_TYPES
from lightning_nas.strategies import InstaTune, Sandwich, SinglePath, distillation_loss


def _time(fn, min_run_time: float) -> float:
    return Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).median


def _compare(fns: dict[str, object], min_run_time: float, rounds: int) -> dict[str, float]:
    """Median time of each function over interleaved rounds (A B A B ...), so drifts in machine
    load hit every contender alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(_time(fn, min_run_time / rounds))
    return {name: statistics.median(values) for name, values in times.items()}


def module_overhead(device: torch.device, min_run_time: float, rounds: int) -> list[list[str]]:
    cases = {
        "Linear 1024x1024, batch 512": (nn.Linear(1024, 1024), (512, 1024)),
        "Conv2d 64->64 3x3, 8x64x32x32": (nn.Conv2d(64, 64, 3, padding=1), (8, 64, 32, 32)),
        "BatchNorm2d 64, 8x64x32x32": (nn.BatchNorm2d(64), (8, 64, 32, 32)),
        "LayerNorm 1024, 512x1024": (nn.LayerNorm(1024), (512, 1024)),
        "Embedding 30522x384, 64x128 ids": (nn.Embedding(30522, 384), None),
    }
    rows = []
    for name, (plain, shape) in cases.items():
        plain = plain.to(device)
        elastic = ELASTIC_TYPES[type(plain)].convert(plain)
        x = torch.randint(0, 30522, (64, 128), device=device) if shape is None else torch.randn(*shape, device=device)

        def step(module: nn.Module) -> None:
            module(x).float().square().mean().backward()

        times = _compare({"plain": lambda: step(plain), "elastic": lambda: step(elastic)}, min_run_time, rounds)
        base = times["plain"]
        rows.append([name, f"{base * 1e3:.3f}", f"{times['elastic'] * 1e3:.3f}", f"{times['elastic'] / base:.3f}"])
    return rows


def strategy_overhead(device: torch.device, steps: int, rounds: int) -> list[list[str]]:
    import random

    x = torch.rand(64, 1, 8, 8, device=device)
    y = torch.randint(0, 10, (64,), device=device)
    contenders = {
        "plain model": None,
        "spos": SinglePath(),
        "instatune": InstaTune(),
        "sandwich (max+2+min)": Sandwich(num_random=2),
    }
    step_fns, nets = {}, {}
    for name, strategy in contenders.items():
        torch.manual_seed(0)
        model = DigitsCNN(width=32, hidden=64).to(device)
        supernet = None if strategy is None else Supernet(model, example_input=x[:1])
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        rng = random.Random(0)

        def train_step(model=model, supernet=supernet, strategy=strategy, optimizer=optimizer, rng=rng) -> None:
            # What SupernetCallback does around the user's training_step, without Lightning's loop.
            teacher, students = (None, []) if supernet is None else strategy.sample(supernet.space, rng)
            if supernet is not None:
                supernet.set_arch(teacher)
            logits = model(x)
            F.cross_entropy(logits, y).backward()
            for arch in students:
                supernet.set_arch(arch)
                with supernet.frozen_batchnorm_statistics():
                    distillation_loss(model(x), logits.detach()).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        for _ in range(3):
            train_step()
        step_fns[name] = train_step
        nets[name] = 1 if strategy is None else 1 + len(strategy.sample(supernet.space, random.Random(0))[1])

    per_step: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, train_step in step_fns.items():
            start = time.perf_counter()
            for _ in range(steps):
                train_step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            per_step[name].append((time.perf_counter() - start) / steps)
    medians = {name: statistics.median(values) for name, values in per_step.items()}
    baseline = medians["plain model"]
    return [
        [name, str(nets[name]), f"{t * 1e3:.2f}", f"{t / baseline:.2f}", f"{t / baseline / nets[name]:.2f}"]
        for name, t in medians.items()
    ]


def extracted_vs_supernet(device: torch.device, min_run_time: float, rounds: int) -> list[list[str]]:
    torch.manual_seed(0)
    x = torch.rand(256, 1, 8, 8, device=device)
    supernet = Supernet(DigitsCNN(width=64, hidden=128).to(device).eval(), example_input=x[:1])
    rows = []
    for label, arch in (
        ("max", supernet.max_arch()),
        ("random", supernet.sample_arch(1)),
        ("min", supernet.min_arch()),
    ):
        dense = supernet.extract(arch).eval()

        def inside(arch=arch) -> None:
            supernet.set_arch(arch)
            supernet.model(x)

        with torch.inference_mode():
            times = _compare({"inside": inside, "extracted": lambda dense=dense: dense(x)}, min_run_time, rounds)
        rows.append(
            [
                label,
                f"{supernet.num_params(arch):,}",
                f"{times['inside'] * 1e3:.3f}",
                f"{times['extracted'] * 1e3:.3f}",
                f"{times['inside'] / times['extracted']:.2f}",
            ]
        )
    supernet.set_arch(None)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--min-run-time", type=float, default=2.0, help="seconds per contender, over all rounds")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per strategy and round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians are reported")
    parser.add_argument("--parts", default="abc", help="which tables to measure, e.g. 'a' or 'bc'")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__}\n")
    if "a" in args.parts:
        print("(a) forward+backward at full size, elastic vs plain")
        rows = module_overhead(device, args.min_run_time, args.rounds)
        print(format_table(["module", "plain ms", "elastic ms", "ratio"], rows))
    if "b" in args.parts:
        print("\n(b) training step of DigitsCNN(width=32), batch 64: supernet strategies vs a plain step")
        rows = strategy_overhead(device, args.steps, args.rounds)
        print(format_table(["strategy", "nets/step", "ms/step", "ratio", "ratio per net"], rows))
    if "c" in args.parts:
        print("\n(c) inference of DigitsCNN(width=64), batch 256: sub-network inside the supernet vs extracted")
        rows = extracted_vs_supernet(device, args.min_run_time, args.rounds)
        print(format_table(["arch", "params", "in supernet ms", "extracted ms", "supernet / extracted"], rows))


if __name__ == "__main__":
    main()
