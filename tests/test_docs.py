"""Every ```python block of README.md and docs/**/*.md runs, as a script, in a fresh interpreter.

Each block is written to a file of its own in an empty directory and run with this interpreter (so with the
package as installed here), with a timeout and without the environment's ``OTEL_*`` and
``PROMETHEUS_MULTIPROC_DIR`` settings. It passes when it exits with status 0 and prints no traceback.

A block that must not run here says so in an HTML comment on the line before it (blank lines between are
allowed), with its reason::

    <!-- skip: exports over OTLP to a collector on localhost:4318 -->
    ```python
    ...
    ```

Such blocks are reported as skipped tests with that reason (``pytest -rs`` lists them). Keep them rare: a
skip marker that precedes no python block, or has no reason, fails ``test_skip_markers``.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
#: Seconds one block may run (they take about one each; the slowest start a process pool).
TIMEOUT = 120
#: How many blocks may be skipped before the skips stop being rare.
MAX_SKIPPED = 4
LANGUAGES = {"python", "py", "python3"}

FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
SKIP = re.compile(r"^\s*<!--\s*skip:(?P<reason>.*?)-->\s*$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    code: str
    skip: str | None  # the reason, when the block is marked to be skipped

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


@dataclass(frozen=True)
class Marker:
    page: Path
    line: int
    reason: str
    used: bool


def fenced(lines: list[str], i: int, opening: re.Match[str]) -> tuple[list[str], int]:
    """The body of the fenced block opened on line ``i``, and the line of its closing fence (or the end): it ends
    at a fence of the same character, at least as long, with no info string."""
    fence, indent = opening.group("fence"), len(opening.group("indent"))
    body: list[str] = []
    j = i + 1
    while j < len(lines):
        closing = FENCE.match(lines[j])
        if (
            closing is not None
            and closing.group("fence")[0] == fence[0]
            and len(closing.group("fence")) >= len(fence)
            and not closing.group("info").strip()
        ):
            break
        body.append(lines[j][indent:] if lines[j][:indent].isspace() else lines[j])
        j += 1
    return body, j


def parse(page: Path, text: str) -> tuple[list[Block], list[Marker]]:
    """The python blocks of one markdown page, and its skip markers (outside fences only)."""
    blocks: list[Block] = []
    markers: list[Marker] = []
    lines = text.splitlines()
    pending: tuple[int, str] | None = None  # a skip marker waiting for the next non-blank line
    i = 0
    while i < len(lines):
        line = lines[i]
        opening = FENCE.match(line)
        if opening is None:
            skip = SKIP.match(line)
            if skip is not None:
                if pending is not None:
                    markers.append(Marker(page, pending[0], pending[1], used=False))
                pending = (i + 1, skip.group("reason").strip())
            elif line.strip() and pending is not None:
                markers.append(Marker(page, pending[0], pending[1], used=False))
                pending = None
            i += 1
            continue
        words = opening.group("info").split()
        language = words[0].lower().lstrip("{.") if words else ""
        body, j = fenced(lines, i, opening)
        if language in LANGUAGES:
            reason = None
            if pending is not None:
                reason = pending[1]
                markers.append(Marker(page, pending[0], reason, used=True))
            blocks.append(Block(page, i + 1, textwrap.dedent("\n".join(body)) + "\n", reason))
        elif pending is not None:
            markers.append(Marker(page, pending[0], pending[1], used=False))
        pending = None
        i = j + 1
    if pending is not None:
        markers.append(Marker(page, pending[0], pending[1], used=False))
    return blocks, markers


def collect() -> tuple[list[Block], list[Marker]]:
    blocks: list[Block] = []
    markers: list[Marker] = []
    for page in PAGES:
        found, marks = parse(page, page.read_text(encoding="utf-8"))
        blocks += found
        markers += marks
    return blocks, markers


BLOCKS, MARKERS = collect()


def run_block(code: str, directory: Path) -> tuple[bool, str]:
    """Run ``code`` as a script in ``directory``; (passed, what it printed)."""
    script = directory / "block.py"
    script.write_text(code, encoding="utf-8")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("OTEL_") and key != "PROMETHEUS_MULTIPROC_DIR"
    }
    try:
        proc = subprocess.run(
            [sys.executable, str(script)],
            cwd=directory,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode(errors="replace") + (exc.stderr or b"").decode(errors="replace")
        return False, f"did not end within {TIMEOUT} s\n{output}"
    output = f"--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}"
    if proc.returncode != 0:
        return False, f"exit status {proc.returncode}\n{output}"
    if "Traceback (most recent call last)" in proc.stderr:
        return False, f"exit status 0, but a traceback was printed\n{output}"
    return True, output


def run_block_alone(code: str, directory: Path) -> tuple[bool, str]:
    """``run_block``, one block at a time on this machine: the test command runs several interpreters' tests side
    by side (on the host and in the Debian sid root, which see this repository at the same path but not the same
    /tmp), and the quick start serves /metrics on its documented port."""
    with open(ROOT / ".tf-doc-blocks.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return run_block(code, directory)


@pytest.mark.parametrize("block", BLOCKS, ids=[block.where for block in BLOCKS])
def test_block_runs(block: Block, tmp_path: Path) -> None:
    if block.skip is not None:
        pytest.skip(f"{block.where}: {block.skip}")
    passed, output = run_block_alone(block.code, tmp_path)
    assert passed, f"the python block at {block.where} failed: {output}\n--- the block\n{block.code}"


def test_readme_runs_as_a_whole(tmp_path: Path) -> None:
    """The README's python blocks, one after the other in one script, as a reader pastes them: nothing one
    block needs comes only from another page, and nothing one leaves running breaks the next."""
    readme = [block for block in BLOCKS if block.page.name == "README.md" and block.skip is None]
    assert len(readme) >= 3, [block.where for block in readme]
    passed, output = run_block_alone("\n".join(block.code for block in readme), tmp_path)
    assert passed, f"the README's blocks together failed: {output}"


def test_blocks_found() -> None:
    """The extraction finds the README's quick start and blocks on the docs pages (a parser that finds nothing
    would pass every page)."""
    pages = {block.page.relative_to(ROOT).as_posix() for block in BLOCKS}
    assert "README.md" in pages
    assert len(pages - {"README.md"}) >= 3, pages
    assert len(BLOCKS) >= 10, [block.where for block in BLOCKS]


def test_skip_markers() -> None:
    """Every skip marker has a reason and precedes a python block; skips stay rare."""
    problems = [f"{m.page.relative_to(ROOT)}:{m.line}: skip marker without a reason" for m in MARKERS if not m.reason]
    problems += [
        f"{m.page.relative_to(ROOT)}:{m.line}: skip marker not followed by a ```python block"
        for m in MARKERS
        if not m.used
    ]
    skipped = [f"{block.where}: {block.skip}" for block in BLOCKS if block.skip is not None]
    if len(skipped) > MAX_SKIPPED:
        problems.append(f"{len(skipped)} blocks skipped, at most {MAX_SKIPPED}: " + "; ".join(skipped))
    assert not problems, "\n".join(problems)


def test_a_broken_block_fails(tmp_path: Path) -> None:
    """The runner reports failure for a block that raises, exits non-zero, hides a traceback, or never ends."""
    assert run_block("print('fine')\n", tmp_path) == (True, "--- stdout\nfine\n--- stderr\n")
    assert not run_block("import tracedfutures\ntracedfutures.no_such_name\n", tmp_path)[0]
    assert not run_block("raise SystemExit(3)\n", tmp_path)[0]
    hidden = "import threading\nthreading.Thread(target=lambda: 1 / 0).start()\n"  # exits 0, prints a traceback
    assert not run_block(hidden, tmp_path)[0]


def test_parser() -> None:
    """Fences of any length and indentation, nested fences, markers that are used and those that are not."""
    page = ROOT / "docs" / "example.md"
    text = textwrap.dedent(
        """\
        <!-- skip: needs a collector -->

        ```python
        first()
        ```

        ````markdown
        <!-- skip: inside a fence, not a marker -->
        ```python
        not_a_block()
        ```
        ````

        - a list item:

          ```py
          if True:
              indented()
          ```

        <!-- skip: -->
        ```sh
        echo not python
        ```
        ~~~python
        tilde()
        ~~~
        """
    )
    blocks, markers = parse(page, text)
    assert [(b.line, b.code, b.skip) for b in blocks] == [
        (3, "first()\n", "needs a collector"),
        (16, "if True:\n    indented()\n", None),
        (25, "tilde()\n", None),
    ]
    assert [(m.line, m.reason, m.used) for m in markers] == [(1, "needs a collector", True), (21, "", False)]


def test_the_readmes_metric_table_lists_every_series() -> None:
    """Every metric tracedfutures exposes has a row in the README's table, under its exposed name (a counter with
    its ``_total``), and the table names nothing else."""
    from tracedfutures.metrics import EXECUTOR_METRICS, WAIT_METRICS

    table = (ROOT / "README.md").read_text(encoding="utf-8").split("| metric | type | what it measures |")[1]
    rows = [line for line in table.split("\n\n")[0].splitlines() if line.startswith("| `")]
    named = {name for row in rows for name in re.findall(r"`([a-z_]+)`", row.split(" | ")[0])}
    exposed = {d.name + ("_total" if d.type == "counter" else "") for d in (*EXECUTOR_METRICS, *WAIT_METRICS)}
    assert named == exposed
