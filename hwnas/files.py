"""Writing files so that a failure leaves nothing half-written: stage beside the target,
then move into place; and reading a user's .npz arrays without pickles. At the bottom of the
layers (with `hwnas.errors`), so every layer can write its outputs and read its inputs the
same way."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from hwnas.errors import HwnasError, OutputError, first_line

if TYPE_CHECKING:
    import numpy as np


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write `data` to `path` through a temporary file in the same folder."""
    tmp = stage_file(path, data)
    try:
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None


def stage_file(path: Path, data: bytes | str) -> Path:
    """Write `data` to a temporary file beside `path` (with the permissions a plain open
    would give) and return it; the caller moves it into place or removes it."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{path}: cannot write (folder '{parent}' does not exist)")
    if path.is_dir():
        raise OutputError(f"{path}: cannot write (it is a directory)")
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
        raise
    return Path(tmp)


def read_npz(path: str | os.PathLike, error: type[HwnasError], where: str) -> dict[str, np.ndarray]:
    """An .npz's arrays by name, read without pickles; `error`, naming `where` ('calibration
    data 'x.npz'', say), when the file is missing or is no .npz."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise error(f"{where}: no such file") from None
    except Exception as e:  # zipfile, numpy and pickle refusals alike
        raise error(f"{where}: cannot read as .npz ({type(e).__name__}: {first_line(e)})") from None
