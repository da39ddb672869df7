"""Find the card in a photo and straighten it: the card's outline, cropped and de-skewed.

A phone photo shows a table around the card, turned and tilted; OCR reads best from the card
alone, upright and square. The outline is the largest four-cornered shape whose sides have a
card's proportions (63 x 88 mm), found on the edges of a downscaled copy; its corners are
mapped onto a card-sized rectangle. A flatbed scan whose card fills the frame has no such
shape: the whole image is the card then.

Which way up the card is cannot be told from its outline: a card photographed upside down
comes out upside down, and the reader (`cardmint.scan.read`) tries it the other way round
when the upright reading finds nothing. Other things on the table can have a card's shape
(a box, a sleeve, the frame drawn by clutter around the card): `candidates` gives the
likeliest few, outlines that touch the photo's edge last, and the reader goes down the list
until one reads as a card.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

# Pixels as OpenCV hands them back (its stubs type every result loosely); RGB, uint8.
Image = npt.NDArray[Any]

CARD_ASPECT = 63 / 88  # width / height
ASPECT_TOLERANCE = 0.14  # sides measured on a tilted photo are off by this much
MIN_AREA, MAX_AREA = 0.06, 0.95  # of the photo: else something on the table, or the frame
EDGE_MARGIN = 0.012  # of the photo's long side: a corner this close touches the edge
WORK_SIDE = 640  # the long side of the copy the outline is searched on
OUT_W, OUT_H = 630, 880  # the straightened card (10 px/mm)


@dataclass(frozen=True)
class Located:
    card: Image  # RGB, OUT_W x OUT_H (or the whole photo resized, when no outline)
    corners: npt.NDArray[np.float32] | None  # tl, tr, br, bl in the photo; None: whole photo
    area: float  # share of the photo the card covers


def _order(pts: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Corners as top-left, top-right, bottom-right, bottom-left of a portrait card."""
    centre = pts.mean(axis=0)
    angles = np.arctan2(pts[:, 1] - centre[1], pts[:, 0] - centre[0])
    pts = pts[np.argsort(angles)]  # clockwise in image coordinates, from about -180 deg
    start = int(np.argmin(pts.sum(axis=1)))  # the corner nearest the origin
    pts = np.roll(pts, -start, axis=0)
    top = np.linalg.norm(pts[1] - pts[0])
    side = np.linalg.norm(pts[3] - pts[0])
    if top > side:  # a card lying on its side: its left edge is the photo's bottom edge
        pts = np.roll(pts, 1, axis=0)
    return pts.astype(np.float32)


def _aspect_ok(pts: npt.NDArray[np.float32]) -> bool:
    sides = [float(np.linalg.norm(pts[i] - pts[(i + 1) % 4])) for i in range(4)]
    a, b = (sides[0] + sides[2]) / 2, (sides[1] + sides[3]) / 2
    if min(a, b) <= 0:
        return False
    ratio = min(a, b) / max(a, b)
    return abs(ratio - CARD_ASPECT) <= ASPECT_TOLERANCE


def _edges(small: Image, low: int, high: int) -> Image:
    """Edges in any colour channel: a yellow border on a pink table differs in hue more than
    in brightness."""
    blurred = cv2.GaussianBlur(small, (5, 5), 0)
    edges: Image = np.zeros(small.shape[:2], np.uint8)
    for channel in cv2.split(blurred):
        edges = cv2.bitwise_or(edges, cv2.Canny(channel, low, high))
    return cv2.dilate(edges, np.ones((3, 3), np.uint8))


def _touches_edge(pts: npt.NDArray[np.float32], shape: tuple[int, ...]) -> bool:
    """A corner on the photo's edge: more likely the frame around clutter than a card."""
    h, w = shape[:2]
    margin = EDGE_MARGIN * max(h, w)
    return bool(np.any(pts[:, 0] < margin) or np.any(pts[:, 0] > w - margin)
                or np.any(pts[:, 1] < margin) or np.any(pts[:, 1] > h - margin))


def _quads(small: Image) -> list[npt.NDArray[np.float32]]:
    """Four-cornered convex outlines with a card's proportions: those clear of the photo's
    edges first, largest first; near-duplicates (the same outline found twice) dropped."""
    found: list[tuple[bool, float, npt.NDArray[np.float32]]] = []
    whole = small.shape[0] * small.shape[1]
    for low, high in ((30, 90), (60, 180)):
        edges = _edges(small, low, high)
        contours, _ = cv2.findContours(edges, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        for contour in contours:
            area = cv2.contourArea(contour)
            if area < MIN_AREA * whole:
                continue
            hull = cv2.convexHull(contour)
            approx = cv2.approxPolyDP(hull, 0.02 * cv2.arcLength(hull, True), True)
            if len(approx) == 4:
                pts = approx.reshape(4, 2).astype(np.float32)
            else:  # rounded or clipped corners: the tightest rotated rectangle
                rect = cv2.minAreaRect(hull)
                if cv2.contourArea(hull) < 0.9 * rect[1][0] * rect[1][1]:
                    continue
                pts = cv2.boxPoints(rect).astype(np.float32)
            if _aspect_ok(pts) and cv2.contourArea(pts) <= MAX_AREA * whole:
                found.append((_touches_edge(pts, small.shape), -float(cv2.contourArea(pts)),
                              pts))
        if found:
            break
    found.sort(key=lambda x: (x[0], x[1]))
    distinct: list[tuple[float, npt.NDArray[np.float32]]] = []
    for _, negative_area, pts in found:
        centre = pts.mean(axis=0)
        if not any(abs(-negative_area - a) < 0.1 * a
                   and np.linalg.norm(centre - q.mean(axis=0)) < 0.05 * max(small.shape)
                   for a, q in distinct):
            distinct.append((-negative_area, pts))
    return [pts for _, pts in distinct]


def _whole(photo: Image) -> Located:
    h, w = photo.shape[:2]
    upright = photo if h >= w else cv2.rotate(photo, cv2.ROTATE_90_CLOCKWISE)
    return Located(cv2.resize(upright, (OUT_W, OUT_H), interpolation=cv2.INTER_AREA), None, 1.0)


def candidates(photo: Image, limit: int = 3) -> list[Located]:
    """Up to `limit` straightened candidates for the card in `photo` (RGB), likeliest
    first; the whole photo when no outline is found."""
    h, w = photo.shape[:2]
    scale = WORK_SIDE / max(h, w)
    small = cv2.resize(photo, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    quads = _quads(small)[:limit]
    if not quads:
        return [_whole(photo)]
    target = np.array([[0, 0], [OUT_W, 0], [OUT_W, OUT_H], [0, OUT_H]], dtype=np.float32)
    out = []
    for quad in quads:
        corners = _order(quad / scale)
        matrix = cv2.getPerspectiveTransform(corners, target)
        card = cv2.warpPerspective(photo, matrix, (OUT_W, OUT_H), flags=cv2.INTER_AREA,
                                   borderMode=cv2.BORDER_REPLICATE)
        out.append(Located(card, corners, float(cv2.contourArea(corners)) / (h * w)))
    return out


def locate(photo: Image) -> Located:
    """The likeliest card in `photo` (RGB), straightened to OUT_W x OUT_H."""
    return candidates(photo, limit=1)[0]
