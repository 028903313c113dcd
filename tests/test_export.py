"""Plain-torch exports: safe formats, verification against the supernet, atomic replacement, damaged files."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from lightning_nas import Supernet
from lightning_nas.demo import DigitsCNN
from lightning_nas.export import ExportError, export_subnet, load_module, load_subnet, save_module
from lightning_nas.export._files import write_manifest

ROOT = Path(__file__).resolve().parents[1]
ARCH = {"stem.0": 4, "down.0": 8, "fc": 8}  # a sub-network of the tiny CNN below


def cnn_supernet() -> Supernet:
    """The demo's CNN with batch-norm statistics that are not the defaults; all-zero example input, as in the demo."""
    torch.manual_seed(0)
    model = DigitsCNN(width=8, hidden=16, blocks=1).eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return Supernet(model, example_input=torch.zeros(1, 1, 8, 8))


def sub_network_outputs(net: Supernet, arch: dict[str, int], x: torch.Tensor) -> torch.Tensor:
    with net.use(arch), torch.no_grad():
        return net.model(x)


def test_default_files_reload_without_pickle_into_the_users_class_and_as_a_program(tmp_path, monkeypatch) -> None:
    net = cnn_supernet()
    assert set(ARCH) <= set(net.space)
    path = export_subnet(net, tmp_path / "export", ARCH)
    assert sorted(p.name for p in path.iterdir()) == ["arch.json", "model.pt2", "model.safetensors"]
    manifest = json.loads((path / "arch.json").read_text())
    assert manifest["arch"] == {**net.max_arch(), **ARCH}
    assert manifest["program"] == "model.pt2" and manifest["pickle"] is None
    assert set(manifest["files"]) == {"model.pt2", "model.safetensors"}

    # Loading never unpickles: torch.load only in its weights-only mode, pickle not at all.
    real_load = torch.load

    def weights_only_load(*args, **kwargs):
        assert kwargs.get("weights_only") is True, "torch.load without weights_only=True"
        return real_load(*args, **kwargs)

    def no_pickle(*args, **kwargs):
        raise AssertionError("pickle was used to load the export")

    monkeypatch.setattr(torch, "load", weights_only_load)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    mine = load_subnet(path, net)
    program = load_module(path)
    monkeypatch.undo()

    assert type(mine) is DigitsCNN and mine.stem[0].out_channels == 4 and not mine.training
    x = torch.randn(5, 1, 8, 8)
    expected = sub_network_outputs(net, {**net.max_arch(), **ARCH}, x)
    with torch.no_grad():
        torch.testing.assert_close(mine(x), expected, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(program(x), expected, atol=1e-5, rtol=1e-4)  # dynamic batch
        torch.testing.assert_close(program(x[:1]), expected[:1], atol=1e-5, rtol=1e-4)


def test_a_pickle_only_on_request(tmp_path) -> None:
    net = cnn_supernet()
    path = export_subnet(net, tmp_path / "export", ARCH, pickle=True)
    assert json.loads((path / "arch.json").read_text())["pickle"] == "model.pt"
    reloaded = load_module(path, pickle=True)
    assert type(reloaded) is DigitsCNN
    plain = export_subnet(net, tmp_path / "plain", ARCH)
    with pytest.raises(ExportError, match="has no pickled module; export with pickle=True"):
        load_module(plain, pickle=True)


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("stem.0.weight", lambda t: t.view(-1)[0].add_(0.5)),  # invisible on the all-zero example input
        ("down.1.running_var", lambda t: t.view(-1)[0].mul_(4.0)),
        ("fc.weight", lambda t: t.view(-1)[0].add_(0.5)),
        ("head.bias", lambda t: t.view(-1)[0].add_(0.5)),
    ],
)
def test_a_weight_corrupted_after_extraction_fails_the_export(name, damage, tmp_path, monkeypatch) -> None:
    net = cnn_supernet()
    extract = Supernet.extract

    def corrupted_extract(self, arch=None):
        model = extract(self, arch)
        with torch.no_grad():
            damage(model.state_dict()[name])
        return model

    monkeypatch.setattr(Supernet, "extract", corrupted_extract)
    with pytest.raises(ExportError, match="differs from the original"):
        export_subnet(net, tmp_path / "export", ARCH)
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary directory left


