"""Text burned into images before the model sees them (``fastsas embed --overlay``): the
test of whether an embedding is pulled by overlaid text (docs/definitions.md, "Class
separability", overlaid-text bias). Rendered with Pillow onto the decoded RGB frame."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["Overlay", "parse_overlays", "render_overlays"]


@dataclass(frozen=True)
class Overlay:
    """One string drawn onto every image.

    Attributes
    ----------
    text : str
        The string (an empty string draws nothing).
    x, y : float
        Its top-left corner as fractions of the image width and height (0..1).
    size : float
        Its font height as a fraction of the image height (0..1].
    colour : tuple of int
        RGB, 0..255 (default white, as burned-in annotations usually are).

    Examples
    --------
    >>> from fastsas.embedding.overlay import Overlay
    >>> Overlay("L").to_dict()["text"]
    'L'
    """

    text: str
    x: float = 0.05
    y: float = 0.05
    size: float = 0.15
    colour: tuple[int, int, int] = (255, 255, 255)

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise TypeError(f"overlay text must be a string, got {type(self.text).__name__}")
        if not (0.0 <= self.x <= 1.0 and 0.0 <= self.y <= 1.0):
            raise ValueError(f"overlay position x={self.x}, y={self.y} must be fractions of the image in [0, 1]")
        if not 0.0 < self.size <= 1.0:
            raise ValueError(f"overlay size {self.size} must be a fraction of the image height in (0, 1]")
        if len(self.colour) != 3 or not all(0 <= int(c) <= 255 for c in self.colour):
            raise ValueError(f"overlay colour {self.colour} must be three integers in 0..255")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["colour"] = list(self.colour)
        return d


def parse_overlays(spec: Any) -> tuple[Overlay, ...]:
    """Overlays from None, a string, an :class:`Overlay`, a dict of its fields, or a sequence
    of those. The command line's form ``TEXT@x,y,size`` gives a position and size."""
    if spec is None:
        return ()
    if isinstance(spec, (str, Overlay, dict)):
        spec = [spec]
    out = []
    for item in spec:
        if isinstance(item, Overlay):
            out.append(item)
        elif isinstance(item, dict):
            out.append(Overlay(**{**item, "colour": tuple(item.get("colour", (255, 255, 255)))}))
        elif isinstance(item, str):
            text, at, where = item.rpartition("@") if "@" in item else (item, "", "")
            if at:
                try:
                    x, y, size = (float(v) for v in where.split(","))
                except ValueError:
                    raise ValueError(f"overlay {item!r}: the part after @ must be x,y,size (fractions), "
                                     "e.g. 'L@0.05,0.05,0.15'") from None
                out.append(Overlay(text, x, y, size))
            else:
                out.append(Overlay(text))
        else:
            raise TypeError(f"overlay must be a string, an Overlay or a dict, got {type(item).__name__}")
    return tuple(out)


def render_overlays(frame: np.ndarray, overlays: Sequence[Overlay]) -> np.ndarray:
    """`frame` (h, w, 3) uint8 with every overlay drawn on it (a new array; the same
    values when no overlay has text)."""
    if not any(o.text for o in overlays):
        return frame
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(np.ascontiguousarray(frame))
    draw = ImageDraw.Draw(image)
    h, w = frame.shape[:2]
    for o in overlays:
        if not o.text:
            continue
        font = ImageFont.load_default(size=max(1, int(round(o.size * h))))
        draw.text((o.x * w, o.y * h), o.text, fill=tuple(int(c) for c in o.colour), font=font)
    return np.asarray(image)
