"""MiniLM compression on Rotten Tomatoes: InstaTune supernet + one-shot search vs structured pruning.

The benchmark of GitHub issue 3. On the pretrained all-MiniLM-L6-v2
(:func:`~lightning_nas.datasets.minilm_model_dir`) and the vendored ``rotten_tomatoes`` task
(train split -> fit / validation with :func:`~lightning_nas.datasets.train_validation_split`;
the test split is used for the final numbers only), it measures:

1. **reference**: the full model fine-tuned with plain Lightning (:class:`TextClassifier`, no NAS)
   with the fine-tuning budget B (epochs, examples, learning rate, batch size);
2. **instatune**: the same fine-tuning budget B, but the model is made elastic while it is
   fine-tuned: ``SupernetCallback(strategy="instatune", module="model",
   prepare=reorder_by_importance on a few batches, limits={"encoder_params": largest budget})``
   (each step trains the full model on labels and one random sub-network, drawn among those
   within the largest budget, distilled from it). Then, for each budget on the *encoder* parameters
   (:func:`~lightning_nas.compress.encoder_params`: everything but the token / position / type
   embeddings), :func:`~lightning_nas.search.one_shot_search` scores sub-networks with inherited
   weights on the validation set (:class:`~lightning_nas.search.TorchmetricsEvaluator`; limit on
   encoder params, objective val accuracy vs params). The best one is exported with
   :func:`~lightning_nas.export.hf.export_hf`, reloaded and evaluated on the test set.
   **No extra fine-tuning** of the extracted model (and none for the baseline either: each
   method gets exactly one fine-tuning of budget B per model it trains).
3. **prune**: the classic prune-then-fine-tune baseline with Torch-Pruning (``torch-pruning``):
   whole attention heads and FFN neurons of every layer are removed from the *pretrained* model
   with group Taylor importance (``|w * dL/dw|``, on the same first training batches that the
   InstaTune run uses to reorder by importance), the same number in every layer, as many as
   needed to meet each encoder-parameter budget (hidden size and depth are kept). Each pruned
   model is then fine-tuned with the same budget B. (So the baseline spends B once per budget,
   the InstaTune supernet B once for all budgets.)

Search space of the supernet: one global ``heads`` and one global ``ffn`` width for all layers
(``per_layer=False``; importance still sorts each layer's own heads and neurons), at k/24 of the
original for k = 6..24 (``--width-steps``: 3..12 heads, FFN in steps of 64 neurons; 190
architectures), so the exported models have stock ``BertConfig``\\ s. The hidden size stays 384
unless ``--elastic-hidden`` (it shrinks the pretrained embeddings and cost more accuracy per
parameter in our runs). The depth stays 6 unless ``--elastic-depth`` (2..6 layers):
all-MiniLM-L6-v2 was trained for mean pooling, and its [CLS] token is
nearly input-independent up to layer 5 (std across inputs 0.001-0.04 vs 0.2-0.35 at layer 6,
before and after fine-tuning), so the CLS-pooled classifier of a shallower sub-network outputs
an almost constant class: in the ``--elastic-depth`` run every depth < 6 sub-network scored
exactly the majority rate on the validation set. The search evaluates
the sub-networks whose encoder parameters lie in the top band ``[band * budget, budget]``
(a seeded random subset of ``--trials`` of them; if the band holds fewer, the largest feasible
ones), chosen by cost alone before any evaluation: accuracy rises with size, so the far-below-
budget architectures that uniform sampling mostly draws would waste the few evaluations. They go
to ``one_shot_search(candidates=...)``, which evaluates them after its two anchors (the largest
architecture, over budget and so not evaluated, and the smallest).

For each model the table reports encoder / total parameters, test accuracy (and % of the
reference's), FLOPs at batch 1 x 128 tokens (:func:`~lightning_nas.metrics.count_flops`) and their
reduction vs the reference, CPU latency (:func:`~lightning_nas.metrics.measure_latency`) of the
exported / pruned model at batch 32 and batch 1 x 128 tokens with ``torch.set_num_threads(2)``,
all models measured in the same process, interleaved, after waiting for a 1-minute load average
below ``--max-load`` (the machine is shared); the speed-up vs the reference and the ratio
speed-up / FLOPs reduction. Goals of the issue: at 50 % encoder params the InstaTune model keeps
>= 98 % of the reference accuracy; it beats the baseline at every budget; its latency speed-up
is >= 0.8 x its FLOPs reduction. (The supernet's defaults were chosen over several runs whose
test figures were seen: ``benchmarks/RESULTS.md`` lists them all.)

Everything (trained models, the Optuna studies, ``results.json``) goes to ``--out``; a rerun
with the same settings resumes from what is there, and ``--timing-only`` re-measures FLOPs and
latency of the saved models without training anything.

Usage::

    python benchmarks/minilm_compress.py                   # full run, ~20 min on a quiet 2-core CPU
    python benchmarks/minilm_compress.py --quick           # pipeline check, a few minutes, numbers meaningless
    python benchmarks/minilm_compress.py --timing-only     # re-measure latency from nas_runs/minilm_bench
    python benchmarks/minilm_compress.py --budgets 0.5 --trials 10 --out nas_runs/minilm_half
    # another supernet (here: the sandwich rule), reusing the reference and pruned models of a run:
    python benchmarks/minilm_compress.py --strategy sandwich --out nas_runs/minilm_sandwich \\
        --baselines-from nas_runs/minilm_bench

Needs ``torch-pruning`` for the baseline (the ``bench`` extra: ``pip install 'lightning-nas[bench]'``).
"""