def test_real_batches_are_part_of_the_check(tmp_path) -> None:
    net = cnn_supernet()
    seen = []

    def forward(model, batch):
        seen.append(model)
        return model(batch[0])

    batches = [(torch.rand(3, 1, 8, 8), torch.zeros(3)), (torch.rand(2, 1, 8, 8), torch.zeros(2))]
    path = export_subnet(net, tmp_path / "export", ARCH, inputs=batches, forward=forward)
    # Each batch ran on the supernet's own sub-network, on the reloaded weights and on the reloaded program.
    assert len(seen) == 6 and sum(model is net.model for model in seen) == 2
    assert sum(isinstance(model, torch.fx.GraphModule) for model in seen) == 2
    inputs = json.loads((path / "arch.json").read_text())["verification"]["inputs"]
    assert inputs == ["the example input", "input 0", "input 1", "random input 0", "random input 1"]


def test_a_failed_export_leaves_the_previous_one_intact(tmp_path, monkeypatch) -> None:
    net = cnn_supernet()
    target = export_subnet(net, tmp_path / "export", ARCH)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    extract = Supernet.extract

    def corrupted_extract(self, arch=None):
        model = extract(self, arch)
        with torch.no_grad():
            model.head.bias.add_(1.0)
        return model

    monkeypatch.setattr(Supernet, "extract", corrupted_extract)
    with pytest.raises(ExportError):
        export_subnet(net, target, net.min_arch())
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["export"]
    # A good export replaces it.
    export_subnet(net, target, net.min_arch())
    assert json.loads((target / "arch.json").read_text())["arch"] == net.min_arch()
    assert [p.name for p in tmp_path.iterdir()] == ["export"]


_CHILD = """
import pathlib, sys, time, torch
from lightning_nas import Supernet
from lightning_nas.export import export_subnet
target, marker = sys.argv[1:3]
torch.manual_seed(0)
nn = torch.nn
layers = [nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(288, 10)]
net = Supernet(nn.Sequential(*layers).eval(), example_input=torch.zeros(1, 1, 8, 8))
save = torch.export.save
def save_then_block(*args, **kwargs):  # inside the writer, with some files of the new export written
    save(*args, **kwargs)
    pathlib.Path(marker).touch()
    time.sleep(600)
torch.export.save = save_then_block
export_subnet(net, target, net.max_arch())
"""


def test_an_export_killed_midway_leaves_no_half_written_directory(tmp_path) -> None:
    net = cnn_supernet()
    previous = export_subnet(net, tmp_path / "previous", ARCH)
    fresh = tmp_path / "fresh"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    children = {}
    for target in (previous, fresh):
        marker = tmp_path / f"{target.name}.marker"
        child = subprocess.Popen([sys.executable, "-c", _CHILD, str(target), str(marker)], env=env)
        children[target] = (child, marker)
    deadline = time.monotonic() + 300
    for child, marker in children.values():
        while not marker.exists():
            assert child.poll() is None, "the child ended before blocking"
            assert time.monotonic() < deadline, "the child never reached the writer"
            time.sleep(0.2)
        child.send_signal(signal.SIGKILL)
        child.wait()
    # The first export never appeared; the earlier one is still complete, with its old architecture.
    assert not fresh.exists()
    assert json.loads((previous / "arch.json").read_text())["arch"] == {**net.max_arch(), **ARCH}
    torch.testing.assert_close(
        load_module(previous)(torch.ones(2, 1, 8, 8)),
        sub_network_outputs(net, {**net.max_arch(), **ARCH}, torch.ones(2, 1, 8, 8)),
    )
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith((".previous.tmp-", ".fresh.tmp-"))]
    assert len(leftovers) == 2
    # The next exports clean the killed processes' temporary directories up.
    export_subnet(net, previous, net.min_arch())
    export_subnet(net, fresh, net.min_arch())
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["fresh", "previous"]


