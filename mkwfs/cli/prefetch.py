"""``mkwfs prefetch``: read files through a mount so that its daemon caches them.

Reading a file on the mount makes the daemon download it once into its content cache;
after that the file is served from disk, also when the server is out of reach. This module
only reads: through the kernel, like any program, with a few files at a time and a
progress bar (tqdm; shown only on a terminal).
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

#: Bytes per read; large, like cp's.
_CHUNK = 1 << 20


@dataclass
class PrefetchResult:
    files: int = 0
    bytes: int = 0
    #: (path, what went wrong), for each file or directory that could not be read.
    failures: list[tuple[Path, str]] = field(default_factory=list)


def _files(paths: Iterable[Path], result: PrefetchResult) -> Iterator[tuple[Path, int]]:
    """Every regular file at or under ``paths`` with its size, each inode once."""
    seen: set[tuple[int, int]] = set()

    def walk_error(error: OSError) -> None:
        result.failures.append((Path(error.filename or "?"), error.strerror or str(error)))

    def candidates() -> Iterator[Path]:
        for path in paths:
            if path.is_dir():
                for top, _dirs, names in os.walk(path, onerror=walk_error):
                    yield from (Path(top, name) for name in sorted(names))
            else:
                yield path

    for path in candidates():
        try:
            st = os.stat(path)
        except OSError as exc:
            result.failures.append((path, exc.strerror or str(exc)))
            continue
        if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            yield path, st.st_size


def prefetch(paths: Iterable[Path], *, jobs: int = 4) -> PrefetchResult:
    """Read every file at or under ``paths`` to its end, ``jobs`` files at a time."""
    result = PrefetchResult()
    files = list(_files(paths, result))
    total = sum(size for _, size in files)
    with (
        tqdm(
            total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="prefetch",
            disable=None, file=sys.stderr, leave=False,
        ) as bar,
        ThreadPoolExecutor(max_workers=jobs) as pool,
    ):  # fmt: skip

        def read(path: Path) -> tuple[int, str | None]:
            done = 0
            try:
                with open(path, "rb", buffering=0) as f:
                    while chunk := f.read(_CHUNK):
                        bar.update(len(chunk))
                        done += len(chunk)
            except OSError as exc:
                return done, exc.strerror or str(exc)
            return done, None

        for (path, _), (done, error) in zip(
            files, pool.map(read, (p for p, _ in files)), strict=True
        ):
            result.bytes += done
            if error is None:
                result.files += 1
            else:
                result.failures.append((path, error))
    return result
