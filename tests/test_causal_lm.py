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
