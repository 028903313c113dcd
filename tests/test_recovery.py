"""Recovery distillation (Minitron's step): the Distiller, recover() and SearchResult.top on real components."""

from __future__ import annotations

import copy

import optuna
import pytest
import torch

transformers = pytest.importorskip("transformers")

from lightning_nas import Supernet  # noqa: E402
from lightning_nas.apps import TextClassifier  # noqa: E402
from lightning_nas.recovery import Distiller, hidden_state_loss, recover  # noqa: E402
from lightning_nas.search import search_result  # noqa: E402


def _bert(seed: int = 0, layers: int = 2, ffn: int = 32) -> transformers.BertForSequenceClassification:
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=60,
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=ffn,
        max_position_embeddings=32,
        num_labels=2,
    )
    return transformers.BertForSequenceClassification(config)


def _loader(n: int = 32, seed: int = 0) -> torch.utils.data.DataLoader:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 60, (n, 10), generator=generator)
    rows = [
        {"input_ids": ids[i], "attention_mask": torch.ones(10, dtype=torch.long), "labels": i % 2} for i in range(n)
    ]
    return torch.utils.data.DataLoader(rows, batch_size=8)


def _gap(student, teacher, loader) -> tuple[float, float]:
    """KL of the student's output distribution to the teacher's, and the hidden-state error."""
    student.eval()
    kl = hidden = 0.0
    with torch.no_grad():
        for batch in loader:
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            s, t = student(**inputs, output_hidden_states=True), teacher(**inputs, output_hidden_states=True)
            kl += float(
                torch.nn.functional.kl_div(
                    s.logits.log_softmax(-1), t.logits.log_softmax(-1), log_target=True, reduction="batchmean"
                )
            )
            hidden += float(hidden_state_loss(s.hidden_states, t.hidden_states))
    return kl, hidden


def _fit(distiller: Distiller, loader, steps: int) -> None:
    import lightning as L

    trainer = L.Trainer(
        max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(distiller, train_dataloaders=loader)


def test_the_distiller_moves_a_narrower_shallower_student_towards_a_frozen_teacher() -> None:
    teacher, student = _bert(0, layers=2, ffn=32), _bert(1, layers=1, ffn=8)
    teacher_state = copy.deepcopy(teacher.state_dict())
    loader = _loader()
    kl_before, hidden_before = _gap(student, teacher, loader)
    distiller = Distiller(student, teacher, lr=3e-3, warmup=0.0, hidden_weight=1.0)
    _fit(distiller, loader, 40)
    kl_after, hidden_after = _gap(student, teacher, loader)
    assert kl_after < 0.5 * kl_before and hidden_after < 0.5 * hidden_before, (kl_before, kl_after, hidden_after)
    # The teacher is a fixed target: not trained, and kept in eval mode (no dropout) while the student trains.
    assert all(torch.equal(teacher_state[k], v) for k, v in teacher.state_dict().items())
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())


@pytest.mark.parametrize("hidden_loss", ["mse", "normalised"])
def test_the_distiller_loss_is_logits_kl_plus_weighted_hidden_and_label_terms(hidden_loss) -> None:
    teacher, student = _bert(0), _bert(1)
    batch = next(iter(_loader()))
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        t = teacher.eval()(**inputs, output_hidden_states=True)
        s = student.eval()(**inputs, output_hidden_states=True, labels=batch["labels"])
    kl = torch.nn.functional.kl_div(
        s.logits.log_softmax(-1), t.logits.log_softmax(-1), log_target=True, reduction="batchmean"
    )
    normalise = hidden_loss == "normalised"
    hidden = hidden_state_loss(s.hidden_states, t.hidden_states, batch["attention_mask"], normalise=normalise)
    expected = kl + 0.5 * hidden + 2.0 * s.loss
    distiller = Distiller(student, teacher, hidden_weight=0.5, hidden_loss=hidden_loss, label_weight=2.0)
    distiller.eval()
    with torch.no_grad():
        assert torch.allclose(distiller.loss(batch), expected, atol=1e-6)


