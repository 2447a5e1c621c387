"""One anchor for every path, so a notebook runs the same from JupyterLab (cwd notebooks/) and from dvc (cwd root)."""
import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def project_path(path: str | Path) -> Path:
    """A path from params (relative to the project root) as an absolute path; absolute paths pass through."""
    path = Path(path)
    return path if path.is_absolute() else PROJECT_ROOT / path


def portable_path(path: str | Path) -> str:
    """Inverse of :func:`project_path` for paths written into outputs: relative to the project root when the path
    lies inside it (so outputs do not depend on where the project was cloned), absolute otherwise.

    Relative input paths are taken from the project root, like :func:`project_path`. Symbolic links are not
    followed: a data file that links into DVC's cache keeps its path under ``data/``.
    """
    path = Path(os.path.abspath(project_path(path)))
    return path.relative_to(PROJECT_ROOT).as_posix() if path.is_relative_to(PROJECT_ROOT) else str(path)


def relative_link(path: str | Path, start: str | Path) -> str:
    """``path`` relative to the folder ``start``, with forward slashes: a link that works in a markdown file or
    notebook that lives in ``start`` (e.g. the README's figures, or the report notebook's)."""
    return Path(os.path.relpath(project_path(path), project_path(start))).as_posix()
