"""The test cluster knows no project: what a project's tests need of it (its CRD, the folder its processes run
in, the variable that names their termination-message file) they pass in."""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
PROJECT = 'self' + 'taught'  # spelt in two halves, so that this file does not find itself


def test_no_file_of_the_package_names_the_project() -> None:
    files = sorted(path for path in HERE.rglob('*') if path.is_file() and path.suffix in ('.py', '.md'))
    assert HERE / 'cluster.py' in files and HERE / 'README.md' in files
    found = [f'{path.relative_to(HERE)}:{number}: {line.strip()}' for path in files
             for number, line in enumerate(path.read_text().splitlines(), 1) if PROJECT in line.lower()]
    assert not found, '\n'.join(found)
