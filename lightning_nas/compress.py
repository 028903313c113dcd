"""Compress a pretrained Hugging Face model on the user's task (``lightning-nas compress``).

The pretrained model becomes elastic while it is fine-tuned on the task (InstaTune): each layer's
heads and FFN neurons are first sorted by importance so every sub-network keeps the part worth
keeping, then each step trains the full model on labels and one random sub-network within the
budget, distilled from it. An Optuna study then searches sub-networks (the task's metric vs
parameters vs the measured latency of the extracted model) under the budget on the parameters
outside the embeddings, and the best one is written with ``save_pretrained``. Several budgets
share the fine-tuning (students within the largest) and get a study and an export each.

What depends on the task (the Lightning module and data, the searched metric, the test
evaluation, the report's columns) is a :class:`CompressTask` in :data:`TASKS`; the job itself
(checks, fine-tuning with checkpoints, search, export, report) is written once, in
:func:`compress`. The module imports no torch at import time, so the CLI can list the tasks
instantly.
"""

from __future__ import annotations

import functools
import itertools
import json
import numbers
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import lightning as L
    from torch import nn

    from lightning_nas._jobs import Console
    from lightning_nas.datasets import DataSource

__all__ = [
    "TASKS",
    "NARROW_FFN_FRACTIONS",
    "WIDTH_FRACTIONS",
    "CompressSettings",
    "CompressTask",
    "CompressionReport",
    "CausalLMTask",
    "SequenceClassificationTask",
    "compress",
    "dense_encoder_params",
    "encoder_params",
    "infer_task",
    "register_task",
    "width_fractions",
]