from __future__ import annotations

import argparse
import functools
import gc
import itertools
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import lightning as L  # noqa: E402
import torch  # noqa: E402
import torchmetrics  # noqa: E402
from torch import nn  # noqa: E402

try:
    import lightning_nas  # noqa: F401
except ModuleNotFoundError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_nas.apps import TextClassifier, TextDataModule, evaluate_accuracy  # noqa: E402
from lightning_nas.callbacks import SupernetCallback  # noqa: E402
from lightning_nas.callbacks._quiet import quiet_lightning  # noqa: E402
from lightning_nas.compress import dense_encoder_params, encoder_params, width_fractions  # noqa: E402
from lightning_nas.datasets import load_text_classification, minilm_model_dir, train_validation_split  # noqa: E402
from lightning_nas.export.hf import export_hf, load_hf  # noqa: E402
from lightning_nas.importance import reorder_by_importance  # noqa: E402
from lightning_nas.metrics import count_flops, count_params, measure_latency  # noqa: E402
from lightning_nas.search import TorchmetricsEvaluator, one_shot_search  # noqa: E402
from lightning_nas.strategies import distillation_loss  # noqa: E402
from lightning_nas.supernet import Supernet  # noqa: E402

__all__ = ["BenchConfig", "main"]

#: Depths of the supernet (with --elastic-depth) as fractions of 6.
DEPTH_FRACTIONS = (2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0)
SEQ = 128  # sequence length of the FLOPs and latency measurements


@dataclass(frozen=True)
class BenchConfig:
    """Everything that determines the trained models (a rerun resumes only with the same values)."""

    max_fit: int | None
    max_val: int | None
    max_test: int | None
    epochs: int
    lr: float
    batch_size: int
    max_length: int
    importance_batches: int
    budgets: tuple[float, ...]
    trials: int
    band: float
    prune_importance: str
    seed: int
    elastic_depth: bool = False
    elastic_hidden: bool = False
    strategy: str = "instatune"
    students_within_budget: bool = True
    width_steps: int = 24
    student_label_weight: float = 0.0


#: Values of fields added later, for ``results.json`` files written before they existed.
LEGACY_FIELDS = {
    "elastic_hidden": True,
    "strategy": "instatune",
    "students_within_budget": False,
    "width_steps": 8,
    "student_label_weight": 0.0,
}


#: Fields that only concern the supernet and its search; the reference and pruned models do not
#: depend on them (``--baselines-from`` reuses those of a run that differs only here).
SUPERNET_FIELDS = (
    "elastic_depth",
    "elastic_hidden",
    "strategy",
    "students_within_budget",
    "width_steps",
    "student_label_weight",
    "trials",
    "band",
)


# ------------------------------------------------------------------------------------------------
# bookkeeping


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load={os.getloadavg()[0]:.1f}] {message}", flush=True)


class Results:
    """``results.json``: written after every step, so an interrupted run resumes."""

    def __init__(self, path: Path, config: BenchConfig, fresh: bool, timing_only: bool = False) -> None:
        self.path = path
        self.data: dict[str, Any] = {}
        if path.is_file() and not fresh:
            self.data = json.loads(path.read_text())
            saved = self.data.get("config")
            if saved is not None:
                saved = {**LEGACY_FIELDS, **saved}
            # --timing-only re-measures the saved models, whatever settings they were trained with.
            if saved is not None and not timing_only and saved != json.loads(json.dumps(asdict(config))):
                raise SystemExit(
                    f"{path} was written with other settings:\n  {saved}\nnow:\n  {asdict(config)}\n"
                    "use another --out, or --fresh to overwrite"
                )
        if not (timing_only and "config" in self.data):
            self.data["config"] = asdict(config)
        self.data.setdefault("reference", None)
        self.data.setdefault("instatune", {})
        self.data.setdefault("nas", {})
        self.data.setdefault("prune", {})
        self.data.setdefault("measurements", {})

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2))
        tmp.replace(self.path)


def reuse_baselines(results: Results, source: Path) -> None:
    """Copy the reference and pruned-model records of another run with the same shared settings."""
    other = json.loads((source / "results.json").read_text())
    config = json.loads(json.dumps(results.data["config"]))  # tuples as lists, as in the file
    mine = {k: v for k, v in config.items() if k not in SUPERNET_FIELDS}
    theirs = {k: v for k, v in other["config"].items() if k not in SUPERNET_FIELDS}
    if mine != theirs:
        raise SystemExit(f"--baselines-from {source}: other settings\n  {theirs}\nvs\n  {mine}")
    missing = [b for b in map(budget_key, results.data["config"]["budgets"]) if b not in other["prune"]]
    if not other.get("reference") or missing:
        raise SystemExit(f"--baselines-from {source}: its reference or pruned models {missing} are not done")
    results.data["reference"] = other["reference"]
    results.data["prune"] = {k: v for k, v in other["prune"].items() if k in map(budget_key, mine["budgets"])}
    results.data["baselines_from"] = str(source.resolve())
    results.save()


