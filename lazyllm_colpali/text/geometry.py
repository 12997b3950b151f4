"""Boxes and text lines in page-image pixels (x0, y0, x1, y1; y down): the shared leaf of the layout arm.

    >>> intersection((0, 0, 10, 10), (5, 5, 20, 20)), round(iou((0, 0, 10, 10), (0, 0, 10, 5)), 2)
    (25, 0.5)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

Box = Tuple[float, float, float, float]   # x0, y0, x1, y1 in image pixels, y down


@dataclass
class Line:
    """A run of text with its box: an OCR line, or one word of the PDF text layer. ``glued`` marks a word
    that continues the previous one without a space (a word cut in two where it crosses a region border)."""
    box: Box
    text: str
    glued: bool = False


def area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def intersection(a: Box, b: Box) -> float:
    return area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


def iou(a: Box, b: Box) -> float:
    inter = intersection(a, b)
    return inter / max(1e-9, area(a) + area(b) - inter)


def centre(box: Box) -> Tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def contains_point(box: Box, x: float, y: float) -> bool:
    return box[0] <= x <= box[2] and box[1] <= y <= box[3]


def union(a: Box, b: Box) -> Box:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])