def width_fractions(steps: int) -> tuple[float, ...]:
    """Choices of every width: ``k / steps`` of the original for ``k`` from ``steps / 4`` (rounded up) to ``steps``.

    Example:
        >>> width_fractions(8)
        (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
    """
    if steps < 1:
        raise ValueError(f"width steps must be >= 1, got {steps}")
    return tuple(k / steps for k in range(-(-steps // 4), steps + 1))


#: Default width choices of :func:`compress`: 1/4 to all of each width in steps of 1/24.
WIDTH_FRACTIONS = width_fractions(24)

#: FFN choices added below the width fractions where a stock config fixes the heads (BERT-like
#: families): with attention a third of MiniLM's encoder, half of it needs the FFN below 1/4.
NARROW_FFN_FRACTIONS = tuple(k / 24 for k in range(1, 24))

_RUN_FILE = "run.json"
_CHECKPOINTS = "checkpoints"


def encoder_params(supernet: Any, arch: dict[str, int]) -> float:
    """Parameters of a sub-network outside its ``nn.Embedding`` modules (token, position, type embeddings).

    Everything else counts: the encoder layers, the embeddings' LayerNorm, the pooler and the task
    head. The same rule on a plain model is :func:`dense_encoder_params`, so the figure the report
    prints for an export equals ``dense_encoder_params`` of the reloaded model.
    """
    return float(supernet.num_params(arch) - supernet.num_params(arch, where=_is_embedding))


def _is_embedding(name: str, module: nn.Module) -> bool:
    from torch import nn

    return isinstance(module, nn.Embedding)


def dense_encoder_params(model: nn.Module) -> int:
    """:func:`encoder_params` of a plain model: its parameters outside ``nn.Embedding`` modules."""
    from torch import nn

    embeddings = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in embeddings)


@dataclass(frozen=True)
class CompressSettings:
    """Everything :func:`compress` was asked, as the tasks see it (see :func:`compress` for each field)."""

    model_dir: Path
    train: Any = None
    validation: Any = None
    test: Any = None
    dataset: str | None = None
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    label_names: Sequence[str] | None = None
    max_length: int = 64
    batch_size: int = 32
    lr: float = 1e-4
    max_train: int | None = None
    max_test: int | None = None
    seed: int = 0
    block_size: int | None = None


class CompressTask:
    """What :func:`compress` needs to know about one kind of task; subclasses go in :data:`TASKS`.

    A task reads and checks its data before any model is loaded (:meth:`load_data`), builds the
    ordinary Lightning module and datamodule (:meth:`build`), names the metric the module logs
    in validation and the search optimises (:attr:`metric`, :attr:`direction`), and evaluates
    a model on the test split (:meth:`evaluate`, whose keys are the :attr:`columns` of the
    report).

    Attributes:
        name: The ``--task`` value.
        description: One line for ``--help``.
        metric: Name logged by the module's ``validation_step``, searched by the study.
        direction: ``"maximize"`` or ``"minimize"``.
        columns: ``(key, header, format)`` of the figures :meth:`evaluate` returns.
        auto_class: The ``transformers`` Auto class that reloads an export.
        hidden_loss: Recovery's default hidden-state loss (``compress(recover_hidden_loss=None)``):
            ``"mse"`` or ``"normalised"`` (see :func:`~lightning_nas.recovery.hidden_state_loss`).
        label_weight: Recovery's default weight of the labels' own loss
            (``compress(recover_label_weight=None)``).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    metric: ClassVar[str]
    direction: ClassVar[str]
    columns: ClassVar[tuple[tuple[str, str, str], ...]]
    auto_class: ClassVar[str]
    hidden_loss: ClassVar[str] = "mse"
    label_weight: ClassVar[float] = 0.0

    def __init__(self, settings: CompressSettings) -> None:
        self.settings = settings

    def load_data(self, tokenizer: Any, console: Console) -> Any:
        """Read and check the data; print what was inferred. Runs before any model is loaded."""
        raise NotImplementedError

    def build(self, data: Any, tokenizer: Any) -> tuple[L.LightningModule, L.LightningDataModule]:
        """The Lightning module (the pretrained model inside, at attribute ``model``) and datamodule."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, datamodule: L.LightningDataModule) -> dict[str, float]:
        """Figures of ``model`` on the test split, keyed as in :attr:`columns`."""
        raise NotImplementedError

    def latency_inputs(self, batch: int, length: int = 128) -> dict[str, Any]:
        """Inputs of the latency measurement."""
        import torch

        ids = torch.ones(batch, length, dtype=torch.long)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def fingerprint(self) -> dict[str, Any]:
        """What determines the trained model, for resuming only a run of the same settings."""
        settings = asdict(self.settings)
        for key in ("train", "validation", "test"):
            settings[key] = _source_fingerprint(getattr(self.settings, key))
        settings.pop("max_test")
        return {
            "task": self.name,
            **{k: v if isinstance(v, (int, float, str, type(None))) else str(v) for k, v in settings.items()},
        }


#: The tasks :func:`compress` knows, by ``--task`` name.
TASKS: dict[str, type[CompressTask]] = {}


def register_task(task: type[CompressTask]) -> type[CompressTask]:
    """Add a :class:`CompressTask` subclass to :data:`TASKS` (usable as a class decorator)."""
    TASKS[task.name] = task
    return task


def _source_fingerprint(source: Any) -> Any:
    """A file by path, size and modification time (an edited file is another run); a Dataset by its hash."""
    if source is None:
        return None
    if isinstance(source, str | os.PathLike):
        path = Path(source).resolve()
        marker = next((path / n for n in ("state.json", "dataset_dict.json") if (path / n).is_file()), path)
        stat = marker.stat() if marker.exists() else None
        return f"{path} ({stat.st_size} bytes, mtime {stat.st_mtime_ns})" if stat else str(path)
    fingerprint = getattr(source, "_fingerprint", None)  # a datasets.Dataset
    return fingerprint or f"{type(source).__module__}.{type(source).__qualname__}"


@register_task
class SequenceClassificationTask(CompressTask):
    """Text (or text-pair) classification with ``AutoModelForSequenceClassification``; accuracy."""

    name = "sequence-classification"
    description = "text or text-pair classification (accuracy)"
    metric = "val_acc"
    direction = "maximize"
    columns = (("test_acc", "test accuracy", "{:.4f}"),)
    auto_class = "AutoModelForSequenceClassification"
    # The teacher (the supernet's full model after a short fine-tuning) is no oracle: with the labels
    # the students get past it (benchmarks/RESULTS.md, compress vs Torch-Pruning with label loss).
    label_weight = 1.0

    def load_data(self, tokenizer: Any, console: Console) -> Any:
        import lightning as L

        from lightning_nas.datasets import bundled_text_classification, read_text_classification

        s = self.settings
        if isinstance(s.train, L.LightningDataModule):
            if s.validation is not None or s.test is not None:
                raise ValueError("with a LightningDataModule as train=, pass no validation= / test=")
            names = s.label_names or getattr(s.train, "label_names", None)
            if not names or len(names) < 2:
                raise ValueError("a LightningDataModule needs label_names= (two or more; or a .label_names attribute)")
            console.phase("data", f"{type(s.train).__name__} with {len(names)} labels")
            return s.train
        if s.train is None:
            splits = bundled_text_classification(
                s.dataset or "rotten_tomatoes", max_train=s.max_train, max_test=s.max_test
            )
        else:
            splits = read_text_classification(
                s.train,
                s.validation,
                s.test,
                text_column=s.text_column,
                text_pair_column=s.text_pair_column,
                label_column=s.label_column,
                max_train=s.max_train,
                max_test=s.max_test,
                seed=s.seed,
            )
        sizes = [len(split.texts) for split in (splits.train, splits.validation, splits.test)]
        console.phase(
            "data", "{} train / {} validation / {} test examples, ".format(*sizes) + f"{splits.num_labels} labels"
        )
        for note in splits.notes:
            console.say(f"  {note}")
        return splits

    def build(self, data: Any, tokenizer: Any) -> tuple[L.LightningModule, L.LightningDataModule]:
        import lightning as L

        from lightning_nas.apps import TextClassifier, TextDataModule

        s = self.settings
        if isinstance(data, L.LightningDataModule):
            names = list(s.label_names or data.label_names)
            datamodule = data
        else:
            names = list(data.label_names)
            datamodule = TextDataModule(
                tokenizer, data.train, data.validation, data.test, s.max_length, s.batch_size, s.seed
            )
        module = TextClassifier(s.model_dir, len(names), lr=s.lr, max_length=s.max_length, label_names=names)
        return module, datamodule

    def evaluate(self, model: nn.Module, datamodule: L.LightningDataModule) -> dict[str, float]:
        from lightning_nas.apps import evaluate_accuracy

        return {"test_acc": evaluate_accuracy(model, datamodule.test_dataloader())}


@register_task
class CausalLMTask(CompressTask):
    """Causal language modelling with ``AutoModelForCausalLM`` on packed blocks of text; perplexity.

    Texts come from ``train`` (any format of :func:`~lightning_nas.datasets.read_table`; plain
    text gives one text per line) or, without it, the bundled reviews. The search minimises the
    validation loss per token (``exp`` of it is the perplexity); the report gives the test
    perplexity and greedy generation speed at batch 1.
    """

    name = "causal-lm"
    description = "causal language modelling on blocks of --block-size tokens (perplexity, tokens/s)"
    metric = "val_loss"
    direction = "minimize"
    columns = (
        ("test_perplexity", "test perplexity", "{:.2f}"),
        ("tokens_per_s_b1", "tokens/s b1 (greedy)", "{:.1f}"),
    )
    auto_class = "AutoModelForCausalLM"
    # A pre-norm decoder's residual stream grows with depth and carries a few huge channels: the plain
    # MSE is dominated by them and recovered worse than logits alone (benchmarks/RESULTS.md).
    hidden_loss = "normalised"

    def block_size(self) -> int:
        """``--block-size``, else 128 tokens capped by the model's ``max_position_embeddings``."""
        if self.settings.block_size is not None:
            return self.settings.block_size
        config = json.loads((self.settings.model_dir / "config.json").read_text())
        return min(128, int(config.get("max_position_embeddings") or 128))

    def load_data(self, tokenizer: Any, console: Console) -> Any:
        import lightning as L

        from lightning_nas.apps.causal_lm import CausalLMDataModule
        from lightning_nas.datasets import bundled_text_classification

        s = self.settings
        if isinstance(s.train, L.LightningDataModule):
            console.phase("data", f"{type(s.train).__name__} (blocks as the datamodule yields them)")
            return s.train
        if tokenizer.eos_token_id is None:
            raise ValueError(f"{s.model_dir}: the tokenizer has no eos token to separate the packed texts")
        if s.train is None:
            bundled = bundled_text_classification(
                s.dataset or "rotten_tomatoes", max_train=s.max_train, max_test=s.max_test
            )
            splits = {
                "train": bundled.train.texts,
                "validation": bundled.validation.texts,
                "test": bundled.test.texts,
            }
        else:
            splits = {
                role: None if source is None else _read_texts(source, role, s.text_column)
                for role, source in (("train", s.train), ("validation", s.validation), ("test", s.test))
            }
            if s.max_train is not None:
                splits["train"] = splits["train"][: s.max_train]
            if s.max_test is not None and splits["test"] is not None:
                splits["test"] = splits["test"][: s.max_test]
        block_size = self.block_size()
        datamodule = CausalLMDataModule(
            tokenizer,
            splits["train"],
            splits["validation"],
            splits["test"],
            block_size=block_size,
            batch_size=s.batch_size,
            seed=s.seed,
        )
        datamodule.setup()  # tokenise and pack now: too little text is an error before any model is loaded
        sizes = [len(datamodule.blocks[split]) for split in ("train", "validation", "test")]
        console.phase("data", "{} train / {} validation / {} test blocks".format(*sizes) + f" of {block_size} tokens")
        if datamodule.carved:
            console.say(f"  {' and '.join(datamodule.carved)} texts carved from the training texts (seed {s.seed})")
        return datamodule

    def build(self, data: Any, tokenizer: Any) -> tuple[L.LightningModule, L.LightningDataModule]:
        from lightning_nas.apps.causal_lm import CausalLM

        return CausalLM(self.settings.model_dir, lr=self.settings.lr, block_size=self.block_size()), data

    def evaluate(self, model: nn.Module, datamodule: L.LightningDataModule) -> dict[str, float]:
        from lightning_nas.apps.causal_lm import evaluate_perplexity, tokens_per_second

        return {
            "test_perplexity": evaluate_perplexity(model, datamodule.test_dataloader()),
            "tokens_per_s_b1": tokens_per_second(model),
        }

    def latency_inputs(self, batch: int, length: int = 128) -> dict[str, Any]:
        return super().latency_inputs(batch, min(length, self.block_size()))


def _read_texts(source: Any, role: str, column: str | None) -> list[str]:
    """The texts of one split: a file, a ``save_to_disk`` folder or a ``datasets.Dataset``."""
    from lightning_nas.datasets._files import _TEXT_COLUMNS, _as_dataset, _name, _pick, _texts

    table = _as_dataset(source, role)
    name = _name(source, role)
    if not hasattr(table, "column_names") or isinstance(table.column_names, dict):
        raise ValueError(f"{name}: holds several splits; pass one split per --train / --validation / --test")
    texts = _texts(table, _pick(table.column_names, column, _TEXT_COLUMNS, "--text-column", name), name)
    texts = [text for text in texts if text.strip()]
    if not texts:
        raise ValueError(f"{name}: no text in it")
    return texts


def infer_task(model_dir: str | Path) -> str:
    """The task a model directory was saved for: ``causal-lm`` for ``*ForCausalLM`` / ``*LMHeadModel``.

    Reads ``config.json`` only (no torch). Anything else is ``sequence-classification``.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
        >>> infer_task(folder)
        'causal-lm'
    """
    try:
        architectures = json.loads((Path(model_dir) / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError):
        return "sequence-classification"  # compress's own checks name the unreadable directory
    causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
    return "causal-lm" if causal else "sequence-classification"


_GENERIC_COLUMNS = (
    ("params", "params (all)", "{:,}"),
    ("encoder_params", "params outside nn.Embedding", "{:,.0f}"),
)
_COST_COLUMNS = (
    ("latency_b32_ms", "latency b32 (ms)", "{:.1f}"),
    ("latency_b1_ms", "latency b1 (ms)", "{:.1f}"),
    ("size_mb", "weights (MB)", "{:.1f}"),
)


@dataclass
class CompressionReport:
    """Before/after figures of :func:`compress` and where everything went.

    ``rows`` holds the fine-tuned original, then one row per budget, largest first. With several
    budgets, ``export_path`` is the smallest budget's export; ``export_paths`` and
    ``study_names`` give each budget's (keyed by the fraction), all studies in ``study_storage``.
    """

    rows: list[dict[str, Any]]
    export_path: Path
    study_storage: str
    columns: tuple[tuple[str, str, str], ...] = field(default=(("test_acc", "test accuracy", "{:.4f}"),))
    report_path: Path | None = None
    checkpoint_dir: Path | None = None
    export_paths: dict[float, Path] = field(default_factory=dict)
    study_names: dict[float, str] = field(default_factory=dict)

    def table(self) -> str:
        """The rows as a text table, one column per figure, headers saying what is counted."""
        from lightning_nas._table import format_table

        columns = (*_GENERIC_COLUMNS, *self.columns, *_COST_COLUMNS)
        header = ["model", *(title for _, title, _ in columns)]
        body = [[r["model"], *(fmt.format(r[key]) for key, _, fmt in columns)] for r in self.rows]
        return format_table(header, body)


def _percent(fraction: float) -> str:
    """A budget as its study, export and report row name it: percent, two decimals at most.

    Example:
        >>> [_percent(f) for f in (0.75, 0.5, 0.33, 0.125, 1 / 3)]
        ['75', '50', '33', '12.5', '33.33']
    """
    return f"{round(fraction * 100, 2):g}"


def _check_budgets(max_encoder_params: float | Sequence[float]) -> tuple[float, ...]:
    """The budgets of a run, largest first; a one-line error naming one out of (0, 1] or given twice.

    Example:
        >>> _check_budgets([0.33, 0.75, 0.5])
        (0.75, 0.5, 0.33)
        >>> _check_budgets([0.5, 0.3333, 0.33331])
        Traceback (most recent call last):
        ...
        ValueError: --max-params (max_encoder_params): 0.3333 and 0.33331 are one budget (33.33%); give each budget once
    """
    several = not isinstance(max_encoder_params, numbers.Real | str)
    budgets = list(max_encoder_params) if several else [max_encoder_params]
    if not budgets:
        raise ValueError("--max-params (max_encoder_params) needs at least one budget")
    for budget in budgets:
        if isinstance(budget, bool) or not isinstance(budget, numbers.Real) or not 0 < budget <= 1:
            raise ValueError(f"max_encoder_params is a fraction in (0, 1], got {budget!r}")
    named: dict[str, float] = {}
    for budget in budgets:
        label = _percent(budget)
        if label in named:
            other = named[label]
            same = f"{budget:g} is given twice" if other == budget else f"{other:g} and {budget:g} are one budget"
            raise ValueError(f"--max-params (max_encoder_params): {same} ({label}%); give each budget once")
        named[label] = budget
    return tuple(sorted((float(b) for b in budgets), reverse=True))


def _check_space(
    model_dir: Path, auto_class: str, max_encoder_params: float, options: dict[str, Any]
) -> dict[str, Any]:
    """The adapter options of the run, checked on the model built on the meta device (no weights, no memory).

    Refuses, before anything is read or written, a model no Hugging Face adapter handles, an
    option its space cannot honour, and a budget below the smallest sub-network of the space.
    Where the stock config fixes the heads, the FFN choices reach down to 1/24 (:data:`NARROW_FFN_FRACTIONS`).
    """
    import torch
    import transformers

    from lightning_nas.adapters import find_adapter
    from lightning_nas.supernet import Supernet

    if options["per_layer"] and options["stock_config"]:
        raise ValueError(
            "--per-layer (per_layer=True) needs --allow-custom-config (stock_config=False): "
            "a stock config gives all layers one width"
        )
    try:
        config = transformers.AutoConfig.from_pretrained(model_dir)
    except (OSError, ValueError) as err:
        raise ValueError(f"{model_dir / 'config.json'}: {str(err).splitlines()[0]}") from err
    with torch.device("meta"):
        model = getattr(transformers, auto_class).from_config(config)
    adapter = find_adapter(model)  # raises, naming the class and why no adapter handles it
    # Token ids only: an attention mask makes transformers ask data-dependent questions meta tensors cannot answer.
    example = {"input_ids": torch.ones(1, 8, dtype=torch.long, device="meta")}
    net = Supernet(model, example_input=example, adapter=adapter, **options)
    if options["stock_config"] and "heads" not in net.space and "ffn" in net.space:
        options = {**options, "ffn_fractions": tuple(sorted({*NARROW_FFN_FRACTIONS, *options["width_fractions"]}))}
        net.restore()
        net = Supernet(model, example_input=example, adapter=adapter, **options)
    for flag, option, dimension in (("--elastic-hidden", "hidden", "hidden"), ("--elastic-depth", "depth", "depth")):
        if options[option] and dimension not in net.space:
            notes = "; ".join(n for n in net.plan.notes if dimension in n) or "the adapter offers none"
            raise ValueError(f"{flag}: {notes}")
    full, smallest = encoder_params(net, net.max_arch()), encoder_params(net, net.min_arch())
    if smallest > max_encoder_params * full:
        ways = [
            *(
                ["--allow-custom-config (heads shrink too; the export then needs `import lightning_nas.adapters`)"]
                if options["stock_config"]
                else []
            ),
            *(["--elastic-depth (drop layers)"] if not options["depth"] else []),
        ]
        raise ValueError(
            f"--max-params {max_encoder_params:g} is out of reach: the smallest sub-network of this space "
            f"({', '.join(net.space)}) keeps {smallest / full:.1%} of the {full:,.0f} parameters outside "
            f"nn.Embedding; " + ("widen the space with " + " or ".join(ways) if ways else "raise the budget")
        )
    return options


#: Files that hold a tokenizer's vocabulary, one of which a model directory must have.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)


def _load_tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    # transformers builds an empty-vocabulary tokenizer for a bare config, so look for the files.
    if not any((model_dir / name).is_file() for name in _TOKENIZER_FILES):
        raise ValueError(
            f"{model_dir}: no tokenizer files ({', '.join(_TOKENIZER_FILES[:2])}, ...); "
            f"save them next to the model with tokenizer.save_pretrained({str(model_dir)!r})"
        )
    try:
        return AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"{model_dir}: the tokenizer files do not load ({str(err).splitlines()[0]})") from err


def _check_resume(out: Path, fingerprint: dict[str, Any]) -> Path | None:
    """The checkpoint to resume from, or ``None``; refuses a directory of another run."""
    run_file = out / _RUN_FILE
    checkpoint = out / _CHECKPOINTS / "last.ckpt"
    if not run_file.is_file():
        if checkpoint.exists():
            raise ValueError(f"{out} holds checkpoints but no {_RUN_FILE}; pass another output directory")
        return None
    try:
        previous = json.loads(run_file.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{run_file} is unreadable ({err}); pass another output directory") from err
    changed = [k for k in sorted(set(previous) | set(fingerprint)) if previous.get(k) != fingerprint.get(k)]
    if changed:
        details = "; ".join(f"{k}: {previous.get(k)!r} there, {fingerprint.get(k)!r} now" for k in changed[:3])
        raise ValueError(
            f"{out} holds a run with other settings ({details}); pass another output directory to start a new one"
        )
    return checkpoint if checkpoint.is_file() else None


def compress(
    model_dir: str | Path,
    out_dir: str | Path = "nas_runs/compress",
    *,
    task: str | None = None,
    train: DataSource | L.LightningDataModule | None = None,
    validation: DataSource | None = None,
    test: DataSource | None = None,
    dataset: str | None = None,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    label_names: Sequence[str] | None = None,
    max_encoder_params: float | Sequence[float] = 0.5,
    epochs: int = 1,
    n_trials: int = 30,
    max_length: int = 64,
    batch_size: int = 32,
    lr: float = 1e-4,
    max_train: int | None = None,
    max_test: int | None = None,
    importance_batches: int = 8,
    strategy: str = "instatune",
    stock_config: bool = True,
    per_layer: bool = False,
    elastic_hidden: bool = False,
    elastic_depth: bool = False,
    width_fractions: Sequence[float] = WIDTH_FRACTIONS,
    seed: int = 0,
    limit_train_batches: int | float | None = None,
    checkpoint_every: int = 200,
    progress_interval: float = 30.0,
    block_size: int | None = None,
    recover_top_k: int = 3,
    recover_steps: int | None = None,
    recover_final_steps: int | None = None,
    recover_hidden_weight: float = 1.0,
    recover_hidden_loss: str | None = None,
    recover_label_weight: float | None = None,
    recover_rank_by: str = "distillation",
) -> CompressionReport:
    """Fine-tune ``model_dir`` as a supernet on a task, search it, recover the best few, export the best.

    Every argument and the data are checked before any model is loaded; a bad one raises a
    one-line ``ValueError`` / ``FileNotFoundError`` naming the file, column or option, and nothing
    is written. Fine-tuning checkpoints into ``out_dir/checkpoints``; calling again with the same
    arguments resumes from the last checkpoint (and resumes the study), a different run in the
    same ``out_dir`` is refused.

    Args:
        model_dir: A pretrained Hugging Face model directory with its tokenizer files (encoders:
            BERT, RoBERTa, DistilBERT, ELECTRA families).
        out_dir: Where the study (``nas.db``), checkpoints, ``report.json`` and the exported
            model (``best_model/``; with several budgets ``best_model-<percent>/`` each) go.
        task: A name in :data:`TASKS` (default: :func:`infer_task` from the model's config).
        train: The training data: a CSV / TSV / JSON / JSONL / Parquet / text file or a
            ``save_to_disk`` directory, a ``datasets.Dataset``, or a ``LightningDataModule``
            (then also ``label_names``). Default: the bundled ``dataset``.
        validation, test: Further splits (files or Datasets); carved out of ``train`` with
            ``seed`` when missing.
        dataset: A bundled dataset (:func:`~lightning_nas.datasets.available_text_datasets`),
            used when no ``train`` is given (default ``rotten_tomatoes``).
        text_column, text_pair_column, label_column: Columns of the data (default: detected,
            see :func:`~lightning_nas.datasets.read_text_classification`).
        label_names: Class names, needed with a ``LightningDataModule``.
        max_encoder_params: Budget on the parameters outside the embeddings, as a fraction of
            the original's; or several budgets, all served by one fine-tuning (its random
            sub-networks drawn within the largest) and one importance sorting, each with its own
            search of ``n_trials``, recovery and export. A budget is named by its percent,
            rounded to two decimals (0.5 -> ``50``, 0.125 -> ``12.5``): study ``compress-50``,
            export ``best_model-50``, report row ``compressed 50%``. One budget keeps the names
            ``compress``, ``best_model`` and ``compressed``.
        epochs: Fine-tuning epochs (one InstaTune epoch costs about 1.7 plain epochs).
        n_trials: Optuna trials of the search (of each budget's search).
        max_length: Truncation length in tokens.
        batch_size: Training batch size.
        lr: Peak learning rate.
        max_train: Use at most this many training rows (``None``: all).
        max_test: Use at most this many test rows.
        importance_batches: Training batches used to sort heads/neurons by importance (0: off).
        strategy: Supernet training strategy (``"instatune"``, ``"sandwich"``, ``"spos"``). Its
            random sub-networks are drawn only among those within the (largest) budget: the
            others are never exported, so training them would be wasted.
        stock_config: Search only sub-networks the family's stock config describes, so the export
            loads with plain transformers in a process that never imports ``lightning_nas``
            (default). Families whose config derives the head size from the hidden size (BERT,
            RoBERTa, ELECTRA, DistilBERT) then keep their heads, and the FFN choices reach down to
            1/24 so that half the encoder is within reach at full depth; Llama-like configs (with
            ``head_dim``) keep every dimension. ``False`` (``--allow-custom-config``) also shrinks
            BERT's heads; such exports have a ``lightning_nas_<family>`` config and reload after
            ``import lightning_nas.adapters``.
        per_layer: One heads and one FFN width per layer instead of one for all layers (a far
            larger space; needs ``stock_config=False``, and the exports ``import lightning_nas.adapters``).
        elastic_hidden: Also shrink the hidden size (embeddings, every projection). Off by
            default: on MiniLM it costs more accuracy per parameter than heads and FFN neurons.
        elastic_depth: Also drop layers. Off by default: a model pretrained for mean pooling,
            such as all-MiniLM-L6-v2, has a nearly constant [CLS] token before its last layer.
        width_fractions: Choices of every width as fractions of the original (default: steps
            of 1/24 from 1/4, so FFN widths of MiniLM in steps of 64 neurons).
        seed: Seed of data order, carving, sampling and search.
        limit_train_batches: Passed to the Trainer (for quick runs).
        checkpoint_every: Save a resumable checkpoint every this many optimizer steps (and at
            the end of fine-tuning).
        progress_interval: Seconds between progress lines when stdout is not a terminal.
        block_size: Tokens per packed block of the ``causal-lm`` task (default: 128, capped by
            the model's ``max_position_embeddings``).
        recover_top_k: After the search, the best ``recover_top_k`` sub-networks within the budget
            are each distilled from the fine-tuned full model (:func:`~lightning_nas.recovery.recover`,
            Minitron's step); the best after that is distilled further and exported.
        recover_steps: Distillation steps per candidate to rank them (default: a quarter of an
            epoch; 0: no recovery, export the search's best with the supernet's weights).
            Changing it (or the other recovery options) on a rerun reuses the fine-tuned
            supernet and the study.
        recover_final_steps: Further distillation steps of the chosen candidate (default: one
            epoch; 0: export it as the ranking left it).
        recover_hidden_weight: Weight of the layer-wise hidden-state loss next to the logits'
            (0: logits only).
        recover_hidden_loss: ``"mse"`` or ``"normalised"`` (each layer's error relative to the
            teacher states' mean square); default: the task's (``"normalised"`` for causal-lm,
            whose residual stream has a few huge channels; ``"mse"`` for the layer-normed
            encoders).
        recover_label_weight: Weight of the task's own loss on the labels next to the
            distillation losses (0: distillation only); default: the task's (1 for
            sequence-classification, 0 for causal-lm).
        recover_rank_by: What chooses among the distilled candidates: ``"distillation"`` (their
            validation distillation loss, default: continuous, while an accuracy on a few hundred
            examples often cannot tell them apart) or ``"metric"`` (the task's validation metric).

    Returns:
        A :class:`CompressionReport`; its :meth:`~CompressionReport.table` compares the original
        fine-tuned model with the export (one row per budget, largest first).
    """
    import lightning_nas._jobs as jobs

    console = jobs.Console("compress")
    # ---- every check before any model is loaded or anything is written
    if task is None:  # without a readable config.json, the model directory check below names the problem
        task = infer_task(model_dir)
        if (Path(model_dir) / "config.json").is_file():
            console.say(f"task: {task} (from the model's config)")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    budgets = _check_budgets(max_encoder_params)
    jobs.check_positive(
        epochs=epochs,
        n_trials=n_trials,
        max_length=max_length,
        batch_size=batch_size,
        lr=lr,
        max_train=max_train,
        max_test=max_test,
        checkpoint_every=checkpoint_every,
        block_size=block_size,
    )
    if importance_batches < 0:
        raise ValueError(f"importance_batches must be >= 0, got {importance_batches}")
    jobs.check_positive(recover_top_k=recover_top_k)
    for name, value in (("recover_steps", recover_steps), ("recover_final_steps", recover_final_steps)):
        if value is not None and value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if recover_hidden_loss is None:
        recover_hidden_loss = TASKS[task].hidden_loss
    if recover_label_weight is None:
        recover_label_weight = TASKS[task].label_weight
    for name, value in (
        ("recover_hidden_weight", recover_hidden_weight),
        ("recover_label_weight", recover_label_weight),
    ):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    from lightning_nas.recovery import HIDDEN_LOSSES, RANK_BY

    if recover_hidden_loss not in HIDDEN_LOSSES:
        raise ValueError(f"recover_hidden_loss must be one of {', '.join(HIDDEN_LOSSES)}, got {recover_hidden_loss!r}")
    if recover_rank_by not in RANK_BY:
        raise ValueError(f"recover_rank_by must be one of {', '.join(RANK_BY)}, got {recover_rank_by!r}")
    if train is None and (validation is not None or test is not None):
        raise ValueError("validation= / test= need train=")
    if train is not None and dataset is not None:
        raise ValueError(f"pass either a bundled dataset ({dataset!r}) or train=, not both")
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} is not a Hugging Face model directory (no config.json)")
    adapter_options = _check_space(
        model_dir,
        TASKS[task].auto_class,
        budgets[-1],  # the smallest: if any budget is out of reach, it is
        {
            "stock_config": stock_config,
            "per_layer": per_layer,
            "hidden": elastic_hidden,
            "depth": elastic_depth,
            "width_fractions": tuple(width_fractions),
        },
    )
    out = Path(out_dir).resolve()
    jobs.check_out_dir(out)
    settings = CompressSettings(
        model_dir=model_dir.resolve(),
        train=train,
        validation=validation,
        test=test,
        dataset=dataset,
        text_column=text_column,
        text_pair_column=text_pair_column,
        label_column=label_column,
        label_names=tuple(label_names) if label_names is not None else None,
        max_length=max_length,
        batch_size=batch_size,
        lr=lr,
        max_train=max_train,
        max_test=max_test,
        seed=seed,
        block_size=block_size,
    )
    job = TASKS[task](settings)
    tokenizer = _load_tokenizer(model_dir)
    data = job.load_data(tokenizer, console)
    fingerprint = {
        **job.fingerprint(),
        # One budget as a number, as before several were possible: such runs still resume.
        "max_encoder_params": budgets[0] if len(budgets) == 1 else list(budgets),
        "epochs": epochs,
        "importance_batches": importance_batches,
        "strategy": strategy,
        "stock_config": stock_config,
        "per_layer": per_layer,
        "elastic_hidden": elastic_hidden,
        "elastic_depth": elastic_depth,
        "width_fractions": [round(f, 6) for f in width_fractions],
        "limit_train_batches": limit_train_batches,
    }
    fingerprint = json.loads(json.dumps(fingerprint))  # as it reads back from run.json
    resume_from = _check_resume(out, fingerprint)
    return _run(
        job,
        data,
        tokenizer,
        out,
        console,
        resume_from=resume_from,
        fingerprint=fingerprint,
        budgets=budgets,
        epochs=epochs,
        n_trials=n_trials,
        importance_batches=importance_batches,
        strategy=strategy,
        adapter_options=adapter_options,
        seed=seed,
        limit_train_batches=limit_train_batches,
        checkpoint_every=checkpoint_every,
        progress_interval=progress_interval,
        recovery=_Recovery(
            recover_top_k,
            recover_steps,
            recover_final_steps,
            recover_hidden_weight,
            recover_hidden_loss,
            recover_label_weight,
            recover_rank_by,
        ),
    )


@dataclass(frozen=True)
class _Recovery:
    top_k: int
    steps: int | None  # None: a quarter of an epoch per candidate
    final_steps: int | None  # None: one epoch for the chosen one
    hidden_weight: float
    hidden_loss: str
    label_weight: float
    rank_by: str


def _without_transformers_bars(run: Any) -> Any:
    """transformers' weight loading / writing bars off while ``run`` runs, when stderr is not a terminal.

    In a log each bar is a line of carriage-return frames and says nothing the phase lines do not;
    on a terminal they stay, and the user's setting is restored afterwards.
    """

    @functools.wraps(run)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from transformers.utils import logging as hf_logging

        from lightning_nas._jobs import interactive

        if interactive(sys.stderr) or not hf_logging.is_progress_bar_enabled():
            return run(*args, **kwargs)
        hf_logging.disable_progress_bar()
        try:
            return run(*args, **kwargs)
        finally:
            hf_logging.enable_progress_bar()

    return wrapper


@dataclass(frozen=True)
class _Budget:
    """One budget of a run and what it names: its study, export directory and report row."""

    fraction: float
    study_name: str
    export_dir: Path
    row: str
    label: str  # how the progress lines name it ("" with one budget)

    @classmethod
    def of(cls, fraction: float, out: Path, several: bool) -> _Budget:
        if not several:  # the names of the runs before several budgets were possible: they still resume
            return cls(fraction, "compress", out / "best_model", "compressed", "")
        percent = _percent(fraction)
        return cls(fraction, f"compress-{percent}", out / f"best_model-{percent}", f"compressed {percent}%", percent)


@_without_transformers_bars
def _run(
    job: CompressTask,
    data: Any,
    tokenizer: Any,
    out: Path,
    console: Console,
    *,
    resume_from: Path | None,
    fingerprint: dict[str, Any],
    budgets: tuple[float, ...],
    epochs: int,
    n_trials: int,
    importance_batches: int,
    strategy: str,
    adapter_options: Mapping[str, Any],
    seed: int,
    limit_train_batches: int | float | None,
    checkpoint_every: int,
    progress_interval: float,
    recovery: _Recovery,
) -> CompressionReport:
    """The job after the checks: fine-tune as a supernet once; per budget search, recover, export; measure, report."""
    import lightning as L

    import lightning_nas._jobs as jobs
    from lightning_nas.callbacks import OneShotSearch, SupernetCallback
    from lightning_nas.callbacks._quiet import quiet_lightning
    from lightning_nas.export.hf import export_hf, load_hf, save_hf
    from lightning_nas.importance import reorder_by_importance
    from lightning_nas.metrics import count_params, directory_size, measure_latency

    L.seed_everything(seed, verbose=False)
    out.mkdir(parents=True, exist_ok=True)
    (out / _RUN_FILE).write_text(json.dumps(fingerprint, indent=2))
    storage = f"sqlite:///{out / 'nas.db'}"

    console.phase("loading model", str(job.settings.model_dir))
    with quiet_lightning():
        module, datamodule = job.build(data, tokenizer)

    def prepare(supernet: Any) -> None:
        if resume_from is not None:  # the checkpoint holds the sorted, fine-tuned weights
            console.phase("importance sorting", "skipped: resuming from a checkpoint of sorted weights")
        elif importance_batches:
            console.phase("importance sorting", f"heads and FFN neurons of every layer on {importance_batches} batches")
            reorder_by_importance(supernet, datamodule.train_dataloader(), max_batches=importance_batches)

    def encoder_cost(arch: dict[str, int]) -> float:
        return encoder_params(supernet_callback.supernet, arch)

    runs = [_Budget.of(fraction, out, len(budgets) > 1) for fraction in budgets]
    limit = {run.fraction: run.fraction * dense_encoder_params(module.model) for run in runs}
    supernet_callback = SupernetCallback(
        strategy=strategy,
        module="model",
        prepare=prepare,
        seed=seed,
        # Students within the largest budget: one within a smaller budget is within it too.
        limits={"encoder_params": limit[runs[0].fraction]},
        costs={"encoder_params": encoder_cost},
        adapter_options=adapter_options,
    )
    supernet = supernet_callback.build(module)
    if len(runs) == 1:
        budget = f"budget {limit[runs[0].fraction]:,.0f} params outside nn.Embedding"
    else:
        shown = ", ".join(f"{run.label}% = {limit[run.fraction]:,.0f}" for run in runs)
        budget = f"budgets {shown} params outside nn.Embedding; fine-tuning draws its students within the largest"
    console.say(f"  search space: {supernet.space.size:,} sub-networks; {budget}")

    steps_per_epoch = len(datamodule.train_dataloader())
    if limit_train_batches is not None:
        steps_per_epoch = (
            min(steps_per_epoch, limit_train_batches)
            if isinstance(limit_train_batches, int)
            else int(steps_per_epoch * limit_train_batches)
        )
    recover_steps = max(1, steps_per_epoch // 4) if recovery.steps is None else recovery.steps
    final_steps = steps_per_epoch if recovery.final_steps is None else recovery.final_steps

    def exporter(net: Any, directory: Path, arch: Any, **verification: Any) -> Path:
        console.phase("export + verification", f"{directory} (reloaded and compared with the sub-network)")
        return export_hf(net, directory, arch, tokenizer=tokenizer, **verification)

    # One search per budget, each its own study and limit; all run when fit ends, in this order.
    searches = {
        run.fraction: OneShotSearch(
            metric=job.metric,
            direction=job.direction,
            objectives=("params", "latency"),
            costs={"encoder_params": encoder_cost},
            limits={"encoder_params": limit[run.fraction]},
            n_trials=n_trials,
            storage=storage,
            study_name=run.study_name,
            # with recovery, the distilled model is exported below
            export_dir=False if recover_steps else run.export_dir,
            exporter=exporter,
            loader=load_hf,
            seed=seed,
            verbose=False,  # the report below says what the search found, with the before/after figures
        )
        for run in runs
    }
    on_terminal = jobs.interactive()
    # Progress of each candidate's distillation: Lightning's bar on a terminal, periodic lines otherwise.
    progress = (
        {"enable_progress_bar": True}
        if on_terminal
        else {"callbacks": [jobs.StepProgress(console, progress_interval, loss_key="distill_loss")]}
    )
    callbacks: list[Any] = [supernet_callback]
    for rank, run in enumerate(runs):
        what = f"{n_trials} trials in study {run.study_name!r} at {storage}"
        callbacks += [
            jobs.Phases(console, f"budget {run.label}%: {what}" if run.label else what, say_resumed=rank == 0),
            searches[run.fraction],
        ]
    callbacks.append(jobs.ResumableCheckpoint(out / _CHECKPOINTS, checkpoint_every))
    if not on_terminal:
        callbacks.append(jobs.StepProgress(console, progress_interval))
    with quiet_lightning():  # no accelerator banner: the phases below say what runs
        trainer = L.Trainer(
            max_epochs=epochs,
            callbacks=callbacks,
            default_root_dir=str(out),
            logger=False,
            enable_progress_bar=on_terminal,
            enable_model_summary=False,
            limit_train_batches=limit_train_batches,
            num_sanity_val_steps=0,
        )
    console.phase(
        "fine-tuning",
        f"{epochs} epoch(s) x {steps_per_epoch} steps, strategy {strategy}; checkpoints in {out / _CHECKPOINTS}"
        + (f"; resuming from {resume_from}" if resume_from else ""),
    )
    with quiet_lightning(), warnings.catch_warnings():
        # Resuming writes into the checkpoint folder of the same run, on purpose.
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        trainer.fit(module, datamodule, ckpt_path=str(resume_from) if resume_from else None)
    for run in runs:
        result = searches[run.fraction].result
        if result is None or result.best is None:
            within = f"the budget of {run.label}%" if run.label else "the budget"
            raise RuntimeError(f"the search found no sub-network within {within}; raise n_trials or the budget")

    full = supernet.extract(supernet.max_arch())
    compressed: list[tuple[_Budget, nn.Module, dict[str, int], Path]] = []
    for run in runs:
        search = searches[run.fraction]
        if recover_steps:
            best_model, best_arch = _recover(
                job,
                supernet,
                module,
                datamodule,
                search.result,
                full,
                recovery,
                (recover_steps, final_steps),
                seed,
                console,
                progress,
                source=f"study {run.study_name!r}" if run.label else "the search",
            )
            console.phase("export + verification", f"{run.export_dir} (reloaded and compared with the distilled model)")
            export_path = save_hf(
                best_model,
                run.export_dir,
                tokenizer=tokenizer,
                inputs=list(itertools.islice(iter(datamodule.val_dataloader()), 2)),
                example_input=job.latency_inputs(2),
                arch=best_arch,
            )
            best_model = load_hf(export_path)
        else:
            best_model, best_arch, export_path = search.best_model, search.result.best_arch, search.export_path
        compressed.append((run, best_model, best_arch, export_path))

    console.phase(
        "test evaluation and latency measurement",
        ("original and compressed" if len(runs) == 1 else f"original and {len(runs)} compressed") + ", batch 32 and 1",
    )
    examples = {batch: job.latency_inputs(batch) for batch in (32, 1)}
    rows = []
    sources = [
        ("fine-tuned original", full, supernet.max_arch(), job.settings.model_dir, {}),
        *((run.row, model, arch, path, {"max_encoder_params": run.fraction}) for run, model, arch, path in compressed),
    ]
    for name, model, arch, path, which in sources:
        model = model.eval()
        rows.append(
            {
                "model": name,
                **which,
                "params": count_params(model),
                "encoder_params": encoder_params(supernet, arch),
                **job.evaluate(model, datamodule),
                "latency_b32_ms": measure_latency(model, examples[32], repeats=5) * 1e3,
                "latency_b1_ms": measure_latency(model, examples[1], repeats=20) * 1e3,
                "size_mb": directory_size(Path(path) / "model.safetensors") / 2**20,
            }
        )
    report_path = out / "report.json"
    report_path.write_text(json.dumps(rows, indent=2))
    return CompressionReport(
        rows,
        compressed[-1][3],  # the smallest budget's
        storage,
        job.columns,
        report_path,
        out / _CHECKPOINTS,
        export_paths={run.fraction: path for run, _, _, path in compressed},
        study_names={run.fraction: run.study_name for run in runs},
    )


def _recover(
    job: CompressTask,
    supernet: Any,
    module: Any,
    datamodule: Any,
    result: Any,
    teacher: nn.Module,
    recovery: _Recovery,
    steps: tuple[int, int],
    seed: int,
    console: Console,
    progress: dict[str, Any],
    source: str = "the search",
) -> tuple[nn.Module, dict[str, int]]:
    """Distil the search's top candidates from the fine-tuned full model, then the best for longer; it and its arch.

    ``source`` names the search in the phase line (which study, when a run has several).
    """
    from lightning_nas.recovery import recover

    top = result.top(recovery.top_k)
    hidden = {"mse": "hidden-state mse", "normalised": "normalised hidden-state mse"}[recovery.hidden_loss]
    what = f"logits + {hidden}" if recovery.hidden_weight else "logits"
    what += " + labels" if recovery.label_weight else ""
    by = job.metric if recovery.rank_by == "metric" else "validation distillation loss"
    console.phase(
        "recovery distillation",
        f"the best {len(top)} sub-networks of {source} x {steps[0]} steps each, "
        f"from the fine-tuned full model ({what})"
        + (f", then the best of them by {by} {steps[1]} steps more" if steps[1] else f", ranked by {by}"),
    )
    found = recover(
        supernet,
        [dict(t.user_attrs["arch"]) for t in top],
        module,
        datamodule.train_dataloader,
        datamodule.val_dataloader(),
        metric=job.metric,
        direction=job.direction,
        rank_by=recovery.rank_by,
        steps=steps[0],
        final_steps=steps[1],
        teacher=teacher,
        scores_before=[t.values[0] for t in top],
        seed=seed,
        trainer_options=progress,
        lr=job.settings.lr,
        hidden_weight=recovery.hidden_weight,
        hidden_loss=recovery.hidden_loss,
        label_weight=recovery.label_weight,
        on_candidate=lambda i, arch: console.say(f"  candidate {i + 1} of {len(top)}: {arch}"),
        on_final=lambda best: console.say(f"  final distillation of the best, {best.arch}: {steps[1]} steps"),
    )
    for rank, candidate in enumerate(found):
        ranked = "" if candidate.score_ranked is None else f"{candidate.score_ranked:.4f} ({steps[0]} steps) -> "
        loss = "" if candidate.distill_loss_ranked is None else f"{candidate.distill_loss_ranked:.4f} -> "
        console.say(
            f"  {'chosen' if rank == 0 else 'kept   '} {job.metric} {candidate.score_before:.4f} (supernet weights) -> "
            f"{ranked}{candidate.score:.4f} (distilled {candidate.steps} steps), "
            f"validation distillation loss {loss}{candidate.distill_loss:.4f}: {candidate.arch}"
        )
    return found[0].model.eval(), found[0].arch