def test_an_export_caught_between_two_renames_is_restored(tmp_path, monkeypatch) -> None:
    """Where an atomic exchange is not available, a kill between the two renames leaves ``.old-``; it comes back."""
    net = cnn_supernet()
    target = export_subnet(net, tmp_path / "export", ARCH)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stash = tmp_path / f".export.old-{dead.pid}-abc"
    stash.mkdir()
    target.rename(stash / "export")
    extract = Supernet.extract

    def corrupted_extract(self, arch=None):
        model = extract(self, arch)
        with torch.no_grad():
            model.head.bias.add_(1.0)
        return model

    monkeypatch.setattr(Supernet, "extract", corrupted_extract)
    with pytest.raises(ExportError, match="differs"):  # the new export fails; the restored one stays
        export_subnet(net, target, net.min_arch())
    assert json.loads((target / "arch.json").read_text())["arch"] == {**net.max_arch(), **ARCH}
    assert [p.name for p in tmp_path.iterdir()] == ["export"]


def test_bad_output_directories_fail_before_any_work(tmp_path, monkeypatch) -> None:
    net = cnn_supernet()
    monkeypatch.setattr(Supernet, "extract", lambda *a, **k: pytest.fail("work started"))
    file = tmp_path / "file.txt"
    file.write_text("x")
    with pytest.raises(ValueError, match=r"cannot write an export to .*file.txt/out: .*file.txt is a file") as err:
        export_subnet(net, file / "out", ARCH)
    assert "\n" not in str(err.value)
    mine = tmp_path / "my-results"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    with pytest.raises(ValueError, match=r"my-results exists and is not an export \(no arch.json\)"):
        export_subnet(net, mine, ARCH)
    assert (mine / "notes.txt").read_text() == "precious"
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ValueError, match="is not writable"):
            export_subnet(net, locked / "out", ARCH)


def test_one_shot_search_checks_its_export_directory_before_training(tmp_path) -> None:
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    from lightning_nas.callbacks import OneShotSearch
    from tests.test_search import _fit

    file = tmp_path / "file"
    file.write_text("")
    search = OneShotSearch(metric="val_acc", n_trials=2, export_dir=file / "best")
    with pytest.raises(MisconfigurationException, match="is a file, not a directory"):
        _fit(tmp_path, search, max_steps=0)


@pytest.mark.parametrize(
    ("file", "damage", "message", "loaders"),
    [
        ("model.safetensors", lambda p: p.write_bytes(p.read_bytes()[:-10]), "safetensors is truncated", ["subnet"]),
        ("model.pt2", lambda p: p.write_bytes(p.read_bytes()[:100]), "model.pt2 is truncated", ["module"]),
        ("model.pt2", lambda p: p.write_bytes(b"\0" + p.read_bytes()[1:]), "pt2 is damaged: its SHA-256", ["module"]),
        (
            "arch.json",
            lambda p: p.write_text(p.read_text()[:20]),
            "arch.json is damaged or truncated",
            ["subnet", "module"],
        ),
        ("arch.json", lambda p: p.unlink(), "arch.json is missing", ["subnet", "module"]),
    ],
)
def test_damaged_files_give_a_one_line_error_naming_the_file(file, damage, message, loaders, tmp_path) -> None:
    net = cnn_supernet()
    path = export_subnet(net, tmp_path / "export", ARCH)
    damage(path / file)
    load = {"subnet": lambda: load_subnet(path, net), "module": lambda: load_module(path)}
    for name, loader in load.items():
        if name not in loaders:  # the other file is unaffected
            assert loader() is not None
            continue
        with pytest.raises(ExportError, match=message) as err:
            loader()
        assert "\n" not in str(err.value)


def test_files_that_match_a_rewritten_manifest_are_still_read_safely(tmp_path) -> None:
    net = cnn_supernet()
    path = export_subnet(net, tmp_path / "export", ARCH)
    manifest = json.loads((path / "arch.json").read_text())
    (path / "model.safetensors").write_bytes(b"\xff" * 64)
    write_manifest(path, {k: v for k, v in manifest.items() if k != "files"})
    with pytest.raises(ExportError, match="model.safetensors is not a readable safetensors file"):
        load_subnet(path, net)
    good = export_subnet(net, tmp_path / "good", ARCH)
    narrower = Supernet(DigitsCNN(width=4, hidden=16, blocks=1).eval(), example_input=torch.zeros(1, 1, 8, 8))
    with pytest.raises(ExportError, match="was exported from another supernet: value 8 for dimension"):
        load_subnet(good, narrower)
    with pytest.raises(ExportError, match="the weights in .*model.safetensors do not fit DigitsCNN"):
        load_subnet(good, DigitsCNN(width=8, hidden=32, blocks=1))


