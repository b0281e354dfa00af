"""The README's Python snippets run, in order, as one program (a test keeps them honest)."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
NEWER_PYTHON = re.compile(r"# Python 3\.(\d+)\+")


def _snippets() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    runnable = []
    for block in blocks:
        needs = NEWER_PYTHON.search(block)
        if needs is None or sys.version_info >= (3, int(needs.group(1))):
            runnable.append(block)
    return runnable


def test_readme_snippets_run():
    program = "\n".join(_snippets())
    assert "epolloop" in program
    result = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "done" in result.stdout
