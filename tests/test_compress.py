"""The compress job on a tiny random BERT (fast) and on the real pretrained MiniLM (slow)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

transformers = pytest.importorskip("transformers")

from lightning_nas.cli import main  # noqa: E402
from lightning_nas.compress import WIDTH_FRACTIONS, compress, width_fractions  # noqa: E402
from lightning_nas.datasets import minilm_model_dir  # noqa: E402
from lightning_nas.samplers import is_rejection  # noqa: E402


@pytest.fixture
def tiny_bert_dir(tmp_path):
    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,  # 4 x hidden, as in BERT: attention is a third of the encoder
        max_position_embeddings=128,
        num_labels=2,
    )
    path = tmp_path / "tiny-bert"
    transformers.BertForSequenceClassification(config).save_pretrained(path)
    transformers.AutoTokenizer.from_pretrained(minilm_model_dir()).save_pretrained(path)
    return path


def _reviews(n: int = 48) -> list[dict]:
    words = {"pos": "a good fine great film", "neg": "a bad dull awful film"}
    return [{"review": f"{words[s]} {i}", "sentiment": s} for i in range(n // 2) for s in ("pos", "neg")]


def _write_csv(path: Path, rows: list[dict]) -> Path:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(rows).to_pandas().to_csv(path, index=False)
    return path


_FAST = ["--epochs", "1", "--trials", "2", "--max-length", "16", "--batch-size", "16", "--importance-batches", "1"]


def test_compress_cli_on_the_users_csv_with_string_labels(tiny_bert_dir, tmp_path, capfd) -> None:
    train = _write_csv(tmp_path / "reviews.csv", _reviews())
    out = tmp_path / "out"
    argv = ["compress", str(tiny_bert_dir), "--train", str(train), "--text-column", "review"]
    assert main([*argv, "--label-column", "sentiment", "--out", str(out), *_FAST]) == 0
    printed, err = capfd.readouterr()
    # No terminal: no library bars, banners or tips on stderr; one line per search trial on stdout.
    noise = ("Loading weights", "Writing model shards", "GPU available", "Tip:", "Trial 1 finished")
    assert not [word for word in noise if word in err + printed], err[-2000:]
    assert len(re.findall(r"\] trial \d+ \(\d of 2 done\): ", printed)) == 2
    for phase in (
        "data:",
        "loading model:",
        "importance sorting:",
        "fine-tuning:",
        "search:",
        "export + verification:",
    ):
        assert phase in printed, phase
    assert "carved out of" in printed and "neg -> 0, pos -> 1" in printed
    assert re.search(r"step (\d+)/\1 \(epoch 1/1\), train_loss", printed)  # progress without a terminal
    assert f"Report: {out / 'report.json'}" in printed and "dashboard " + str(out / "nas.db") in printed
    config = json.loads((out / "best_model" / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"} and config["label2id"] == {"neg": 0, "pos": 1}
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(out / "best_model")
    assert reloaded.config.id2label == {0: "neg", 1: "pos"}
    rows = json.loads((out / "report.json").read_text())
    assert [r["model"] for r in rows] == ["fine-tuned original", "compressed"] and 0 <= rows[1]["test_acc"] <= 1
    assert (out / "checkpoints" / "last.ckpt").is_file()


def test_compress_text_pairs_from_a_saved_dataset_and_parquet_test(tiny_bert_dir, tmp_path, monkeypatch) -> None:
    datasets = pytest.importorskip("datasets")
    from lightning_nas.apps import TextDataModule

    rows = [{"premise": f"p {i}", "hypothesis": f"h {i % 3}", "label": ["yes", "no"][i % 2]} for i in range(40)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "train"))
    datasets.Dataset.from_list(rows[:10]).to_parquet(str(tmp_path / "test.parquet"))
    seen = []
    original = TextDataModule.rows

    def spy(self, split):
        seen.append(original(self, split))
        return seen[-1]

    monkeypatch.setattr(TextDataModule, "rows", spy)
    report = compress(
        tiny_bert_dir,
        tmp_path / "out",
        train=tmp_path / "train",
        test=tmp_path / "test.parquet",
        n_trials=2,
        max_length=16,
        batch_size=16,
        importance_batches=1,
    )
    assert report.rows[1]["encoder_params"] <= 0.5 * report.rows[0]["encoder_params"]
    assert all(1 in row["token_type_ids"] for row in seen[0])  # tokenised as pairs: segment B present
    assert transformers.AutoConfig.from_pretrained(report.export_path).label2id == {"no": 0, "yes": 1}


def test_compress_takes_a_lightning_datamodule(tiny_bert_dir, tmp_path) -> None:
    from lightning_nas.apps import TextDataModule
    from lightning_nas.datasets import TextExamples

    rows = _reviews(40)
    split = TextExamples([r["review"] for r in rows], [int(r["sentiment"] == "pos") for r in rows])
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_bert_dir)
    datamodule = TextDataModule(tokenizer, split, split, split, max_length=16, batch_size=16)
    with pytest.raises(ValueError, match="needs label_names"):
        compress(tiny_bert_dir, tmp_path / "refused", train=datamodule)
    assert not (tmp_path / "refused").exists()
    report = compress(
        tiny_bert_dir, tmp_path / "out", train=datamodule, label_names=["neg", "pos"], n_trials=2, importance_batches=1
    )
    assert transformers.AutoConfig.from_pretrained(report.export_path).id2label == {0: "neg", 1: "pos"}
    assert report.rows[1]["encoder_params"] <= 0.5 * report.rows[0]["encoder_params"]


def test_compress_resumes_fine_tuning_from_its_checkpoint(tiny_bert_dir, tmp_path, monkeypatch, capsys) -> None:
    from lightning_nas.apps import TextClassifier

    train = _write_csv(tmp_path / "reviews.csv", _reviews(64))  # 52 train rows: 4 steps of 16
    seen = []
    original = TextClassifier.training_step

    def killed_at_third_step(self, batch, batch_idx):
        seen.append(batch["input_ids"].tolist())
        if len(seen) == 3:
            raise RuntimeError("simulated kill")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(TextClassifier, "training_step", killed_at_third_step)
    kwargs = dict(train=train, text_column="review", label_column="sentiment", n_trials=2, max_length=16)
    kwargs.update(batch_size=16, importance_batches=1, checkpoint_every=1)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="simulated kill"):
        compress(tiny_bert_dir, out, **kwargs)
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2
    assert not (out / "nas.db").exists() and not list((out / "checkpoints").glob("*.partial"))
    killed_batch = seen[2]
    capsys.readouterr()
    seen.clear()
    monkeypatch.setattr(
        TextClassifier, "training_step", lambda self, b, i: seen.append(b["input_ids"].tolist()) or original(self, b, i)
    )
    report = compress(tiny_bert_dir, out, **kwargs)
    printed = capsys.readouterr().out
    assert len(seen) == 2  # the two steps left of four, not four again
    assert seen[0] == killed_batch  # the epoch's order goes on where it stopped
    assert "resumed at step 2 of 4" in printed and "importance sorting: skipped" in printed
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4
    assert report.export_path.is_dir()
    with pytest.raises(ValueError, match=r"holds a run with other settings \(lr: 0.0001 there, 0.001 now\)"):
        compress(tiny_bert_dir, out, **{**kwargs, "lr": 1e-3})
    _write_csv(train, _reviews(66))  # the data changed: another run, not a resume
    with pytest.raises(ValueError, match=r"holds a run with other settings \(train: "):
        compress(tiny_bert_dir, out, **kwargs)


def test_compress_distils_the_best_candidates_and_a_rerun_without_recovery_retrains_nothing(
    tiny_bert_dir, tmp_path, monkeypatch, capsys
) -> None:
    from lightning_nas.apps import TextClassifier
    from lightning_nas.recovery import Distiller

    train = _write_csv(tmp_path / "reviews.csv", _reviews(64))
    kwargs = dict(train=train, text_column="review", label_column="sentiment", n_trials=4, max_length=16)
    kwargs.update(batch_size=16, importance_batches=1, max_encoder_params=0.7, recover_top_k=2)
    out = tmp_path / "out"
    report = compress(tiny_bert_dir, out, recover_steps=3, recover_final_steps=4, **kwargs)
    printed = capsys.readouterr().out
    assert (
        "recovery distillation: the best 2 sub-networks of the search x 3 steps each, from the fine-tuned full model "
        "(logits + hidden-state mse + labels), then the best of them by validation distillation loss 4 steps more"
        in printed
    )
    # The chosen one got 3 + 4 steps (its score after the ranking's 3 is shown too), the other 3.
    assert (
        len(
            re.findall(
                r"chosen val_acc [\d.]+ \(supernet weights\) -> [\d.]+ \(3 steps\) -> [\d.]+ \(distilled 7 steps\)",
                printed,
            )
        )
        == 1
    )
    assert len(re.findall(r"kept    val_acc [\d.]+ \(supernet weights\) -> [\d.]+ \(distilled 3 steps\)", printed)) == 1
    # Without a terminal each distillation reports its steps (at least once, at its end).
    assert len(re.findall(r"step 3/3, distill_loss \d", printed)) == 2, printed
    assert len(re.findall(r"step 4/4, distill_loss \d", printed)) == 1, printed
    final = re.search(r"final distillation of the best, (\{.*\}): 4 steps", printed)
    study = optuna.load_study(study_name="compress", storage=report.study_storage)
    trials = len(study.trials)
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    # Best first as the search ranks them: the metric, then the costs (params, latency).
    top = [dict(t.user_attrs["arch"]) for t in sorted(completed, key=lambda t: (-t.values[0], *t.values[1:]))]
    exported = json.loads((report.export_path / "arch.json").read_text())["arch"]
    assert exported in top[:2] and final and str(exported) == final.group(1)
    # The export is the distilled model: it reloads with plain transformers and computes as it did in memory.
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(report.export_path)
    assert sum(p.numel() for p in reloaded.parameters()) == report.rows[1]["params"]
    with_recovery = {k: v.clone() for k, v in reloaded.state_dict().items()}

    trained = []
    monkeypatch.setattr(TextClassifier, "training_step", lambda *a: trained.append(1) or 1 / 0)
    monkeypatch.setattr(Distiller, "training_step", lambda *a: trained.append(1) or 1 / 0)
    plain = compress(tiny_bert_dir, out, recover_steps=0, **kwargs)
    printed = capsys.readouterr().out
    assert not trained and "recovery distillation" not in printed
    assert len(optuna.load_study(study_name="compress", storage=plain.study_storage).trials) == trials
    without = transformers.AutoModelForSequenceClassification.from_pretrained(plain.export_path).state_dict()
    arch = json.loads((plain.export_path / "arch.json").read_text())["arch"]
    assert arch == top[0]
    if arch == exported:  # the same sub-network, with the supernet's weights instead of the distilled ones
        assert any(not torch.equal(with_recovery[k], without[k]) for k in without)


def test_several_budgets_share_one_fine_tuning_and_get_a_study_and_an_export_each(
    tiny_bert_dir, tmp_path, monkeypatch, capsys
) -> None:
    from lightning_nas.apps import TextClassifier
    from lightning_nas.compress import dense_encoder_params
    from lightning_nas.recovery import Distiller

    train = _write_csv(tmp_path / "reviews.csv", _reviews(64))  # 52 train rows: 4 steps of 16
    steps = []
    original = TextClassifier.training_step
    monkeypatch.setattr(TextClassifier, "training_step", lambda self, b, i: steps.append(i) or original(self, b, i))
    kwargs = dict(train=train, text_column="review", label_column="sentiment", n_trials=2, max_length=16)
    kwargs.update(batch_size=16, importance_batches=1, recover_top_k=1, recover_steps=1, recover_final_steps=1)
    out = tmp_path / "out"
    report = compress(tiny_bert_dir, out, max_encoder_params=[0.5, 0.75], **kwargs)
    printed = capsys.readouterr().out
    # One fine-tuning (one epoch of 4 steps, one checkpoint) and one importance sorting for both budgets.
    assert len(steps) == 4 and printed.count("importance sorting:") == 1 and printed.count("fine-tuning:") == 1
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4
    assert "budgets 75% = 19,946, 50% = 13,297 params outside nn.Embedding" in printed
    for percent in ("75", "50"):
        assert f"search: budget {percent}%: 2 trials in study 'compress-{percent}' at" in printed
        assert f"the best 1 sub-networks of study 'compress-{percent}' x 1 steps each" in printed
    # Largest first, everywhere: the searches, the exports, the report's rows.
    assert printed.index("study 'compress-75'") < printed.index("study 'compress-50'")
    assert report.study_names == {0.75: "compress-75", 0.5: "compress-50"}
    assert report.export_paths == {0.75: out / "best_model-75", 0.5: out / "best_model-50"}
    assert report.export_path == out / "best_model-50" and not (out / "best_model").exists()
    names = [row["model"] for row in report.rows]
    assert names == ["fine-tuned original", "compressed 75%", "compressed 50%"]
    assert [row["model"] for row in json.loads((out / "report.json").read_text())] == names
    assert "compressed 75%" in report.table() and "compressed 50%" in report.table()
    full = report.rows[0]["encoder_params"]
    for row, (budget, path) in zip(report.rows[1:], report.export_paths.items(), strict=True):
        assert row["max_encoder_params"] == budget
        study = optuna.load_study(study_name=report.study_names[budget], storage=report.study_storage)
        assert len([t for t in study.trials if not is_rejection(t)]) == 2  # n_trials for each budget
        completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert completed and all(t.user_attrs["encoder_params"] <= budget * full for t in completed)
        reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(path)
        assert dense_encoder_params(reloaded) == row["encoder_params"] <= budget * full
    assert set(optuna.get_all_study_names(report.study_storage)) == {"compress-75", "compress-50"}

    # A rerun with other recovery options reuses the supernet and both studies; the CLI prints each export's load line.
    trials = {
        b: len(optuna.load_study(study_name=n, storage=report.study_storage).trials)
        for b, n in report.study_names.items()
    }
    monkeypatch.setattr(TextClassifier, "training_step", lambda *a: steps.append(1) or 1 / 0)
    monkeypatch.setattr(Distiller, "training_step", lambda *a: steps.append(1) or 1 / 0)
    argv = ["compress", str(tiny_bert_dir), "--train", str(train), "--text-column", "review", "--label-column"]
    argv += ["sentiment", "--out", str(out), *_FAST, "--max-params", "0.75", "0.5", "--recover-steps", "0"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert len(steps) == 4 and "recovery distillation" not in printed
    for budget, name in report.study_names.items():
        assert len(optuna.load_study(study_name=name, storage=report.study_storage).trials) == trials[budget]
    assert "Exported one model per budget; each one's config is the family's stock config, so plain" in printed
    for percent in ("75", "50"):
        load = f"transformers.AutoModelForSequenceClassification.from_pretrained('{out / f'best_model-{percent}'}')"
        assert f"\n  {percent}%: import transformers; {load}  # stock config\n" in printed
    assert "its studies: compress-75 (75% budget), compress-50 (50% budget)" in printed

    # Another list of budgets is another run: refused before anything is loaded, naming the lists.
    with pytest.raises(
        ValueError, match=r"other settings \(max_encoder_params: \[0.75, 0.5\] there, \[0.75, 0.4\] now\)"
    ):
        compress(tiny_bert_dir, out, max_encoder_params=[0.75, 0.4], **kwargs)
    with pytest.raises(ValueError, match=r"other settings \(max_encoder_params: \[0.75, 0.5\] there, 0.5 now\)"):
        compress(tiny_bert_dir, out, max_encoder_params=0.5, **kwargs)


@pytest.mark.parametrize(
    "space",
    [
        {"stock_config": False},
        {"per_layer": True, "elastic_hidden": True, "elastic_depth": True, "stock_config": False},
        {},
    ],
    ids=["global-heads-ffn", "per-layer-hidden-depth", "stock-default"],
)
def test_compress_exports_a_model_that_transformers_reloads(tiny_bert_dir, tmp_path, space) -> None:
    out = tmp_path / "out"
    report = compress(
        tiny_bert_dir,
        out,
        max_train=300,
        max_test=64,
        epochs=1,
        n_trials=6,
        max_length=32,
        limit_train_batches=3,
        importance_batches=2,
        max_encoder_params=0.6,
        **space,
    )
    original, compressed = report.rows
    assert compressed["encoder_params"] <= 0.6 * original["encoder_params"]
    assert compressed["params"] < original["params"]
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(report.export_path)
    assert sum(p.numel() for p in reloaded.parameters()) == compressed["params"]
    # The printed rule, applied by hand to the reloaded model, gives the printed figure.
    assert "params outside nn.Embedding" in report.table()
    embeddings = {id(p) for m in reloaded.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    assert compressed["encoder_params"] == sum(p.numel() for p in reloaded.parameters() if id(p) not in embeddings)
    tokenizer = transformers.AutoTokenizer.from_pretrained(report.export_path)
    batch = tokenizer(["a fine film", "a dull one"], return_tensors="pt", padding=True)
    assert reloaded(**batch).logits.shape == (2, 2)
    study = optuna.load_study(study_name="compress", storage=report.study_storage)
    assert study.metric_names == ["val_acc", "params", "latency"]
    evaluated = [t for t in study.trials if not is_rejection(t)]
    assert len(evaluated) == 6 and all("encoder_params" in t.user_attrs for t in evaluated)
    searched = set(evaluated[0].params)
    if space.get("per_layer"):
        assert {"hidden", "depth", "layers.0.heads", "layers.1.ffn"} <= searched
    elif space:  # --allow-custom-config: one heads and one FFN width for all layers, as before issue 13
        assert searched == {"heads", "ffn"}
    else:  # a stock BertConfig fixes the heads: one FFN width, down to 1/24
        assert searched == {"ffn"}
        assert json.loads((report.export_path / "config.json").read_text())["model_type"] == "bert"
    assert "compressed" in report.table()


_BAD_INPUT = [
    # (case, extra arguments, expected one-line message)
    (
        "missing-column",
        ["--label-column", "stars"],
        r"reviews.csv: no column 'stars' \(--label-column\); columns: review",
    ),
    ("one-class", ["--train", "{one_class}"], r"one.csv: column 'sentiment' has one class only"),
    ("empty-file", ["--train", "{empty}"], r"empty.csv: the file is empty"),
    ("unreadable", ["--train", "{broken}"], r"broken.parquet: cannot read it as PARQUET"),
    ("unknown-format", ["--train", "{xlsx}"], r"data.xlsx: unknown format '.xlsx'"),
    ("unseen-labels", ["--test", "{unseen}"], r"unseen.csv: column 'sentiment' has labels the training data lacks"),
    ("max-length-0", ["--max-length", "0"], r"argument --max-length: must be > 0, got 0"),
    ("max-train-0", ["--max-train", "0"], r"argument --max-train: must be > 0, got 0"),
    ("epochs-0", ["--epochs", "0"], r"argument --epochs: must be > 0, got 0"),
    ("epochs-negative", ["--epochs", "-1"], r"argument --epochs: must be > 0, got -1"),
    (
        "no-tokenizer",
        ["--model", "{no_tokenizer}"],
        r"no-tokenizer: no tokenizer files \(tokenizer.json, vocab.txt, ...\)",
    ),
    ("no-config", ["--model", "{empty_dir}"], r"not a Hugging Face model directory \(no config.json\)"),
    ("out-under-a-file", ["--out", "{file}/out"], r"output directory .* is under .*a-file, which is a file"),
    ("unknown-task", ["--task", "translation"], r"argument --task: invalid choice: 'translation'"),
    ("recover-steps-negative", ["--recover-steps", "-1"], r"argument --recover-steps: must be >= 0, got -1"),
    (
        "recover-rank-by-unknown",
        ["--recover-rank-by", "loss"],
        r"argument --recover-rank-by: invalid choice: 'loss' \(choose from '?metric'?, '?distillation'?\)",
    ),
    (
        "recover-hidden-loss-unknown",
        ["--recover-hidden-loss", "cosine"],
        r"argument --recover-hidden-loss: invalid choice: 'cosine' \(choose from '?mse'?, '?normalised'?\)",
    ),
    (
        "recover-label-weight-negative",
        ["--recover-label-weight", "-1"],
        r"argument --recover-label-weight: must be >= 0, got -1",
    ),
    (
        "recover-final-steps-negative",
        ["--recover-final-steps", "-2"],
        r"argument --recover-final-steps: must be >= 0, got -2",
    ),
    (
        "budget-out-of-reach",
        ["--max-params", "0.2"],
        r"--max-params 0.2 is out of reach: the smallest sub-network of this space \(ffn\) keeps 39\.9% of the "
        r"[\d,]+ parameters outside nn.Embedding; widen the space with --allow-custom-config .* or --elastic-depth",
    ),
    (
        "budget-out-of-reach-everywhere",
        ["--max-params", "0.01", "--allow-custom-config", "--elastic-depth"],
        r"--max-params 0.01 is out of reach: .*; raise the budget$",
    ),
    (
        "budget-twice",
        ["--max-params", "0.5", "0.5"],
        r"--max-params \(max_encoder_params\): 0.5 is given twice \(50%\)",
    ),
    (
        "budgets-one-percent",
        ["--max-params", "0.3333", "0.33331"],
        r"--max-params \(max_encoder_params\): 0.3333 and 0.33331 are one budget \(33.33%\); give each budget once",
    ),
    (
        "budgets-one-above-1",
        ["--max-params", "0.5", "1.5"],
        r"argument --max-params: must be a fraction in \(0, 1\], got 1.5",
    ),
    ("budgets-one-out-of-reach", ["--max-params", "0.75", "0.3"], r"--max-params 0.3 is out of reach: "),
    ("per-layer-stock", ["--per-layer"], r"--per-layer \(per_layer=True\) needs --allow-custom-config"),
    (
        "hidden-stock",
        ["--elastic-hidden"],
        r"--elastic-hidden: heads and hidden size fixed: BertConfig has no head_dim",
    ),
]


@pytest.mark.parametrize(("case", "extra", "message"), _BAD_INPUT, ids=[c[0] for c in _BAD_INPUT])
def test_compress_bad_input_is_one_line_before_any_work(tiny_bert_dir, tmp_path, capsys, case, extra, message) -> None:
    files = {
        "one_class": _write_csv(tmp_path / "one.csv", [r for r in _reviews() if r["sentiment"] == "pos"]),
        "empty": tmp_path / "empty.csv",
        "broken": tmp_path / "broken.parquet",
        "xlsx": tmp_path / "data.xlsx",
        "unseen": _write_csv(tmp_path / "unseen.csv", [{"review": "so so", "sentiment": "meh"}]),
        "no_tokenizer": tmp_path / "no-tokenizer",
        "empty_dir": tmp_path / "empty-dir",
        "file": tmp_path / "a-file",
    }
    files["empty"].write_text("")
    files["broken"].write_bytes(b"not parquet")
    files["xlsx"].write_bytes(b"PK\x03\x04")
    files["empty_dir"].mkdir()
    files["file"].write_text("a regular file")
    transformers.BertConfig(vocab_size=100, hidden_size=8, num_attention_heads=2).save_pretrained(files["no_tokenizer"])
    extra = [e.format(**files) for e in extra]
    model = str(tiny_bert_dir)
    if extra[0] == "--model":
        model, extra = extra[1], extra[2:]
    out = tmp_path / "out"
    if case == "out-under-a-file":
        out, extra = Path(extra[1]), []
    train = str(_write_csv(tmp_path / "reviews.csv", _reviews()))
    argv = ["compress", model, "--train", train, "--text-column", "review", "--label-column", "sentiment"]
    argv += ["--out", str(out), *_FAST, *extra]
    loaded = []
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(
        transformers.AutoModelForSequenceClassification, "from_pretrained", lambda *a, **k: loaded.append(a)
    )
    try:
        try:
            status = main(argv)
        except SystemExit as exit_:  # argparse's own errors
            status = exit_.code
    finally:
        monkeypatch.undo()
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len([line for line in err if "error" in line]) == 1 and "Traceback" not in "\n".join(err)
    assert re.search(message, err[-1]), err[-1]
    assert err[-1].startswith("lightning-nas")
    assert not loaded, "a model was loaded before the error"
    assert not out.exists(), "the output directory was created"


def test_compress_rejects_bad_input(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not a Hugging Face model directory"):
        compress(tmp_path)
    with pytest.raises(ValueError, match="fraction in"):
        compress(minilm_model_dir(), max_encoder_params=50)
    for budgets, message in (
        ([0.5, 0.5], r"0.5 is given twice \(50%\); give each budget once"),
        ((0.75, 0), r"max_encoder_params is a fraction in \(0, 1\], got 0"),
        ([], "needs at least one budget"),
        (["0.5"], r"fraction in \(0, 1\], got '0.5'"),
    ):
        with pytest.raises(ValueError, match=message):
            compress(minilm_model_dir(), tmp_path / "out", max_encoder_params=budgets)
    for options, message in (
        ({"recover_hidden_loss": "cosine"}, "recover_hidden_loss must be one of mse, normalised, got 'cosine'"),
        ({"recover_rank_by": "loss"}, "recover_rank_by must be one of metric, distillation, got 'loss'"),
        ({"recover_hidden_weight": -1.0}, "recover_hidden_weight must be >= 0, got -1.0"),
        ({"recover_label_weight": -0.5}, "recover_label_weight must be >= 0, got -0.5"),
    ):
        with pytest.raises(ValueError, match=message):
            compress(minilm_model_dir(), tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_compress_cli_on_the_real_minilm(tmp_path, capsys) -> None:
    out = tmp_path / "minilm"
    assert (
        main(
            [
                "compress",
                "minilm",
                "--out",
                str(out),
                "--epochs",
                "1",
                "--trials",
                "4",
                "--max-train",
                "256",
                "--max-length",
                "32",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "fine-tuned original" in printed and "compressed" in printed
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(out / "best_model")
    assert sum(p.numel() for p in reloaded.parameters()) < 22_000_000
    with torch.no_grad():
        assert reloaded(input_ids=torch.ones(1, 8, dtype=torch.long)).logits.shape == (1, 2)


def test_width_fractions_run_from_a_quarter_to_all() -> None:
    assert width_fractions(24) == WIDTH_FRACTIONS == tuple(k / 24 for k in range(6, 25))
    assert width_fractions(6) == (2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0)  # a quarter rounded up to a whole step
    assert width_fractions(1) == (1.0,)
    with pytest.raises(ValueError, match="width steps must be >= 1, got 0"):
        width_fractions(0)


def _tiny_llama_dir(tmp_path: Path) -> Path:
    """A 2-layer Llama (4 query / 2 key-value heads) with a word-level tokenizer of the reviews: nothing downloaded."""
    tokenizers = pytest.importorskip("tokenizers")
    from lightning_nas.datasets import load_text_classification

    texts = load_text_classification(max_train=200, max_test=1).train_texts
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(unk_token="<unk>"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    backend.train_from_iterator(
        texts, tokenizers.trainers.WordLevelTrainer(vocab_size=200, special_tokens=["<unk>", "<eos>"])
    )
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", unk_token="<unk>")
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        tie_word_embeddings=True,  # as SmolLM2: the LM head is the embedding, outside the budget
    )
    path = tmp_path / "tiny-llama"
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    (tmp_path / "corpus.txt").write_text("\n".join(texts))
    return path


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_the_default_export_loads_in_a_process_that_never_imports_lightning_nas(
    family, tiny_bert_dir, tmp_path, capsys
) -> None:
    """Issue 13: by default the printed load line works with plain transformers, lightning_nas never imported."""
    if family == "bert":
        model_dir, data = tiny_bert_dir, ["--train", str(_write_csv(tmp_path / "reviews.csv", _reviews()))]
        data += ["--text-column", "review", "--label-column", "sentiment"]
    else:
        model_dir, data = _tiny_llama_dir(tmp_path), ["--train", str(tmp_path / "corpus.txt"), "--block-size", "16"]
    out = tmp_path / "out"
    assert main(["compress", str(model_dir), *data, "--out", str(out), *_FAST]) == 0
    printed = capsys.readouterr().out
    assert "its config is the family's stock config, so plain transformers loads it, without lightning_nas:" in printed
    line = printed.split("without lightning_nas:\n  ")[1].splitlines()[0]
    assert line.startswith("import transformers;") and str(out / "best_model") in line
    study = optuna.load_study(study_name="compress", storage=f"sqlite:///{out / 'nas.db'}")
    searched = set(next(t for t in study.trials if not is_rejection(t)).params)
    # BERT derives the head size from the hidden size, so its heads stay; Llama's config has head_dim.
    assert searched == ({"ffn"} if family == "bert" else {"heads", "ffn"})
    check = "import sys\nassert not [m for m in sys.modules if m.startswith('lightning_nas')], 'lightning_nas imported'"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "-c", f"{line}\n{check}"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]


def test_the_cli_chooses_stock_or_custom_configs() -> None:
    from lightning_nas.cli import build_parser

    parse = build_parser().parse_args
    assert parse(["compress", "minilm"]).stock_config is True
    assert parse(["compress", "minilm", "--stock-config"]).stock_config is True
    assert parse(["compress", "minilm", "--allow-custom-config"]).stock_config is False
    with pytest.raises(SystemExit):
        parse(["compress", "minilm", "--stock-config", "--allow-custom-config"])


def test_the_cli_offers_the_rankings_recover_knows() -> None:
    from lightning_nas.cli import build_parser
    from lightning_nas.recovery import RANK_BY

    compress_parser = build_parser()._subparsers._group_actions[0].choices["compress"]
    (action,) = [a for a in compress_parser._actions if "--recover-rank-by" in a.option_strings]
    assert tuple(action.choices) == RANK_BY and action.default == "distillation"


def test_the_cli_offers_the_hidden_losses_the_distiller_knows_and_leaves_recovery_defaults_to_the_task() -> None:
    from lightning_nas.cli import build_parser
    from lightning_nas.compress import TASKS
    from lightning_nas.recovery import HIDDEN_LOSSES

    compress_parser = build_parser()._subparsers._group_actions[0].choices["compress"]
    (action,) = [a for a in compress_parser._actions if "--recover-hidden-loss" in a.option_strings]
    assert tuple(action.choices) == HIDDEN_LOSSES and action.default is None
    assert {task.hidden_loss for task in TASKS.values()} <= set(HIDDEN_LOSSES)
    assert TASKS["causal-lm"].hidden_loss == "normalised" and TASKS["sequence-classification"].hidden_loss == "mse"
    assert TASKS["causal-lm"].label_weight == 0 and TASKS["sequence-classification"].label_weight == 1
    (action,) = [a for a in compress_parser._actions if "--recover-label-weight" in a.option_strings]
    assert action.default is None  # the task's
