"""Preprocessed slices on disk, built once per image and streamed row by row.

Training reads random batches from many subjects. Holding every slice in memory would make
memory grow with the dataset, so each image's valid slices are stored once as a ``.npy`` file
(uint16, 1/65535 steps of the [0, 1] range; the flow sees 12-bit data) with their slice
positions, and batches are assembled with positioned reads (``os.pread``): memory holds one
batch, however many subjects there are. Cache entries are keyed by the image file (path, size,
modification time) and the preprocessing settings, written atomically, and reused by later
runs (``-w/--work-dir``).
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .__about__ import __version__
from .atomic import atomic_write
from .preprocessing import PreprocessingConfig, to_slices
from .threads import limit_threads

_SCALE = 65535.0


@dataclass(frozen=True)
class CachedImage:
    """One image's valid slices in the cache."""

    source: Path
    slices_file: Path
    positions: np.ndarray  # slice position of each stored row
    data_offset: int  # byte offset of row 0 in the .npy file

    @property
    def rows(self) -> int:
        return len(self.positions)


def cache_key(path: Path, config: PreprocessingConfig) -> str:
    stat = path.stat()
    identity = {"path": str(path.resolve()), "size": stat.st_size, "mtime": stat.st_mtime_ns,
                "config": config.to_dict(), "version": __version__}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


def _open_entry(source: Path, slices_file: Path, positions_file: Path) -> CachedImage:
    with open(slices_file, "rb") as stream:
        major, _ = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(stream)
        offset = stream.tell()
    if dtype != np.uint16 or fortran or len(shape) != 3:
        raise ValueError(f"{slices_file}: unexpected cache layout")
    return CachedImage(source, slices_file, np.load(positions_file), offset)


def _build_entry(job: tuple[Path, PreprocessingConfig, Path]) -> tuple[Path, Path, Path]:
    source, config, stem = job
    slices_file, positions_file = stem.with_suffix(".slices.npy"), stem.with_suffix(".positions.npy")
    if not (slices_file.is_file() and positions_file.is_file()):
        slices, geometry = to_slices(source, config)
        rows = np.round(slices[geometry.valid] * _SCALE).astype(np.uint16)
        for target, array in ((positions_file, geometry.positions[geometry.valid].astype(np.int16)),
                              (slices_file, rows)):
            with atomic_write(target) as stream:
                np.save(stream, array)
    return source, slices_file, positions_file


def build_cache(sources: list[Path], config: PreprocessingConfig, cache_dir: Path,
                nprocs: int = 1, progress: bool = True) -> list[CachedImage]:
    """Preprocess every source image not yet cached (``nprocs`` workers); return all entries."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(Path(source), config, cache_dir / cache_key(Path(source), config)) for source in sources]
    bar = tqdm(total=len(jobs), desc="preprocessing", unit="image", disable=not progress, file=sys.stderr)
    results = []
    if nprocs == 1:
        for job in jobs:
            results.append(_build_entry(job))
            bar.update()
    else:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(nprocs, mp_context=context, initializer=limit_threads, initargs=(1,)) as pool:
            for result in pool.map(_build_entry, jobs):
                results.append(result)
                bar.update()
    bar.close()
    return [_open_entry(*result) for result in results]


class SliceStore:
    """Random access to the rows of many cached images, without loading them."""

    def __init__(self, entries: list[CachedImage], slice_shape: tuple[int, int]):
        self.entries = [entry for entry in entries if entry.rows > 0]
        self.slice_shape = tuple(slice_shape)
        self.row_bytes = int(np.prod(self.slice_shape)) * 2
        self.image_of_row = np.concatenate(
            [np.full(entry.rows, index, dtype=np.int32) for index, entry in enumerate(self.entries)]
        ) if self.entries else np.zeros(0, dtype=np.int32)
        self.row_in_image = np.concatenate(
            [np.arange(entry.rows, dtype=np.int32) for entry in self.entries]
        ) if self.entries else np.zeros(0, dtype=np.int32)
        self.positions = np.concatenate(
            [entry.positions.astype(np.int64) for entry in self.entries]
        ) if self.entries else np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.image_of_row)

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Slices ``(len(rows), H, W)`` float32 in [0, 1], in the order asked."""
        rows = np.asarray(rows, dtype=np.int64)
        output = np.empty((len(rows),) + self.slice_shape, dtype=np.uint16)
        order = np.argsort(self.image_of_row[rows], kind="stable")
        current, descriptor = None, None
        try:
            for index in order:
                image = int(self.image_of_row[rows[index]])
                if image != current:
                    if descriptor is not None:
                        os.close(descriptor)
                    descriptor, current = os.open(self.entries[image].slices_file, os.O_RDONLY), image
                offset = self.entries[image].data_offset + int(self.row_in_image[rows[index]]) * self.row_bytes
                buffer = os.pread(descriptor, self.row_bytes, offset)
                output[index] = np.frombuffer(buffer, dtype=np.uint16).reshape(self.slice_shape)
        finally:
            if descriptor is not None:
                os.close(descriptor)
        return output.astype(np.float32) / _SCALE

    def position_statistics(self, n_positions: int, quantiles: np.ndarray,
                            chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Mean slice and intensity quantiles (of the head, > 2 % of the range) per position.

        Positions no image covers get a zero mean and zero quantiles.
        """
        means = np.zeros((n_positions,) + self.slice_shape, dtype=np.float64)
        counts = np.zeros(n_positions, dtype=np.int64)
        result = np.zeros((n_positions, len(quantiles)), dtype=np.float32)
        for position in range(n_positions):
            rows = np.flatnonzero(self.positions == position)
            if rows.size == 0:
                continue
            values = []
            for start in range(0, rows.size, chunk):
                block = self.read(rows[start:start + chunk])
                means[position] += block.sum(0)
                # a subsample keeps the quantile computation light
                values.append(block[:, ::2, ::2][block[:, ::2, ::2] > 0.02])
            counts[position] = rows.size
            pooled = np.concatenate(values)
            if pooled.size:
                result[position] = np.quantile(pooled, quantiles)
        covered = counts > 0
        means[covered] /= counts[covered, None, None]
        return means.astype(np.float32), result
