"""``tracedfutures dashboards -o DIR`` (tracedfutures/_cli/dashboards.py), and the wheel that carries its files.

The command runs as a user runs it, ``python -m tracedfutures`` in a fresh interpreter (with the package as
installed here), and must write exactly the files of ``EXPECTED``, each byte for byte the repository's file it is
a copy of. A wheel built from this tree must carry the same files and the ``tracedfutures`` console script.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from clisupport import tracedfutures

ROOT = Path(__file__).resolve().parent.parent
#: Each file the command writes (relative to DIR) and the file of the repository it must equal.
EXPECTED = {
    "grafana/dashboards/tracedfutures-executors.json": ROOT / "dashboards" / "tracedfutures-executors.json",
    "grafana/dashboards/tracedfutures-waits.json": ROOT / "dashboards" / "tracedfutures-waits.json",
    "grafana/provisioning/dashboards/tracedfutures.yaml": (
        ROOT / "examples" / "grafana" / "provisioning" / "dashboards" / "tracedfutures.yaml"
    ),
    "grafana/provisioning/datasources/tracedfutures.yaml": (
        ROOT / "examples" / "grafana" / "provisioning" / "datasources" / "tracedfutures.yaml"
    ),
    "prometheus/rules/tracedfutures.yaml": ROOT / "dashboards" / "alerts.yaml",
}


def tree(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory``: its path relative to it (with /) and its bytes."""
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def expected_bytes() -> dict[str, bytes]:
    return {relative: source.read_bytes() for relative, source in EXPECTED.items()}


def wrote_lines(output: Path) -> list[str]:
    return [f"wrote {output.joinpath(*relative.split('/'))}" for relative in sorted(EXPECTED)]


def test_writes_the_dashboards_rules_and_provisioning(tmp_path: Path) -> None:
    output = tmp_path / "out" / "deeper"  # made, parents too
    proc = tracedfutures("dashboards", "-o", output, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert tree(output) == expected_bytes()
    assert proc.stdout.splitlines() == wrote_lines(output)
    assert proc.stderr == ""


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    output = tmp_path / "out"
    assert tracedfutures("dashboards", "-o", output, cwd=tmp_path).returncode == 0
    edited = output / "grafana" / "dashboards" / "tracedfutures-waits.json"
    edited.write_text("edited by hand\n", encoding="utf-8")
    (output / "grafana" / "dashboards" / "mine.json").write_text("{}\n", encoding="utf-8")
    before = tree(output)

    proc = tracedfutures("dashboards", "-o", output, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""
    assert f"{edited} exists" in proc.stderr and "--force" in proc.stderr, proc.stderr
    assert tree(output) == before  # nothing changed, the edited file included

    proc = tracedfutures("dashboards", "-o", output, "--force", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == wrote_lines(output)
    # Every file written again, the edit undone; a file that is not the command's own is left alone.
    assert tree(output) == {**expected_bytes(), "grafana/dashboards/mine.json": b"{}\n"}


def test_one_existing_file_is_enough_to_write_nothing(tmp_path: Path) -> None:
    output = tmp_path / "out"
    rules = output / "prometheus" / "rules" / "tracedfutures.yaml"
    rules.parent.mkdir(parents=True)
    rules.write_text("groups: []\n", encoding="utf-8")
    proc = tracedfutures("dashboards", "-o", output, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{rules} exists" in proc.stderr, proc.stderr
    assert tree(output) == {"prometheus/rules/tracedfutures.yaml": b"groups: []\n"}


def test_command_line_errors(tmp_path: Path) -> None:
    no_verb = tracedfutures(cwd=tmp_path)
    assert no_verb.returncode == 2 and "usage: tracedfutures" in no_verb.stderr, no_verb.stderr
    no_output = tracedfutures("dashboards", cwd=tmp_path)
    assert no_output.returncode == 2 and "-o/--output" in no_output.stderr, no_output.stderr
    a_file = tmp_path / "a-file"
    a_file.write_text("", encoding="utf-8")
    not_a_directory = tracedfutures("dashboards", "-o", a_file, cwd=tmp_path)
    assert not_a_directory.returncode == 1 and "cannot write" in not_a_directory.stderr, not_a_directory.stderr


def test_help_lists_the_verb(tmp_path: Path) -> None:
    proc = tracedfutures("--help", cwd=tmp_path)
    assert proc.returncode == 0 and "dashboards" in proc.stdout, proc.stdout + proc.stderr


def wheel_backend_missing() -> str | None:
    """Why this interpreter cannot build a wheel without build isolation (offline), or None."""
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return "setuptools is not installed here (tests/requirements.txt pins it)"
    major_minor = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    if major_minor < (70, 1) and importlib.util.find_spec("wheel") is None:
        return f"setuptools {version} needs the wheel package to build wheels (70.1 and later do not)"
    return None


def test_the_wheel_carries_the_files_and_the_command(tmp_path: Path) -> None:
    missing = wheel_backend_missing()
    if missing is not None:
        pytest.skip(missing)
    # Built from a copy of what the wheel is made of, so the build's own files (build/, *.egg-info) stay out of
    # the working tree.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "tracedfutures", source / "tracedfutures", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "-w", str(dist), str(source)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = dist.glob("tracedfutures-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        data = {name: archive.read(name) for name in names if name.startswith("tracedfutures/_dashboards/")}
        (entry_points,) = (name for name in names if name.endswith(".dist-info/entry_points.txt"))
        entry_points_text = archive.read(entry_points).decode()
    assert data == {f"tracedfutures/_dashboards/{relative}": content for relative, content in expected_bytes().items()}
    assert {"tracedfutures/__main__.py", "tracedfutures/_cli/__init__.py", "tracedfutures/_cli/dashboards.py"} <= names
    # The page of `tracedfutures report`: its template, script and style, and the vendored uPlot with its licence.
    report_page = {f.relative_to(ROOT).as_posix() for f in (ROOT / "tracedfutures/_report").rglob("*") if f.is_file()}
    assert "tracedfutures/_report/uplot/LICENSE" in report_page and report_page <= names
    scripts = configparser.ConfigParser()
    scripts.read_string(entry_points_text)
    assert dict(scripts["console_scripts"]) == {"tracedfutures": "tracedfutures.__main__:main"}
