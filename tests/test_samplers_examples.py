"""Every public class of lightning_nas.samplers carries a docstring example that runs."""

from __future__ import annotations

import contextlib
import doctest
import inspect
import io
import textwrap

import optuna
import pytest

import lightning_nas.samplers as samplers

PUBLIC_CLASSES = [name for name in samplers.__all__ if inspect.isclass(getattr(samplers, name))]


def blocks(doc: str, directive: str) -> list[str]:
    """The bodies of the ``.. <directive>::`` blocks of a cleaned docstring."""
    out = []
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if line.strip() != f".. {directive}::":
            continue
        indent = len(line) - len(line.lstrip())
        body = []
        for following in lines[i + 1 :]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            body.append(following)
        text = textwrap.dedent("\n".join(body))
        # Drop sphinx options such as ``:options: +ELLIPSIS`` at the top of the block.
        out.append("\n".join(line for line in text.splitlines() if not line.startswith(":")).strip())
    return out


@pytest.mark.parametrize("name", PUBLIC_CLASSES)
def test_docstring_example_runs(name: str) -> None:
    doc = inspect.getdoc(getattr(samplers, name)) or ""
    codes = blocks(doc, "testcode")
    assert codes, f"{name} has no runnable example"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        exec(compile(codes[0], f"<{name} example>", "exec"), {})
    for expected in blocks(doc, "testoutput"):
        checker = doctest.OutputChecker()
        assert checker.check_output(expected + "\n", stdout.getvalue(), doctest.ELLIPSIS), stdout.getvalue()


def test_all_is_complete() -> None:
    exported = {n for n in dir(samplers) if not n.startswith("_")}
    assert set(samplers.__all__) == exported - {"annotations"}