def test_hidden_states_of_a_student_with_fewer_layers_match_evenly_spaced_teacher_layers() -> None:
    teacher = tuple(torch.full((1, 3, 4), float(i)) for i in range(7))  # embeddings + 6 layers, layer i = i
    student = (teacher[0], torch.full((1, 3, 2), 2.0), torch.full((1, 3, 2), 4.0), torch.full((1, 3, 2), 6.0))
    assert float(hidden_state_loss(student, teacher)) == 0.0  # layers 1, 2, 3 of 3 <-> 2, 4, 6 of 6, first channels
    mask = torch.tensor([[1, 1, 0]])
    padded = tuple(torch.cat([s[:, :2], torch.full((1, 1, s.shape[-1]), 100.0)], dim=1) for s in student)
    assert float(hidden_state_loss(padded, teacher, mask)) == 0.0  # padding does not count


def test_normalised_hidden_state_loss_weighs_every_layer_alike_whatever_its_scale() -> None:
    # Layer 2's states are 100x layer 1's (a decoder's residual stream): the plain MSE is all layer 2,
    # the normalised one counts each layer's error relative to its own scale.
    teacher = (torch.zeros(1, 3, 4), torch.ones(1, 3, 4), torch.full((1, 3, 4), 100.0))
    student = (teacher[0], torch.full((1, 3, 4), 0.5), torch.full((1, 3, 4), 50.0))
    assert float(hidden_state_loss(student, teacher)) == pytest.approx((0.25 + 2500) / 2)
    assert float(hidden_state_loss(student, teacher, normalise=True)) == pytest.approx(0.25)
    mask = torch.tensor([[1, 1, 0]])
    padded = tuple(torch.cat([s[:, :2], torch.full((1, 1, 4), 1e4)], dim=1) for s in student)
    assert float(hidden_state_loss(padded, teacher, mask, normalise=True)) == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lr": 0}, "lr must be > 0"),
        ({"hidden_weight": -1}, "hidden_weight must be >= 0"),
        ({"warmup": 1.0}, r"warmup is a fraction of the steps in \[0, 1\)"),
        ({"temperature": 0}, "temperature must be > 0"),
        ({"hidden_loss": "cosine"}, "hidden_loss must be one of mse, normalised, got 'cosine'"),
    ],
)
def test_bad_distiller_options_fail_in_one_line(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        Distiller(_bert(0), _bert(1), **options)


def _module_and_supernet() -> tuple[TextClassifier, Supernet]:
    module = TextClassifier(_bert(0, ffn=32), num_labels=2, max_length=10)
    supernet = Supernet(module.model, example_input=module.example_input_array)
    return module, supernet


def test_recover_distils_each_candidate_ranks_them_and_leaves_the_supernet_alone() -> None:
    module, supernet = _module_and_supernet()
    state = copy.deepcopy(supernet.model.state_dict())
    candidates = [supernet.space.min_arch(), supernet.space.max_arch()]
    loader = _loader()
    seen = []
    found = recover(
        supernet,
        candidates,
        module,
        lambda: loader,
        loader,
        metric="val_acc",
        steps=3,
        scores_before=[0.1, 0.2],
        on_candidate=lambda i, arch: seen.append((i, arch)),
        hidden_weight=0.5,
    )
    assert seen == list(enumerate(candidates))
    assert sorted(map(str, (r.arch for r in found))) == sorted(map(str, candidates))
    assert [r.score for r in found] == sorted((r.score for r in found), reverse=True)
    assert {r.score_before for r in found} == {0.1, 0.2}
    for r in found:  # each score is the module's own val_acc of that distilled model
        with torch.no_grad():
            batches = list(loader)
            correct = sum(
                int(
                    (
                        r.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.argmax(-1)
                        == b["labels"]
                    ).sum()
                )
                for b in batches
            )
        assert r.score == pytest.approx(correct / 32)
        assert sum(p.numel() for p in r.model.parameters()) == supernet.num_params(r.arch)
    assert module.model is supernet.model
    assert all(torch.equal(state[k], v) for k, v in supernet.model.state_dict().items())


def test_recover_distils_the_winner_further_and_keeps_it_first() -> None:
    module, supernet = _module_and_supernet()
    candidates = [supernet.space.min_arch(), supernet.space.max_arch()]
    loader = _loader()
    ranked = recover(supernet, candidates, module, lambda: loader, loader, metric="val_acc", steps=2)
    finals = []
    found = recover(
        supernet,
        candidates,
        module,
        lambda: loader,
        loader,
        metric="val_acc",
        steps=2,
        final_steps=5,
        on_final=finals.append,
    )
    # The same ranking (same seed, same batches), then only the winner trained 5 steps more.
    assert [r.arch for r in found] == [r.arch for r in ranked]
    assert [f.arch for f in finals] == [found[0].arch]
    assert found[0].steps == 7 and found[0].score_ranked == ranked[0].score
    assert found[1].steps == 2 and found[1].score_ranked is None and found[1].score == ranked[1].score
    assert all(
        torch.equal(a, b) for a, b in zip(found[1].model.state_dict().values(), ranked[1].model.state_dict().values())
    )
    assert any(
        not torch.equal(a, b)
        for a, b in zip(found[0].model.state_dict().values(), ranked[0].model.state_dict().values())
    )
    with torch.no_grad():  # the winner's score is its own accuracy after the final distillation
        correct = sum(
            int(
                (
                    found[0].model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.argmax(-1)
                    == b["labels"]
                ).sum()
            )
            for b in loader
        )
    assert found[0].score == pytest.approx(correct / 32)


def test_recover_can_rank_by_the_validation_distillation_loss() -> None:
    module, supernet = _module_and_supernet()
    candidates = [supernet.space.min_arch(), supernet.space.max_arch()]
    loader = _loader()
    teacher = supernet.extract(supernet.max_arch()).eval()
    found = recover(
        supernet,
        candidates,
        module,
        lambda: loader,
        loader,
        metric="val_acc",
        steps=2,
        rank_by="distillation",
        teacher=teacher,
        hidden_weight=0.5,
    )
    assert found[0].distill_loss <= found[1].distill_loss
    for r in found:  # the mean distillation loss over the validation batches (all of 8 rows), recomputed by hand
        distiller = Distiller(r.model, teacher, hidden_weight=0.5).eval()
        with torch.no_grad():
            expected = sum(float(distiller.loss(b)) for b in loader) / len(loader)
        assert r.distill_loss == pytest.approx(expected, rel=1e-5)


def test_recover_refuses_bad_arguments_before_any_work() -> None:
    module, supernet = _module_and_supernet()
    loader = _loader()
    arch = supernet.space.min_arch()
    calls = []

    def train():
        calls.append(1)
        return loader

    with pytest.raises(ValueError, match="steps must be >= 1"):
        recover(supernet, [arch], module, train, loader, metric="val_acc", steps=0)
    with pytest.raises(ValueError, match="final_steps must be >= 0"):
        recover(supernet, [arch], module, train, loader, metric="val_acc", steps=1, final_steps=-1)
    with pytest.raises(ValueError, match="rank_by must be one of metric, distillation, got 'loss'"):
        recover(supernet, [arch], module, train, loader, metric="val_acc", steps=1, rank_by="loss")
    with pytest.raises(ValueError, match="no candidates"):
        recover(supernet, [], module, train, loader, metric="val_acc", steps=1)
    with pytest.raises(ValueError, match="pl_module.net is not the supernet's model"):
        recover(supernet, [arch], module, train, loader, metric="val_acc", steps=1, module="net")
    with pytest.raises(ValueError, match="lr must be > 0"):
        recover(supernet, [arch], module, train, loader, metric="val_acc", steps=1, lr=-1)
    assert not calls


def test_search_result_top_lists_the_best_affordable_archs_once_each() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    archs = [{"w": 1}, {"w": 2}, {"w": 3}, {"w": 2}, {"w": 4}]
    values = [(0.5, 1.0), (0.9, 2.0), (0.7, 3.0), (0.95, 2.0), (0.99, 4.0)]
    for number, (arch, value) in enumerate(zip(archs, values)):
        trial = optuna.trial.create_trial(
            values=list(value),
            user_attrs={"arch": arch, **({"copy_of": 1} if number == 3 else {})},
            system_attrs={"constraints": [1.0 if arch["w"] == 4 else -1.0]},
        )
        study.add_trial(trial)
    result = search_result(study, "acc", "maximize")
    # w=4 broke its limit; the trial copied from another is not a second evaluation of w=2.
    assert [dict(t.user_attrs["arch"]) for t in result.top(5)] == [{"w": 2}, {"w": 3}, {"w": 1}]
    assert [dict(t.user_attrs["arch"]) for t in result.top(1)] == [{"w": 2}]
    with pytest.raises(ValueError, match="k must be >= 1"):
        result.top(0)
