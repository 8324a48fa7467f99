"""scripts/setup: two layers, quiet, and nothing reinstalled when nothing changed.

Run on a copy of the script with a stand-in `.venv/bin/python` that records how
it is called, so the real virtual environment is never touched.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fixtures import ROOT, require

FAKE_PYTHON = """#!/usr/bin/env bash
echo "$*" >>"$(dirname "$0")/../calls"
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    shutil.copy2(ROOT / "scripts" / "setup", tmp_path / "scripts" / "setup")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    return tmp_path


def setup(project: Path, *args: str) -> tuple[str, list[str]]:
    result = subprocess.run(
        [str(project / "scripts" / "setup"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    calls = project / ".venv" / "calls"
    lines = calls.read_text().splitlines() if calls.exists() else []
    return result.stdout + result.stderr, lines


def test_the_runtime_layer_installs_once_then_says_nothing(project: Path) -> None:
    output, calls = setup(project)
    assert output == "setup: installing gnurouter into .venv\n"
    [install] = calls
    assert install.startswith("-m pip install") and install.endswith("-e .")
    assert "--no-compile" in install
    assert setup(project) == ("", calls)  # nothing changed: not a word, no pip
    (project / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "2"\n')
    output, again = setup(project)
    assert output == "setup: installing gnurouter into .venv\n" and len(again) == 2


def test_the_test_layer_adds_the_extras_and_includes_the_runtime_one(project: Path) -> None:
    # As root, a missing tshark or chromium would be apt-installed: they are there when the
    # suite runs (scripts/test sets them up first).
    require(shutil.which("tshark") is not None, "tshark")
    require(Path("/usr/bin/chromium").exists(), "chromium")
    output, calls = setup(project, "--test")
    assert output == "setup: installing gnurouter[test,lint,bench] into .venv\n"
    assert calls[-1].endswith("-e .[test,lint,bench]")
    assert setup(project, "--test") == ("", calls)
    assert setup(project) == ("", calls)  # the runtime layer is part of the test layer


def test_a_failed_install_shows_pips_words_and_keeps_no_stamp(project: Path) -> None:
    (project / ".venv" / "bin" / "python").write_text(
        "#!/usr/bin/env bash\n"
        "echo 'ERROR: No matching distribution found for twisted' >&2\n"
        "exit 1\n"
    )
    result = subprocess.run(
        [str(project / "scripts" / "setup")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "No matching distribution found for twisted" in result.stderr
    assert "setup: pip install failed" in result.stderr
    assert not (project / ".venv" / ".gnurouter-setup").exists()


def test_an_unknown_option_is_refused(project: Path) -> None:
    result = subprocess.run(
        [str(project / "scripts" / "setup"), "--tests"], capture_output=True, text=True
    )
    assert result.returncode == 2 and result.stderr == "usage: scripts/setup [--test]\n"
