"""Reference fine-tuning of the full pretrained all-MiniLM-L6-v2 on Rotten Tomatoes.

Measures what an *uncompressed* MiniLM reaches on the vendored
``rotten_tomatoes`` polarity task (see ``lightning_nas/datasets/PROVENANCE.md``)
on this CPU, so that compressed models can be compared against it: test
accuracy, wall time per training epoch, evaluation throughput and how much of
the text is cut by ``max_length``. Plain PyTorch loop, no Lightning, fully
offline (``HF_HUB_OFFLINE=1`` unless already set). Default learning rate 1e-4
(AdamW, 6 % linear warm-up then linear decay, batch 32); 5e-5 under-fits at
these budgets.

Usage::

    python benchmarks/minilm_reference.py                 # the default budgets below
    python benchmarks/minilm_reference.py --runs n2000:e1:L64 n9843:e1:L64:fixed
    python benchmarks/minilm_reference.py --quick         # pipeline smoke run (~20 s);
                                                          # 256 examples stay at chance level
    python benchmarks/minilm_reference.py --threads 1     # per-core CPU cost, robust to other load

A run spec is ``n<train examples>:e<epochs>:L<max_length>[:fixed][:lr<lr>]``;
``fixed`` pads every batch to ``max_length`` (static shapes), otherwise batches
are padded to their longest member (dynamic padding).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import time
from dataclasses import dataclass

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

try:
    from lightning_nas.datasets import load_text_classification, minilm_model_dir
except ModuleNotFoundError:  # running from a checkout without `pip install -e .`
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from lightning_nas.datasets import load_text_classification, minilm_model_dir

__all__ = ["RunSpec", "RunResult", "fine_tune", "truncation_stats", "main"]

DEFAULT_RUNS = ("n2000:e1:L64", "n4000:e1:L64", "n9843:e1:L64")


@dataclass(frozen=True)
class RunSpec:
    """One fine-tuning budget."""

    n_train: int
    epochs: int
    max_length: int
    fixed_padding: bool = False
    lr: float = 1e-4

    @classmethod
    def parse(cls, text: str) -> RunSpec:
        """Parse ``n2000:e1:L64[:fixed][:lr1e-4]``."""
        kw: dict[str, object] = {}
        for part in text.split(":"):
            if part == "fixed":
                kw["fixed_padding"] = True
            elif part.startswith("lr"):
                kw["lr"] = float(part[2:])
            elif part[0] == "n":
                kw["n_train"] = int(part[1:])
            elif part[0] == "e":
                kw["epochs"] = int(part[1:])
            elif part[0] == "L":
                kw["max_length"] = int(part[1:])
            else:
                raise ValueError(f"bad run spec part {part!r} in {text!r}")
        return cls(**kw)  # type: ignore[arg-type]

    def label(self) -> str:
        pad = "fixed" if self.fixed_padding else "dyn"
        return f"n={self.n_train} ep={self.epochs} L={self.max_length} {pad} lr={self.lr:g}"


@dataclass(frozen=True)
class RunResult:
    spec: RunSpec
    test_accuracy: float
    epoch_seconds: list[float]
    epoch_cpu_seconds: list[float]
    train_tokens_per_s: float
    eval_seconds: float
    eval_examples_per_s: float
    final_train_loss: float


def truncation_stats(tokenizer, texts: list[str], max_length: int) -> tuple[float, float]:
    """Return (fraction of examples truncated, fraction of tokens dropped)."""
    lengths = [len(ids) for ids in tokenizer(texts, truncation=False)["input_ids"]]
    cut = [max(0, n - max_length) for n in lengths]
    return sum(c > 0 for c in cut) / len(lengths), sum(cut) / sum(lengths)


def _batches(n: int, batch_size: int, rng: random.Random | None) -> list[list[int]]:
    idx = list(range(n))
    if rng is not None:
        rng.shuffle(idx)
    return [idx[i : i + batch_size] for i in range(0, n, batch_size)]


def _encode(tokenizer, texts: list[str], max_length: int, fixed: bool) -> dict[str, torch.Tensor]:
    return tokenizer(
        texts,
        truncation=True,
        max_length=max_length,
        padding="max_length" if fixed else "longest",
        return_tensors="pt",
    )


@torch.no_grad()
def evaluate(model, tokenizer, texts, labels, max_length, fixed, batch_size=128) -> tuple[float, float]:
    """Return (accuracy, seconds)."""
    model.eval()
    correct = 0
    t0 = time.perf_counter()
    for b in _batches(len(texts), batch_size, None):
        enc = _encode(tokenizer, [texts[i] for i in b], max_length, fixed)
        pred = model(**enc).logits.argmax(-1)
        correct += int((pred == torch.tensor([labels[i] for i in b])).sum())
    return correct / len(texts), time.perf_counter() - t0


def fine_tune(spec: RunSpec, data, tokenizer, batch_size: int, seed: int) -> RunResult:
    """Fine-tune a fresh copy of the pretrained MiniLM under ``spec``."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    path = minilm_model_dir()
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(data.label_names))
    x, y = data.train_texts[: spec.n_train], data.train_labels[: spec.n_train]
    steps = spec.epochs * math.ceil(len(x) / batch_size)
    warmup = max(1, int(0.06 * steps))
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup)))
    )
    epoch_seconds: list[float] = []
    epoch_cpu_seconds: list[float] = []
    tokens = 0
    loss_ema = float("nan")
    for _ in range(spec.epochs):
        model.train()
        t0, c0 = time.perf_counter(), time.process_time()
        for b in _batches(len(x), batch_size, rng):
            enc = _encode(tokenizer, [x[i] for i in b], spec.max_length, spec.fixed_padding)
            tokens += int(enc["input_ids"].numel())
            out = model(**enc, labels=torch.tensor([y[i] for i in b]))
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            v = float(out.loss.detach())
            loss_ema = v if math.isnan(loss_ema) else 0.9 * loss_ema + 0.1 * v
        epoch_seconds.append(time.perf_counter() - t0)
        epoch_cpu_seconds.append(time.process_time() - c0)
    acc, eval_s = evaluate(model, tokenizer, data.test_texts, data.test_labels, spec.max_length, spec.fixed_padding)
    return RunResult(
        spec=spec,
        test_accuracy=acc,
        epoch_seconds=epoch_seconds,
        epoch_cpu_seconds=epoch_cpu_seconds,
        train_tokens_per_s=tokens / sum(epoch_seconds),
        eval_seconds=eval_s,
        eval_examples_per_s=len(data.test_texts) / eval_s,
        final_train_loss=loss_ema,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Reference MiniLM fine-tuning on rotten_tomatoes")
    parser.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS), help="run specs, see module doc")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--max-test", type=int, default=None, help="evaluate on a test prefix only")
    parser.add_argument("--quick", action="store_true", help="smoke run: n256, 256 test examples")
    args = parser.parse_args(argv)

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    runs = [RunSpec.parse(r) for r in (["n256:e1:L64"] if args.quick else args.runs)]
    data = load_text_classification("rotten_tomatoes", max_test=256 if args.quick else args.max_test)
    tokenizer = AutoTokenizer.from_pretrained(minilm_model_dir())

    print(
        f"torch {torch.__version__}, threads={torch.get_num_threads()}, batch={args.batch_size}, "
        f"seed={args.seed}, train pool={len(data.train_texts)}, test={len(data.test_texts)}"
    )
    every = data.train_texts + data.test_texts
    lengths = sorted(len(ids) for ids in tokenizer(every, truncation=False)["input_ids"])
    print(
        f"tokens/example (incl. [CLS]/[SEP]): mean={sum(lengths) / len(lengths):.1f} "
        f"median={lengths[len(lengths) // 2]} p99={lengths[int(0.99 * len(lengths))]} max={lengths[-1]}"
    )
    print("| max_length | examples truncated | tokens dropped |")
    print("|---|---|---|")
    for L in (128, 64, 48, 32):
        ex, tok = truncation_stats(tokenizer, every, L)
        print(f"| {L} | {ex:.2%} | {tok:.2%} |")
    majority = max(data.test_labels.count(k) for k in range(len(data.label_names))) / len(data.test_labels)
    print(f"majority-class test accuracy: {majority:.4f}\n")

    results = []
    for spec in runs:
        t0 = time.perf_counter()
        res = fine_tune(spec, data, tokenizer, args.batch_size, args.seed)
        results.append(res)
        print(
            f"done {spec.label()}: acc={res.test_accuracy:.4f} total={time.perf_counter() - t0:.0f}s "
            f"loadavg(1m)={os.getloadavg()[0]:.1f}",
            flush=True,
        )

    print("\nwall = elapsed seconds; cpu = process CPU seconds (all threads), less sensitive to other load")
    columns = ["run", "test acc", "wall s/epoch", "cpu s/epoch", "wall s/epoch per 1k ex", "train tok/s"]
    print("| " + " | ".join([*columns, "eval s (ex/s)", "train loss"]) + " |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        sec = sum(r.epoch_seconds) / len(r.epoch_seconds)
        cpu = sum(r.epoch_cpu_seconds) / len(r.epoch_cpu_seconds)
        print(
            f"| {r.spec.label()} | {r.test_accuracy:.4f} | {sec:.1f} | {cpu:.1f} | {1000 * sec / r.spec.n_train:.1f} | "
            f"{r.train_tokens_per_s:.0f} | {r.eval_seconds:.1f} ({r.eval_examples_per_s:.0f}) | "
            f"{r.final_train_loss:.3f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
