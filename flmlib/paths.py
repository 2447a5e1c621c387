"""One anchor for every path, so a notebook runs the same from JupyterLab (cwd notebooks/) and from dvc (cwd root)."""
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def project_path(path: str | Path) -> Path:
    """A path from params (relative to the project root) as an absolute path; absolute paths pass through."""
    path = Path(path)
    return path if path.is_absolute() else PROJECT_ROOT / path
