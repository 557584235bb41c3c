"""The sliding window over images too large to hold: a band of rows at a time, windows read as needed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import torch

from lightseg.inference.settings import InferenceSettings
from lightseg.inference.windows import Forward, pair_of, window_boxes, window_starts, window_weights


class RowBlend:
    """The sliding window's weighted sum over a band of rows, for images too large to hold.

    Windows are added in raster order; a window starting at row ``y`` makes every row above
    ``y`` final (no later window reaches it), and :meth:`add` hands those rows back, averaged,
    before adding. The sums live in a circular buffer of one window's height across the
    columns ``[left, right)`` (``C x win_h x (right - left)`` floats), whatever the image's
    height; windows are clipped to those columns. Rows are summed in the order
    :func:`slide_logits` sums them, so the averages are the same numbers.
    """

    def __init__(self, columns: tuple[int, int], window_height: int, weights: torch.Tensor | None) -> None:
        self.left, self.right = columns
        self.rows = window_height
        self.weights = weights
        self.total: torch.Tensor | None = None
        self.count: torch.Tensor | None = None
        self.top: int | None = None  # first row not handed back yet

    def add(self, y: int, x: int, logits: torch.Tensor, max_rows: int) -> Iterator[tuple[int, torch.Tensor]]:
        """Hand back the rows above ``y`` (first row, ``[C,n,w]`` averages; ``n <= max_rows``), then add the window."""
        if self.total is None:
            self.total = logits.new_zeros(logits.shape[0], self.rows, self.right - self.left)
            self.count = logits.new_zeros(1, self.rows, self.right - self.left)
            self.top = y
        yield from self.emit(y, max_rows)
        height, width = logits.shape[-2:]
        low, high = max(x, self.left), min(x + width, self.right)  # the window's columns inside the band's
        inside = slice(low - x, high - x)
        columns = slice(low - self.left, high - self.left)
        weights = None if self.weights is None else self.weights[0].to(logits.device)
        for rows, part in self._segments(y, height):
            chunk = logits[:, part, inside]
            assert self.total is not None and self.count is not None
            if weights is None:
                self.total[:, rows, columns] += chunk
                self.count[:, rows, columns] += 1
            else:
                self.total[:, rows, columns] += chunk * weights[:, part, inside]
                self.count[:, rows, columns] += weights[:, part, inside]

    def emit(self, until: int, max_rows: int) -> Iterator[tuple[int, torch.Tensor]]:
        """Hand back the averages of the rows from the first not handed back to ``until`` (excluded)."""
        assert self.top is not None and self.total is not None and self.count is not None
        while self.top < until:
            n = min(until - self.top, max_rows)
            pieces = []
            for rows, _ in self._segments(self.top, n):
                pieces.append(self.total[:, rows] / self.count[:, rows])
                self.total[:, rows] = 0
                self.count[:, rows] = 0
            yield self.top, pieces[0] if len(pieces) == 1 else torch.cat(pieces, 1)
            self.top += n

    def _segments(self, y: int, n: int) -> list[tuple[slice, slice]]:
        """Rows ``y .. y+n`` of the image as (buffer rows, rows of the n) slices: one, or two where the buffer wraps."""
        start = y % self.rows
        first = min(n, self.rows - start)
        segments = [(slice(start, start + first), slice(0, first))]
        if first < n:
            segments.append((slice(0, n - first), slice(first, n)))
        return segments


#: memory a band of class scores may take (sums, averages, probabilities) before the image is
#: predicted in column stripes
BAND_BYTES = 2**30


def band_columns(classes: int, window_height: int) -> int:
    """The widest band (columns) of ``classes`` scores ``window_height`` rows high that fits :data:`BAND_BYTES`."""
    return max(1, BAND_BYTES // (classes * window_height * 4 * 3))


def column_stripes(width: int, settings: InferenceSettings, max_columns: int) -> list[tuple[int, int]]:
    """Column ranges ``[a, b)`` of at most ``max_columns`` (or one window stride), cut where windows start.

    One range, the whole width, where it fits: the usual case. Narrower stripes bound the
    memory of :func:`tiled_logits` on very wide images with many classes.
    """
    win_w = min(pair_of(settings.window_size)[1], width)
    starts = window_starts(width, win_w, pair_of(settings.stride)[1])
    cuts = [0]
    candidate: int | None = None
    for x in [*starts[1:], width]:
        if x - cuts[-1] > max_columns and candidate is not None and candidate > cuts[-1]:
            cuts.append(candidate)
        candidate = x
    return list(zip(cuts, [*cuts[1:], width], strict=True))


def tiled_logits(
    forward: Forward,
    read: Callable[[list[tuple[int, int]], tuple[int, int]], torch.Tensor],
    size: tuple[int, int],
    settings: InferenceSettings,
    rows: tuple[int, int] | None = None,
    max_rows: int = 128,
    columns: tuple[int, int] | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """The sliding window's averaged logits of an image read window by window, a band of rows at a time.

    ``read(boxes, (h, w))`` returns the windows at ``boxes`` (top-left corners) as
    ``[k,3,h,w]`` in [0, 1]; the next batch is read on a thread while the model runs. Yields
    ``(first row, [C,n,w] logits)`` from top to bottom, ``n <= max_rows``; ``rows``
    ``(start, stop)`` limits them to those rows (resuming, or one process's share), computing
    only the windows that reach them, batched as for those of all rows. ``columns`` ``[a, b)``
    (a stripe of :func:`column_stripes`) limits them to those columns, the windows that reach
    them batched among themselves. Over the whole width, the windows, their batches and the
    sums are those of :func:`slide_logits`: the averages are equal to its, bit for bit, on the
    same device; every stripe and row share of the same image is computed the same way
    whatever the others.
    """
    height, width = size
    (win_h, win_w), boxes = window_boxes(height, width, settings.window_size, settings.stride)
    left, right = columns if columns is not None else (0, width)
    boxes = [(y, x) for y, x in boxes if x < right and x + win_w > left]
    start, stop = rows if rows is not None else (0, height)
    batch = settings.window_batch_size
    needed = [i for i, (y, _) in enumerate(boxes) if y < stop and y + win_h > start]
    if not needed or start >= stop:
        return
    batches = [boxes[i : i + batch] for i in range(needed[0] // batch * batch, needed[-1] + 1, batch)]
    blend = RowBlend((left, right), win_h, window_weights(win_h, win_w, settings.blend))

    def clipped(bands: Iterator[tuple[int, torch.Tensor]]) -> Iterator[tuple[int, torch.Tensor]]:
        for first, values in bands:
            low, high = max(first, start), min(first + values.shape[1], stop)
            if low < high:
                yield low, values[:, low - first : high - first]

    with ThreadPoolExecutor(1, thread_name_prefix="lightseg-windows") as reader:
        pending = reader.submit(read, batches[0], (win_h, win_w))
        for k, chunk in enumerate(batches):
            crops = pending.result()
            if k + 1 < len(batches):
                pending = reader.submit(read, batches[k + 1], (win_h, win_w))
            logits = forward(crops).float()
            for i, (y, x) in enumerate(chunk):
                yield from clipped(blend.add(y, x, logits[i], max_rows))
            assert blend.top is not None
            if blend.top >= stop:
                return
        yield from clipped(blend.emit(height, max_rows))
