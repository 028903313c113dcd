"""How much of each timm family the supernet can shrink, with the timm adapter vs the generic one.

For each model (random weights, its stock configuration, 1000 classes): the dimensions the timm
adapter finds (widths, attention heads, depths, kernels), the elastic fraction
1 - params(smallest sub-network) / params(model) with the timm adapter and with the generic
(traced) adapter alone, the largest output difference between a sub-network inside the supernet
and its extracted dense model (smallest and two random sub-networks, batch 1 and 3), and the
time to build the supernet (trace, plan, conversion and its check runs).

Run:  python benchmarks/timm_elastic.py [--size 224] [--models resnet18 deit_tiny_patch16_224 ...]
"""

from __future__ import annotations

import argparse
import time

import timm
import torch

from lightning_nas import Depth, Kernel, Supernet
from lightning_nas._table import format_table

MODELS = (
    "resnet18",
    "resnet50",
    "convnext_atto",
    "deit_tiny_patch16_224",
    "vit_small_patch16_224",
    "efficientnet_b0",
    "tf_efficientnet_lite0",
    "mobilenetv2_100",
    "mobilenetv3_small_100",
    "mnasnet_100",
    "regnetx_002",
    "regnety_002",
    "ghostnet_100",
)


def _fraction(net: Supernet) -> float:
    return 1 - net.num_params(net.min_arch()) / net.num_params(net.max_arch())


def _kinds(net: Supernet) -> str:
    depth = sum(isinstance(d, Depth) for d in net.space.values())
    kernel = sum(isinstance(d, Kernel) for d in net.space.values())
    heads = sum(name.endswith(".heads") for name in net.space)
    widths = len(net.space) - depth - kernel - heads
    return f"{widths}/{heads}/{depth}/{kernel}"


def _extraction_error(net: Supernet, size: int) -> float:
    worst = 0.0
    for arch in (net.min_arch(), net.sample_arch(0), net.sample_arch(1)):
        dense = net.extract(arch).eval()
        for batch in (1, 3):
            x = torch.randn(batch, 3, size, size)
            with net.use(arch), torch.no_grad():
                worst = max(worst, float((net.model(x) - dense(x)).abs().max()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for name in args.models:
        x = torch.randn(1, 3, args.size, args.size)
        try:
            generic = _fraction(Supernet(timm.create_model(name).eval(), example_input=x, adapter="generic"))
        except ValueError:  # no elastic dimension at all
            generic = 0.0
        model = timm.create_model(name).eval()
        start = time.perf_counter()
        net = Supernet(model, example_input=x)
        built = time.perf_counter() - start
        rows.append(
            (
                name,
                f"{net.num_params(net.max_arch()) / 1e6:.2f}",
                f"{net.num_params(net.min_arch()) / 1e6:.2f}",
                _kinds(net),
                f"{_fraction(net):.1%}",
                f"{generic:.1%}",
                f"{_extraction_error(net, args.size):.1e}",
                f"{built:.1f}",
            )
        )
        print(f"{name} done", flush=True)
    header = (
        "model",
        "params M",
        "min M",
        "widths/heads/depths/kernels",
        "elastic (timm)",
        "elastic (generic)",
        "max |extract - supernet|",
        "build s",
    )
    print(format_table(header, rows))


if __name__ == "__main__":
    main()
