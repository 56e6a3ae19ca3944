"""Getting data onto the GPU: device arrays (CuPy, or anything with DLPack such as torch CUDA
tensors) are used where they are, without a copy; host arrays (NumPy, memmap) and chunk
iterators are streamed through two pinned buffers on a copy stream, so the transfer of one
chunk overlaps the compute on the previous one. Bad rows found by the GPU kernels are
reported through fastsas._badrows, worded exactly like the CPU engine's."""
from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np

from fastsas._badrows import NON_FINITE, ZERO_NORM, BadRowCollector, BadRows
from fastsas._validate import check_matrix_shape, computed_dtype, match_pair

__all__ = ["BadRowCollector", "BadRows", "NON_FINITE", "PinnedStream", "ZERO_NORM", "as_device", "common_dtype",
           "cupy_module", "device_pair", "is_device_array", "row_stride", "to_device"]


def cupy_module():
    import cupy

    return cupy


def is_device_array(x: Any) -> bool:
    """A CuPy array, or a DLPack producer living on a CUDA device (torch CUDA tensors)."""
    module = type(x).__module__
    if module.startswith("cupy"):
        return True
    dev = getattr(x, "__dlpack_device__", None)
    if dev is None:
        return False
    try:
        kind = int(dev()[0])
    except Exception:  # noqa: BLE001 - not a usable DLPack producer
        return False
    return kind in (2, 3, 13)  # kDLCUDA, kDLCUDAHost, kDLCUDAManaged


def as_device(x: Any, name: str, min_rows: int = 0, *, integers: bool = False):
    """A 2-D float32/float64 CuPy view of a device array, without a copy (float16, and with
    `integers` int8 / uint8 / bool, is converted to float32 once, as on the CPU). Rows must be contiguous (column stride 1); other layouts
    are copied once into C order."""
    cp = cupy_module()
    if not isinstance(x, cp.ndarray):
        if hasattr(x, "detach"):  # torch: DLPack refuses tensors that require grad
            x = x.detach()
        try:
            x = cp.from_dlpack(x)
        except Exception as exc:  # noqa: BLE001 - report any intake failure the same way
            raise TypeError(f"{name} is a device array CuPy cannot take through DLPack: {exc}") from exc
    target = computed_dtype(x.dtype, name, "cupy", integers=integers)
    if x.dtype != target:
        x = x.astype(target)
    check_matrix_shape(x.shape, name, min_rows)
    if x.shape[0] > 0 and (x.strides[1] != x.itemsize or x.strides[0] % x.itemsize):
        x = cp.ascontiguousarray(x)
    return x


def device_pair(images: Any, texts: Any, names: tuple[str, str] = ("images", "texts"), *, min_rows: int = 2,
                paired: bool = True, integers: bool = False):
    """Validated device (CuPy) views of two device inputs, with the CPU's checks and messages
    (fastsas._validate.match_pair; `integers` as fastsas._validate.computed_dtype)."""
    x = as_device(images, names[0], min_rows, integers=integers)
    y = as_device(texts, names[1], min_rows, integers=integers)
    return match_pair(x, y, names, paired=paired)


def to_device(x: Any, name: str):
    """A device array in place (as_device), or a validated host array copied to the device
    once (whole: for the pairwise kernels, which need every row resident)."""
    if is_device_array(x):
        return as_device(x, name)
    return as_device(cupy_module().asarray(x), name)


def row_stride(x) -> int:
    """Elements between consecutive rows of a row-contiguous CuPy array."""
    return int(x.strides[0] // x.itemsize) if x.shape[0] > 1 else int(x.shape[1])


def common_dtype(a, b):
    """float32 only when both are float32 (mixed precisions are computed in float64)."""
    cp = cupy_module()
    return cp.float32 if (a.dtype == cp.float32 and b.dtype == cp.float32) else cp.float64


DEFAULT_CHUNK_ROWS = 32768


class PinnedStream:
    """Host pairs of chunks -> device pairs, double-buffered.

    Two pinned host buffers and two device buffers per side; chunk k goes through buffer
    k % 2: the host copies it into pinned memory (the only CPU work: this is where a memmap
    is read), an asynchronous copy on a dedicated stream moves it to the device, and the
    compute stream waits on that copy's event. Before a buffer is reused, the host waits for
    its previous transfer (pinned side) and the copy stream waits for the compute that read
    it (device side). So while the GPU computes on chunk k, chunk k + 1 is read and sent.

    `bytes_copied` and the transfer events allow the benchmark to report PCIe throughput.
    """

    def __init__(self, dim: int, dtype: np.dtype, chunk_rows: int = DEFAULT_CHUNK_ROWS):
        cp = cupy_module()
        self.dim, self.dtype, self.chunk_rows = dim, np.dtype(dtype), int(chunk_rows)
        nbytes = self.chunk_rows * dim * self.dtype.itemsize
        self._pinned = [[cp.cuda.alloc_pinned_memory(nbytes) for _ in range(2)] for _ in range(2)]
        self._host = [[np.frombuffer(m, dtype=self.dtype, count=self.chunk_rows * dim).reshape(self.chunk_rows, dim)
                       for m in side] for side in self._pinned]
        self._device = [[cp.empty((self.chunk_rows, dim), dtype=self.dtype) for _ in range(2)] for _ in range(2)]
        self._copy_stream = cp.cuda.Stream(non_blocking=True)
        self._copied = [None, None]
        self._consumed = [None, None]
        self.bytes_copied = 0

    def _send(self, k: int, x: np.ndarray, y: np.ndarray):
        cp = cupy_module()
        rows = x.shape[0]
        if self._copied[k] is not None:
            self._copied[k].synchronize()  # the pinned buffer's previous transfer is done
        for side, src in enumerate((x, y)):
            np.copyto(self._host[side][k][:rows], src, casting="same_kind")
        compute = cp.cuda.get_current_stream()
        if self._consumed[k] is not None:
            self._copy_stream.wait_event(self._consumed[k])
        nbytes = rows * self.dim * self.dtype.itemsize
        for side in range(2):
            cp.cuda.runtime.memcpyAsync(self._device[side][k].data.ptr, self._host[side][k].ctypes.data, nbytes,
                                        cp.cuda.runtime.memcpyHostToDevice, self._copy_stream.ptr)
        event = cp.cuda.Event(block=False, disable_timing=True)
        event.record(self._copy_stream)
        self._copied[k] = event
        compute.wait_event(event)
        self.bytes_copied += 2 * nbytes
        return self._device[0][k][:rows], self._device[1][k][:rows]

    def _release(self, k: int) -> None:
        cp = cupy_module()
        event = cp.cuda.Event(block=False, disable_timing=True)
        event.record(cp.cuda.get_current_stream())
        self._consumed[k] = event

    def stream(self, chunks: Iterable[tuple[int, np.ndarray, np.ndarray]]) -> Iterator[tuple[int, Any, Any]]:
        """(offset, x, y) host chunks -> (offset, x_dev, y_dev); the consumer must enqueue all
        its work on the current stream before asking for the next chunk."""
        k = 0
        for offset, x, y in chunks:
            for start in range(0, x.shape[0], self.chunk_rows):
                stop = min(x.shape[0], start + self.chunk_rows)
                dx, dy = self._send(k, x[start:stop], y[start:stop])
                yield offset + start, dx, dy
                self._release(k)
                k ^= 1