def budget_key(budget: float) -> str:
    return f"{budget:.2f}"


# ------------------------------------------------------------------------------------------------
# data, training, evaluation


@dataclass
class Data:
    fit: tuple[list[str], list[int]]
    val: tuple[list[str], list[int]]
    test: tuple[list[str], list[int]]
    num_labels: int


def load_data(config: BenchConfig) -> Data:
    data = load_text_classification("rotten_tomatoes", max_test=config.max_test)
    fit_x, fit_y, val_x, val_y = train_validation_split(data.train_texts, data.train_labels)
    return Data(
        fit=(fit_x[: config.max_fit], fit_y[: config.max_fit]),
        val=(val_x[: config.max_val], val_y[: config.max_val]),
        test=(data.test_texts, data.test_labels),
        num_labels=len(data.label_names),
    )


def make_datamodule(tokenizer: Any, data: Data, config: BenchConfig) -> TextDataModule:
    return TextDataModule(tokenizer, data.fit, data.val, data.test, config.max_length, config.batch_size, config.seed)


def fine_tune(module: TextClassifier, datamodule: TextDataModule, config: BenchConfig, callbacks: list) -> dict:
    """Fine-tune with budget B; returns wall seconds and the validation accuracy after training."""
    trainer = L.Trainer(
        max_epochs=config.epochs,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
        default_root_dir=None,
    )
    start = time.perf_counter()
    with quiet_lightning():
        trainer.fit(module, datamodule)
    seconds = time.perf_counter() - start
    return {
        "train_s": seconds,
        "train_steps": int(trainer.global_step),
        "val_acc_full": float(trainer.callback_metrics.get("val_acc", float("nan"))),
    }


def timing_inputs(batch: int) -> dict[str, torch.Tensor]:
    ids = torch.full((batch, SEQ), 1000, dtype=torch.long)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def new_classifier(data: Data, config: BenchConfig, model: nn.Module | None = None) -> TextClassifier:
    L.seed_everything(config.seed, verbose=False)  # same classifier-head initialisation everywhere
    source = minilm_model_dir() if model is None else model
    return TextClassifier(source, data.num_labels, lr=config.lr, max_length=config.max_length)


# ------------------------------------------------------------------------------------------------
# 1. reference


def run_reference(results: Results, out: Path, data: Data, tokenizer: Any, config: BenchConfig) -> None:
    path = out / "reference"
    done = results.data["reference"]
    if done and (Path(done["path"]) / "config.json").is_file():
        log("reference: done already")
        return
    log(f"reference: fine-tuning the full model on {len(data.fit[0])} examples")
    datamodule = make_datamodule(tokenizer, data, config)
    module = new_classifier(data, config)
    record = fine_tune(module, datamodule, config, [])
    record["test_acc"] = evaluate_accuracy(module.model, datamodule.test_dataloader())
    module.model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    record["path"] = str(path)
    results.data["reference"] = record
    results.save()
    log(f"reference: {record}")


# ------------------------------------------------------------------------------------------------
# 2. InstaTune supernet + one-shot search


