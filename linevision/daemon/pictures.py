"""What the archive writes of a verdict's picture: the whole view with a box per located
defect, a full-resolution crop around each of them, and a JSON file saying what they show.

For ``images/<day>/<station>/<run>-<seq>``: ``.jpg`` (the whole view, the picture the
``image`` column names), ``-d1.jpg`` ... ``-d6.jpg`` (the crops of its first defects) and
``.json`` (written last: once it exists, so do the others). The operator page reads them.
The work runs on the archive's writer thread, never on the hot path: a station that knows
more than its verdict says (which view of a cell failed, crops of a line-scan frame) hands
it over as ``Decision.detail``, which is called here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from linevision.daemon.overlay import Caption, crop_window, draw_crop, draw_view, encode_jpeg
from linevision.log import get_logger
from linevision.paths import MAX_CROPS, image_relpath
from linevision.types import Crop, Defect, Detail, Image

log = get_logger(__name__)


@dataclass(slots=True)
class PictureJob:
    station: str
    run_id: str
    seq: int
    t_frame_ns: int
    image: Image
    image_scale: float
    caption: Caption
    defects: tuple[Defect, ...]
    """In frame pixels."""
    detail: Callable[[], Detail] | None = None


def scaled(defects: tuple[Defect, ...], scale: float) -> tuple[Defect, ...]:
    """Defect boxes in the pixels of a picture ``scale`` times the frame's size.

    >>> scaled((Defect("film_anomaly", 1.0, 800, 160, 48, 16),), 0.125)
    (Defect(kind='film_anomaly', score=1.0, x=100, y=20, w=6, h=2),)
    """
    if scale == 1.0:
        return defects
    return tuple(
        Defect(
            d.kind,
            d.score,
            int(d.x * scale),
            int(d.y * scale),
            max(1, round(d.w * scale)),
            max(1, round(d.h * scale)),
        )
        for d in defects
    )


def _overlap(d: Defect, c: Crop) -> int:
    h, w = c.pixels.shape[:2]
    ox = min(d.x + d.w, c.x + w) - max(d.x, c.x)
    oy = min(d.y + d.h, c.y + h) - max(d.y, c.y)
    return int(max(ox, 0) * max(oy, 0))


def _box(d: Defect) -> dict[str, object]:
    return {"kind": d.kind, "score": round(d.score, 4), "x": d.x, "y": d.y, "w": d.w, "h": d.h}


def _crop(
    d: Defect, image: Image, scale: float, crops: tuple[Crop, ...]
) -> tuple[Image, Defect, Image | None, dict[str, object]]:
    """The pixels around ``d`` (frame pixels), ``d`` in them, the mask and the description.

    From the full-resolution crop overlapping ``d`` most, else from ``image`` (the frame
    itself when ``scale`` is 1, else its reduced copy: ``source`` says which).
    """
    best = max(crops, key=lambda c: _overlap(d, c), default=None)
    if best is not None and _overlap(d, best) > 0:
        inner = Defect(d.kind, d.score, d.x - best.x, d.y - best.y, d.w, d.h)
        x, y, w, h = crop_window(inner, best.pixels.shape[:2])
        mask = None if best.mask is None else best.mask[y : y + h, x : x + w]
        box = Defect(d.kind, d.score, inner.x - x, inner.y - y, d.w, d.h)
        rect, source = [best.x + x, best.y + y, w, h], "frame"
        return best.pixels[y : y + h, x : x + w], box, mask, {"rect": rect, "source": source}
    (s,) = scaled((d,), scale)
    x, y, w, h = crop_window(s, image.shape[:2])
    box = Defect(d.kind, d.score, s.x - x, s.y - y, s.w, s.h)
    source = "frame" if scale == 1.0 else "overview"
    return image[y : y + h, x : x + w], box, None, {"rect": [x, y, w, h], "source": source}


def _write(path: Path, data: bytes) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
    tmp.replace(path)
    return len(data)


def _detail(job: PictureJob) -> Detail:
    if job.detail is None:
        return Detail()
    try:
        return job.detail()
    except Exception as exc:
        log.exception("detail_failed", station=job.station, seq=job.seq, error=repr(exc))
        return Detail()


def write_pictures(folder: Path, job: PictureJob, quality: int) -> tuple[str, int]:
    """Write the verdict's picture, crops and description; (the picture's path, bytes)."""
    detail = _detail(job)
    image, scale, frame_defects = job.image, job.image_scale, job.defects
    if detail.image is not None:
        image, scale, frame_defects = detail.image, 1.0, detail.defects
    caption = job.caption
    if detail.view is not None:
        caption = replace(caption, label=f"view {detail.view} of {detail.views}")
    shown = scaled(frame_defects, scale)
    drawn = draw_view(image, caption, shown, strip=detail.strip)

    def rel(part: str) -> str:
        return image_relpath(job.station, job.run_id, job.seq, job.t_frame_ns, part)

    total = 0
    described: list[dict[str, object]] = []
    located = [d for d in frame_defects if d.w > 0 and d.h > 0][:MAX_CROPS]
    for k, d in enumerate(located, start=1):
        pixels, box, mask, about = _crop(d, image, scale, detail.crops)
        picture, zoom = draw_crop(pixels, box, mask, verdict=caption.verdict)
        total += _write(folder / rel(f"-d{k}"), encode_jpeg(picture, quality))
        about |= {"file": Path(rel(f"-d{k}")).name, "zoom": zoom, "mask": mask is not None}
        about |= {"defect": _box(d), "box": [box.x, box.y, box.w, box.h]}
        described.append(about)
    total += _write(folder / rel(""), encode_jpeg(drawn.image, quality))
    height, width = image.shape[:2]
    text = {
        "schema": 1,
        "station": job.station,
        "seq": job.seq,
        "cell_id": caption.cell_id,
        "verdict": caption.verdict,
        "picture": {
            "file": Path(rel("")).name,
            "width": int(drawn.image.shape[1]),
            "height": int(drawn.image.shape[0]),
            "band": drawn.band,
            "zoom": drawn.zoom,
            "strip": drawn.strip,
            "source": [width, height],
            "scale": scale,
        },
        "view": None if detail.view is None else {"name": detail.view, "of": detail.views},
        "defects": [_box(d) for d in frame_defects],
        "crops": described,
    }
    total += _write(folder / rel(".json"), json.dumps(text, separators=(",", ":")).encode())
    return rel(""), total
