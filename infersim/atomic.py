"""Write results so that they appear whole or not at all."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from infersim.errors import ConfigError


@contextmanager
def atomic_folder(out: str | Path, option: str = "--out") -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success it replaces ``out`` (an old
    ``out`` is swapped away and removed), on failure it is removed and ``out`` untouched."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(option, str(out), "exists and is not a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        tmp.chmod(0o777 & ~_umask())
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def replace_atomic(tmp: str | Path, path: Path) -> None:
    """Give ``tmp`` (a mkstemp file, mode 0600) the usual permissions, then rename it."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary sibling file, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        replace_atomic(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