def build_supernet(data: Data, config: BenchConfig, prepare: Any = None) -> tuple[TextClassifier, SupernetCallback]:
    module = new_classifier(data, config)
    limits = None
    if config.students_within_budget:  # no training for sub-networks over every budget
        limits = {"encoder_params": max(config.budgets) * dense_encoder_params(module.model)}
    weight = config.student_label_weight

    def distill(student: Any, teacher: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """In-place distillation, mixed with the labels' cross-entropy by ``--student-label-weight``."""
        loss = distillation_loss(student, teacher)
        if weight:
            loss = (1 - weight) * loss + weight * nn.functional.cross_entropy(student.logits, batch["labels"])
        return loss

    callback = SupernetCallback(
        distill=distill,
        limits=limits,
        costs={"encoder_params": lambda arch: encoder_params(callback.supernet, arch)},
        strategy=config.strategy,
        module="model",
        prepare=prepare,
        seed=config.seed,
        adapter_options={
            "per_layer": False,
            "hidden": config.elastic_hidden,
            "width_fractions": width_fractions(config.width_steps),
            "depth": config.elastic_depth,
            "depth_fractions": DEPTH_FRACTIONS,
        },
    )
    callback.build(module)
    return module, callback


def search_candidates(supernet: Supernet, limit: float, trials: int, band: float, seed: int) -> list[dict]:
    """Architectures to evaluate: a seeded sample of those in ``[band * limit, limit]`` encoder params.

    If the band holds fewer than ``trials``, the largest feasible architectures instead.
    """
    cost = _encoder_param_table(supernet)
    feasible = sorted(((c, a) for a, c in cost if c <= limit), key=lambda item: -item[0])
    in_band = [arch for c, arch in feasible if c >= band * limit]
    if len(in_band) >= trials:
        return random.Random(seed).sample(in_band, trials)
    return [arch for _, arch in feasible[:trials]]


_TABLE: dict[int, list[tuple[dict, float]]] = {}


def _encoder_param_table(supernet: Supernet) -> list[tuple[dict, float]]:
    if id(supernet) not in _TABLE:
        names = list(supernet.space)
        table = []
        for values in itertools.product(*(supernet.space[n].choices for n in names)):
            arch = dict(zip(names, (int(v) for v in values)))
            table.append((arch, encoder_params(supernet, arch)))
        _TABLE[id(supernet)] = table
    return _TABLE[id(supernet)]


def run_instatune(results: Results, out: Path, data: Data, tokenizer: Any, config: BenchConfig) -> None:
    state_path = out / "instatune_supernet.pt"
    datamodule = make_datamodule(tokenizer, data, config)
    trained = results.data["instatune"].get("train_s") is not None and state_path.is_file()
    if trained:
        log("instatune: supernet trained already, loading its weights")
        module, callback = build_supernet(data, config)
        module.model.load_state_dict(torch.load(state_path, weights_only=True))
    else:

        def prepare(supernet: Supernet) -> None:
            start = time.perf_counter()
            reorder_by_importance(supernet, datamodule.train_dataloader(), max_batches=config.importance_batches)
            results.data["instatune"]["reorder_s"] = time.perf_counter() - start

        module, callback = build_supernet(data, config, prepare)
        log(f"instatune: supernet {callback.supernet.space}, {callback.supernet.space.size:,} archs; fine-tuning")
        record = fine_tune(module, datamodule, config, [callback])
        torch.save(module.model.state_dict(), state_path)
        results.data["instatune"].update(record)
        results.save()
        log(f"instatune: {record}")
    supernet = callback.supernet
    supernet.set_arch(None)
    full = encoder_params(supernet, supernet.max_arch())
    results.data["instatune"]["space"] = supernet.space.to_dict()
    results.data["instatune"]["encoder_params_full"] = full

    val_loader = datamodule.val_dataloader()
    test_loader = datamodule.test_dataloader()
    evaluator = TorchmetricsEvaluator(
        supernet, torchmetrics.Accuracy(task="multiclass", num_classes=data.num_labels), val_loader
    )
    for budget in config.budgets:
        key = budget_key(budget)
        done = results.data["nas"].get(key)
        if done and (Path(done["path"]) / "config.json").is_file():
            log(f"instatune search {key}: done already")
            continue
        limit = budget * full
        storage = f"sqlite:///{out / 'nas.db'}"
        study_name = f"instatune-{key}"
        objectives = ("params",)
        start = time.perf_counter()
        candidates = search_candidates(supernet, limit, config.trials, config.band, config.seed)
        log(f"instatune search {key}: {len(candidates)} candidates, limit {limit:,.0f} encoder params")
        result = one_shot_search(
            supernet,
            evaluator,
            candidates=candidates,
            n_trials=len(candidates) + 2,  # the max/min anchors come first (the max one is over budget, not evaluated)
            metric_name="val_acc",
            objectives=objectives,
            costs={"encoder_params": functools.partial(encoder_params, supernet)},
            limits={"encoder_params": limit},
            storage=storage,
            study_name=study_name,
            seed=config.seed,
        )
        search_s = time.perf_counter() - start
        if result.best is None:
            raise RuntimeError(f"no feasible sub-network at budget {key}")
        arch = result.best_arch
        print(result.table(), flush=True)
        path = export_hf(supernet, out / f"nas_{key}", arch, tokenizer=tokenizer)
        exported = load_hf(path)
        record = {
            "arch": arch,
            "val_acc": float(result.best.values[0]),
            "encoder_params": encoder_params(supernet, arch),
            "search_s": search_s,
            "evaluated": sum(t.state.name == "COMPLETE" for t in result.study.trials),
            "test_acc": evaluate_accuracy(exported, test_loader),
            "path": str(path),
        }
        if dense_encoder_params(exported) != record["encoder_params"]:
            raise RuntimeError(
                f"the export has {dense_encoder_params(exported):,} encoder params, the supernet counts "
                f"{record['encoder_params']:,.0f}"
            )
        results.data["nas"][key] = record
        results.save()
        log(f"instatune search {key}: {record}")
        del exported
    del module, callback, supernet
    gc.collect()


# ------------------------------------------------------------------------------------------------
# 3. Torch-Pruning baseline


def _widths_for_budget(model: nn.Module, budget: float) -> tuple[int, int]:
    """Heads and FFN neurons to keep in every layer so the encoder params are at most ``budget``.

    Heads: ``round(budget * heads)``; FFN neurons: as many as fit in what is left of the budget.
    """
    config = model.config
    heads, ffn, hidden, layers = (
        config.num_attention_heads,
        config.intermediate_size,
        config.hidden_size,
        config.num_hidden_layers,
    )
    head_dim = hidden // heads
    per_head = 4 * hidden * head_dim + 3 * head_dim  # q, k, v rows (+ bias) and attention-output columns
    per_neuron = 2 * hidden + 1  # FFN input row (+ bias) and output column
    full = dense_encoder_params(model)
    fixed = full - layers * (heads * per_head + ffn * per_neuron)
    keep_heads = max(1, round(budget * heads))
    keep_ffn = int((budget * full - fixed - layers * keep_heads * per_head) // (layers * per_neuron))
    if not 0 < keep_ffn <= ffn:
        raise ValueError(f"budget {budget} cannot be met with {keep_heads} heads per layer")
    return keep_heads, keep_ffn


def prune_model(model: nn.Module, batches: Sequence[dict], budget: float, importance: str) -> dict:
    """Remove whole heads and FFN neurons from every layer with Torch-Pruning, in place."""
    import torch_pruning as tp
    from transformers.models.bert.modeling_bert import BertSelfAttention

    heads = model.config.num_attention_heads
    ffn = model.config.intermediate_size
    head_dim = model.config.hidden_size // heads
    keep_heads, keep_ffn = _widths_for_budget(model, budget)
    num_heads = {}
    for m in model.modules():
        if isinstance(m, BertSelfAttention):
            num_heads.update(
                {m.query: m.num_attention_heads, m.key: m.num_attention_heads, m.value: m.num_attention_heads}
            )
    if importance == "taylor":
        scorer = tp.importance.GroupTaylorImportance()
    elif importance == "magnitude":
        scorer = tp.importance.GroupMagnitudeImportance(p=1)
    else:
        raise ValueError(f"unknown importance {importance!r}")
    example = {k: v[:2] for k, v in batches[0].items() if k != "labels"}
    pruner = tp.pruner.MetaPruner(
        model,
        example,
        importance=scorer,
        global_pruning=False,
        # Exact counts: TP keeps int(n * (1 - ratio)) neurons and removes ceil(ratio * heads) heads.
        pruning_ratio=1 - (keep_ffn + 0.5) / ffn,
        head_pruning_ratio=(heads - keep_heads - 0.5) / heads,
        num_heads=num_heads,
        prune_num_heads=True,
        prune_head_dims=False,
        # The word embedding shares the hidden-size group: ignoring it keeps the hidden size.
        ignored_layers=[model.classifier, model.bert.pooler.dense, model.bert.embeddings.word_embeddings],
        output_transform=lambda out: out.logits.sum(),
    )
    if importance == "taylor":
        model.eval()  # as lightning_nas.importance scores: no dropout
        model.zero_grad(set_to_none=True)
        for batch in batches:
            model(**batch).loss.backward()
    for group in pruner.step(interactive=True):
        for dep, idxs in group:
            if dep.target.module in num_heads and dep.handler.__name__ == "prune_out_channels":
                removed = sorted(int(i) for i in idxs)
                whole = sorted({i // head_dim for i in removed})
                if removed != [h * head_dim + j for h in whole for j in range(head_dim)]:
                    raise RuntimeError("Torch-Pruning removed parts of heads, not whole heads")
        group.prune()
    model.zero_grad(set_to_none=True)
    for m in model.modules():
        if isinstance(m, BertSelfAttention):
            m.num_attention_heads = m.query.out_features // m.attention_head_size
            m.all_head_size = m.query.out_features
    layers = model.bert.encoder.layer
    shapes = {(layer.attention.self.num_attention_heads, layer.intermediate.dense.out_features) for layer in layers}
    if shapes != {(keep_heads, keep_ffn)}:
        raise RuntimeError(f"pruned to {shapes}, wanted {(keep_heads, keep_ffn)} in every layer")
    return {"heads": keep_heads, "ffn": keep_ffn}


def run_prune(results: Results, out: Path, data: Data, tokenizer: Any, config: BenchConfig) -> None:
    from transformers import AutoModelForSequenceClassification

    full = None
    for budget in config.budgets:
        key = budget_key(budget)
        path = out / f"prune_{key}.pt"
        done = results.data["prune"].get(key)
        if done and Path(done["path"]).is_file():
            log(f"prune {key}: done already")
            continue
        datamodule = make_datamodule(tokenizer, data, config)
        L.seed_everything(config.seed, verbose=False)
        model = AutoModelForSequenceClassification.from_pretrained(minilm_model_dir(), num_labels=data.num_labels)
        full = dense_encoder_params(model)
        # The same first batches that the InstaTune run reorders by importance with.
        batches = list(itertools.islice(datamodule.train_dataloader(), config.importance_batches))
        start = time.perf_counter()
        widths = prune_model(model, batches, budget, config.prune_importance)
        prune_s = time.perf_counter() - start
        model.train()
        log(
            f"prune {key}: {widths}, encoder params {dense_encoder_params(model) / full:.3f} "
            "of the original; fine-tuning"
        )
        module = new_classifier(data, config, model)
        record = fine_tune(module, datamodule, config, [])
        record.update(widths)
        record["prune_s"] = prune_s
        record["encoder_params"] = dense_encoder_params(module.model)
        record["test_acc"] = evaluate_accuracy(module.model, datamodule.test_dataloader())
        torch.save(module.model, path)
        record["path"] = str(path)
        results.data["prune"][key] = record
        results.save()
        log(f"prune {key}: {record}")
        del module, model
        gc.collect()


# ------------------------------------------------------------------------------------------------
# measurements: params, FLOPs, latency of the saved models


def load_models(results: Results) -> dict[str, nn.Module]:
    """The saved reference, exported InstaTune and pruned models, by row name."""
    from transformers import AutoModelForSequenceClassification

    models: dict[str, nn.Module] = {}
    reference = results.data["reference"]
    if reference:
        models["reference"] = AutoModelForSequenceClassification.from_pretrained(reference["path"]).eval()
    for key, record in sorted(results.data["nas"].items(), reverse=True):
        models[f"instatune@{key}"] = load_hf(record["path"])
    for key, record in sorted(results.data["prune"].items(), reverse=True):
        models[f"prune@{key}"] = torch.load(record["path"], weights_only=False).eval()
    return models


def wait_for_quiet(max_load: float, max_wait_s: float) -> float:
    """Wait until the 1-minute load average is below ``max_load`` (at most ``max_wait_s``)."""
    start = time.perf_counter()
    load = os.getloadavg()[0]
    if load >= max_load:
        log(f"waiting for the load average to fall below {max_load} (at most {max_wait_s:.0f} s)")
    while load >= max_load and time.perf_counter() - start < max_wait_s:
        time.sleep(15)
        load = os.getloadavg()[0]
    return load


def measure(results: Results, args: argparse.Namespace) -> None:
    """Params, FLOPs (batch 1 x 128) and interleaved latency at batch 32 and 1 (x 128) of every model."""
    models = load_models(results)
    measurements: dict[str, Any] = {"models": {}}
    for name, model in models.items():
        measurements["models"][name] = {
            "params": count_params(model),
            "encoder_params": dense_encoder_params(model),
            "flops": count_flops(model, timing_inputs(1)),
        }
    gc.collect()
    load_before = wait_for_quiet(args.max_load, args.max_wait)
    log(f"timing {len(models)} models, {args.rounds} interleaved rounds, {torch.get_num_threads()} threads")
    times: dict[str, dict[str, list[float]]] = {name: {"b32": [], "b1": []} for name in models}
    loads = [load_before]
    for _ in range(args.rounds):
        for name, model in models.items():
            times[name]["b32"].append(measure_latency(model, timing_inputs(32), warmup=2, repeats=args.repeats_b32))
            times[name]["b1"].append(measure_latency(model, timing_inputs(1), warmup=5, repeats=args.repeats_b1))
        loads.append(os.getloadavg()[0])
    for name in models:
        # The fastest round's median: other jobs on the machine only ever slow a round down.
        measurements["models"][name]["latency_b32_ms"] = min(times[name]["b32"]) * 1e3
        measurements["models"][name]["latency_b1_ms"] = min(times[name]["b1"]) * 1e3
        measurements["models"][name]["latency_rounds_ms"] = {
            k: [round(v * 1e3, 2) for v in values] for k, values in times[name].items()
        }
    measurements.update(
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        loadavg_1m=loads,
        max_load=args.max_load,
        quiet=load_before < args.max_load,
        measured_at=time.strftime("%Y-%m-%d %H:%M:%S"),
    )
    results.data["measurements"] = measurements
    results.save()
    log(f"timing done, load averages {loads}")


# ------------------------------------------------------------------------------------------------
# report


def report(results: Results) -> tuple[str, list[str]]:
    """The markdown table and the goal checks."""
    data = results.data
    m = data["measurements"].get("models", {})
    ref = data["reference"]
    if not ref or "reference" not in m:
        return "(no reference measurements yet)", []
    ref_m = m["reference"]
    ref_enc, ref_acc = ref_m["encoder_params"], ref["test_acc"]
    header = (
        "| method | budget | architecture | encoder params (% orig) | total params | test acc (% of ref) | "
        "FLOPs b1x128 (reduction) | latency b32x128 ms (speed-up) | latency b1x128 ms (speed-up) | "
        "speed-up / FLOPs red. (b32, b1) |"
    )
    lines = [header, "|" + "---|" * 10]
    rows: list[tuple[str, str, dict, dict]] = [("reference (full fine-tune)", "-", ref, ref_m)]
    for key in sorted(data["nas"], reverse=True):
        rows.append(("InstaTune + search", key, data["nas"][key], m.get(f"instatune@{key}", {})))
        if key in data["prune"]:
            rows.append(("Torch-Pruning + fine-tune", key, data["prune"][key], m.get(f"prune@{key}", {})))
    for key in sorted(set(data["prune"]) - set(data["nas"]), reverse=True):
        rows.append(("Torch-Pruning + fine-tune", key, data["prune"][key], m.get(f"prune@{key}", {})))
    for method, key, record, meas in rows:
        if not meas:
            lines.append(f"| {method} | {key} | (not measured) |" + " |" * 7)
            continue
        if method.startswith("InstaTune"):
            arch = record["arch"]
            shape = f"L{arch.get('depth', 6)} H{arch.get('hidden', 384)} heads{arch['heads']} ffn{arch['ffn']}"
        elif method.startswith("Torch"):
            shape = f"L6 H384 heads{record['heads']} ffn{record['ffn']}"
        else:
            shape = "L6 H384 heads12 ffn1536"
        reduction = ref_m["flops"] / meas["flops"]
        s32 = ref_m["latency_b32_ms"] / meas["latency_b32_ms"]
        s1 = ref_m["latency_b1_ms"] / meas["latency_b1_ms"]
        lines.append(
            f"| {method} | {key} | {shape} | {meas['encoder_params'] / 1e6:.2f}M "
            f"({100 * meas['encoder_params'] / ref_enc:.1f}%) | {meas['params'] / 1e6:.2f}M | "
            f"{100 * record['test_acc']:.2f}% ({100 * record['test_acc'] / ref_acc:.1f}%) | "
            f"{meas['flops'] / 1e9:.2f}G ({reduction:.2f}x) | {meas['latency_b32_ms']:.0f} ({s32:.2f}x) | "
            f"{meas['latency_b1_ms']:.1f} ({s1:.2f}x) | {s32 / reduction:.2f}, {s1 / reduction:.2f} |"
        )

    goals: list[str] = []
    nas, prune = data["nas"], data["prune"]
    half = budget_key(0.5)
    if half in nas:
        kept = nas[half]["test_acc"] / ref_acc
        goals.append(
            f"{'MET' if kept >= 0.98 else 'NOT MET'}: at 50% encoder params InstaTune keeps "
            f"{100 * kept:.1f}% of the reference accuracy (goal >= 98%)"
        )
    both = sorted(set(nas) & set(prune), reverse=True)
    if both:
        wins = {k: nas[k]["test_acc"] - prune[k]["test_acc"] for k in both}
        detail = ", ".join(f"{k}: {100 * d:+.2f} pt" for k, d in wins.items())
        goals.append(
            f"{'MET' if all(d > 0 for d in wins.values()) else 'NOT MET'}: InstaTune beats the "
            f"baseline at every budget (test acc difference {detail})"
        )
    ratios = []
    for key in sorted(nas, reverse=True):
        meas = m.get(f"instatune@{key}")
        if meas:
            reduction = ref_m["flops"] / meas["flops"]
            ratios.append(
                (
                    key,
                    ref_m["latency_b32_ms"] / meas["latency_b32_ms"] / reduction,
                    ref_m["latency_b1_ms"] / meas["latency_b1_ms"] / reduction,
                )
            )
    if ratios:
        ok32 = all(r32 >= 0.8 for _, r32, _ in ratios)
        ok1 = all(r1 >= 0.8 for _, _, r1 in ratios)
        detail = ", ".join(f"{k}: {r32:.2f} / {r1:.2f}" for k, r32, r1 in ratios)
        goals.append(
            f"{'MET' if ok32 else 'NOT MET'} at batch 32, {'MET' if ok1 else 'NOT MET'} at batch 1: "
            f"InstaTune latency speed-up >= 0.8 x FLOPs reduction (ratio b32 / b1 per budget: {detail})"
        )
    return "\n".join(lines), goals


def describe_run(results: Results) -> str:
    data = results.data
    cfg = data["config"]
    space = data.get("instatune", {}).get("space", {})
    students = "within the largest budget" if cfg.get("students_within_budget") else "from the whole space"
    parts = [
        f"supernet: strategy {cfg.get('strategy', 'instatune')}, random students drawn {students}, "
        f"hidden size {'elastic' if cfg.get('elastic_hidden', True) else 'fixed'}.",
        f"search space: {space} ({'elastic' if 'depth' in space else 'fixed'} depth); "
        f"band [{cfg['band']} x budget, budget], {cfg['trials']} sub-networks per budget.",
        f"budget B: {cfg['epochs']} epoch(s) on {data.get('n_fit', '?')} fit examples, lr {cfg['lr']:g}, "
        f"batch {cfg['batch_size']}, max_length {cfg['max_length']} (same for every fine-tuning); "
        f"validation {data.get('n_val', '?')} examples, test {data.get('n_test', '?')} examples; "
        "no extra fine-tuning of extracted sub-networks.",
    ]
    ref, it = data.get("reference") or {}, data.get("instatune") or {}
    if ref and it.get("train_s"):
        parts.append(
            f"fine-tuning wall time: reference {ref['train_s']:.0f} s, InstaTune {it['train_s']:.0f} s "
            f"({it['train_s'] / ref['train_s']:.2f}x), pruned models "
            + ", ".join(f"{k}: {v['train_s']:.0f} s" for k, v in sorted(data["prune"].items(), reverse=True))
            + f"; InstaTune val acc (full model) {it.get('val_acc_full', float('nan')):.4f}, "
            f"reference {ref.get('val_acc_full', float('nan')):.4f}."
        )
    nas = data.get("nas") or {}
    if nas:
        parts.append(
            "search: "
            + ", ".join(
                f"{k}: {v['evaluated']} sub-networks evaluated in {v['search_s']:.0f} s, best val acc "
                f"{v['val_acc']:.4f}"
                for k, v in sorted(nas.items(), reverse=True)
            )
            + "."
        )
    meas = data.get("measurements") or {}
    if meas.get("loadavg_1m"):
        parts.append(
            f"latency: torch {meas['torch']}, {meas['threads']} threads, fastest of {len(meas['loadavg_1m']) - 1} "
            f"interleaved rounds, 1-min load average before/after rounds "
            f"{', '.join(f'{x:.2f}' for x in meas['loadavg_1m'])}"
            + ("" if meas.get("quiet") else f" (NOT quiet: load stayed >= {meas['max_load']})")
            + "."
        )
    if data.get("baselines_from"):
        parts.append(f"reference and pruned models reused from {data['baselines_from']} (same settings).")
    if data.get("wall_s"):
        parts.append(f"total wall time of the run: {data['wall_s'] / 60:.1f} min.")
    return "\n".join(f"- {p}" for p in parts)


# ------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=None, help="run directory (default nas_runs/minilm_bench[_quick])")
    parser.add_argument("--max-fit", type=int, default=None, help="fit examples (default: the whole fit split, ~8.9k)")
    parser.add_argument("--max-val", type=int, default=None, help="validation examples (default: all, ~1k)")
    parser.add_argument("--max-test", type=int, default=None, help="test examples (default: all 2,909)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--importance-batches", type=int, default=8)
    parser.add_argument(
        "--budgets",
        type=float,
        nargs="+",
        default=[0.75, 0.5, 0.33],
        help="encoder-parameter budgets, fractions of the original",
    )
    parser.add_argument("--trials", type=int, default=20, help="sub-networks evaluated per budget")
    parser.add_argument("--band", type=float, default=0.85, help="search the archs in [band*budget, budget]")
    parser.add_argument(
        "--elastic-depth",
        action="store_true",
        help="also make the depth elastic (2..6 layers); off by default, see the module docstring",
    )
    parser.add_argument(
        "--elastic-hidden", action="store_true", help="also make the hidden size elastic (default: heads and FFN)"
    )
    parser.add_argument(
        "--strategy", choices=("instatune", "sandwich"), default="instatune", help="supernet training strategy"
    )
    parser.add_argument(
        "--width-steps",
        type=int,
        default=24,
        help="width choices k/N of the original, k = N/4..N (8: 3, 4, 6, ... 12 heads; 24: FFN in steps of 64)",
    )
    parser.add_argument(
        "--student-label-weight",
        type=float,
        default=0.0,
        help="students' loss: (1 - w) x distillation + w x cross-entropy on the labels (default 0)",
    )
    parser.add_argument(
        "--students-anywhere",
        action="store_true",
        help="draw the supernet's random students from the whole space (default: within the largest budget)",
    )
    parser.add_argument(
        "--baselines-from",
        type=Path,
        default=None,
        help="reuse the reference and pruned models of this run directory (same data/training settings)",
    )
    parser.add_argument("--prune-importance", choices=("taylor", "magnitude"), default="taylor")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-load", type=float, default=2.5, help="time only below this 1-min load average")
    parser.add_argument("--max-wait", type=float, default=1800, help="seconds to wait for that load at most")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved latency rounds (the fastest counts)")
    parser.add_argument("--repeats-b32", type=int, default=5)
    parser.add_argument("--repeats-b1", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="pipeline check: tiny data, 3 trials, 1 round")
    parser.add_argument("--timing-only", action="store_true", help="re-measure FLOPs/latency of the saved models")
    parser.add_argument("--fresh", action="store_true", help="ignore an existing results.json in --out")
    args = parser.parse_args(argv)
    if args.quick:
        args.max_fit, args.max_val, args.max_test = 256, 128, 256
        args.trials, args.rounds, args.repeats_b32, args.repeats_b1 = 3, 1, 2, 5
        args.importance_batches, args.max_wait = 2, 0
    if args.out is None:
        args.out = Path("nas_runs/minilm_bench_quick" if args.quick else "nas_runs/minilm_bench")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    config = BenchConfig(
        max_fit=args.max_fit,
        max_val=args.max_val,
        max_test=args.max_test,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        max_length=args.max_length,
        importance_batches=args.importance_batches,
        budgets=tuple(args.budgets),
        trials=args.trials,
        band=args.band,
        prune_importance=args.prune_importance,
        seed=args.seed,
        elastic_depth=args.elastic_depth,
        elastic_hidden=args.elastic_hidden,
        strategy=args.strategy,
        students_within_budget=not args.students_anywhere,
        width_steps=args.width_steps,
        student_label_weight=args.student_label_weight,
    )
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.fresh and not args.timing_only:
        (out / "nas.db").unlink(missing_ok=True)  # the searches' Optuna studies
    if args.timing_only and not (out / "results.json").is_file():
        raise SystemExit(f"--timing-only: no {out / 'results.json'} to re-measure")
    results = Results(
        out / "results.json", config, fresh=args.fresh and not args.timing_only, timing_only=args.timing_only
    )
    start = time.perf_counter()
    if not args.timing_only:
        data = load_data(config)
        results.data.update(n_fit=len(data.fit[0]), n_val=len(data.val[0]), n_test=len(data.test[0]))
        if args.baselines_from is not None:
            reuse_baselines(results, args.baselines_from)
        tokenizer = AutoTokenizer.from_pretrained(minilm_model_dir())
        log(f"fit {len(data.fit[0])}, val {len(data.val[0])}, test {len(data.test[0])} examples; out {out}")
        run_reference(results, out, data, tokenizer, config)
        run_instatune(results, out, data, tokenizer, config)
        run_prune(results, out, data, tokenizer, config)
    measure(results, args)
    if not args.timing_only:
        results.data.setdefault("wall_s_runs", []).append(time.perf_counter() - start)
        results.data["wall_s"] = sum(results.data["wall_s_runs"])
        results.save()
    table, goals = report(results)
    print()
    print(table)
    print()
    print(describe_run(results))
    for goal in goals:
        print(f"- {goal}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