def test_a_program_holding_a_pickle_is_refused(tmp_path) -> None:
    """A crafted model.pt2 (with a manifest to match) must not run code in load_module; torch.export.load would."""
    net = cnn_supernet()
    path = export_subnet(net, tmp_path / "export", ARCH)
    marker = tmp_path / "code-ran"
    program = path / "model.pt2"
    with zipfile.ZipFile(program) as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist()}
    config_name = next(n for n in entries if n.endswith("weights_config.json"))
    config = json.loads(entries[config_name])
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    entries[config_name] = json.dumps(config).encode()
    weight = next(n for n in entries if n.endswith("/" + first["path_name"]))

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    entries[weight] = pickle.dumps(Payload())
    with zipfile.ZipFile(program, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    manifest = json.loads((path / "arch.json").read_text())
    write_manifest(path, {k: v for k, v in manifest.items() if k != "files"})

    with pytest.raises(ExportError, match="holds pickled payloads .*refusing to load it"):
        load_module(path)
    assert not marker.exists()
    with pytest.raises(Exception):  # noqa: B017 - the payload is not a tensor; what matters is that it ran
        torch.export.load(program)
    assert marker.exists(), "the crafted archive is not the attack this test means it to be"


class _NotExportable(nn.Module):
    """Branches on the input's values, which torch.export cannot trace."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 16), nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(x.sum()) < -1e9:  # a data-dependent branch
            x = -x
        return self.fc2(torch.relu(self.fc1(x)))


def test_a_model_torch_export_cannot_handle_still_exports_its_weights(tmp_path) -> None:
    net = Supernet(_NotExportable(), example_input=torch.randn(1, 4))
    arch = net.min_arch()
    path = export_subnet(net, tmp_path / "export", arch)
    manifest = json.loads((path / "arch.json").read_text())
    assert manifest["program"] is None and manifest["program_error"]
    assert sorted(p.name for p in path.iterdir()) == ["arch.json", "model.safetensors"]
    with pytest.raises(ExportError, match=r"has no torch.export program \(.+\); load the weights .* load_subnet"):
        load_module(path)
    x = torch.randn(3, 4)
    torch.testing.assert_close(load_subnet(path, net)(x), sub_network_outputs(net, arch, x))


def test_save_module_verifies_against_the_model_itself(tmp_path) -> None:
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
    path = save_module(model, tmp_path / "m", torch.zeros(1, 3), inputs=[torch.randn(4, 3)])
    fresh = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(2, 3)
    torch.testing.assert_close(load_subnet(path, fresh)(x), model(x))
    torch.testing.assert_close(load_module(path)(x), model(x))


def test_the_readme_load_snippet_runs_verbatim(tmp_path, monkeypatch) -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```python\n")[1:]]
    (snippet,) = [b for b in blocks if "load_subnet(" in b]
    net = cnn_supernet()
    monkeypatch.chdir(tmp_path)
    export_subnet(net, "nas_runs/demo/best_subnet", ARCH)
    namespace = {"supernet": net}  # what the README says `supernet` is
    exec(compile(snippet, "README.md", "exec"), namespace)
    x = torch.randn(4, 1, 8, 8)
    expected = sub_network_outputs(net, {**net.max_arch(), **ARCH}, x)
    with torch.no_grad():
        torch.testing.assert_close(namespace["program"](x), expected, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(namespace["model"](x), expected, atol=1e-5, rtol=1e-4)


def test_verification_runs_in_full_fp32_and_restores_the_users_settings() -> None:
    from lightning_nas.export._verify import full_precision

    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")  # TF32 allowed, as many training scripts set it
    try:
        with full_precision():
            assert torch.get_float32_matmul_precision() == "highest"
            assert not torch.backends.cudnn.allow_tf32
        assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.allow_tf32
    finally:
        torch.set_float32_matmul_precision(previous)


def test_an_export_through_a_symlink_replaces_the_linked_directory(tmp_path) -> None:
    net = cnn_supernet()
    real = export_subnet(net, tmp_path / "real", ARCH)
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    assert export_subnet(net, link, net.min_arch()) == real
    assert link.is_symlink() and json.loads((link / "arch.json").read_text())["arch"] == net.min_arch()
