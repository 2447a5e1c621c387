"""One anchor for every path, so a notebook runs the same from JupyterLab (cwd notebooks/) and from dvc (cwd root)."""
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def project_path(path: str | Path) -> Path:
    """A path from params (relative to the project root) as an absolute path; absolute paths pass through."""
    path = Path(path)
    return path if path.is_absolute() else PROJECT_ROOT / path


def portable_path(path: str | Path) -> str:
    """Inverse of :func:`project_path` for files written into outputs: relative to the project root when the file is
    inside it (so outputs do not depend on where the project was cloned), absolute otherwise."""
    path = Path(path).resolve()
    return path.relative_to(PROJECT_ROOT).as_posix() if path.is_relative_to(PROJECT_ROOT) else str(path)
