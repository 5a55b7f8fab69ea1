"""The report's data (clusters with their members' files) and its writing: thumbnails, contact
sheets, HTML pages."""

from __future__ import annotations

import hashlib
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from imgdedup.core.images import sniff_format

THUMB = 200  # longest side of a thumbnail, px
SHEET_COLUMNS = 4


@dataclass
class Member:
    image_id: str
    similarity: float
    path: Path | None = None  # the file, when found under the images folder
    width: int = 0
    height: int = 0
    format: str = ""
    bytes: int = 0
    thumb: str = ""  # relative path of its thumbnail in the report
    thumb_size: tuple[int, int] = (0, 0)  # its width, height


@dataclass
class ReportCluster:
    cluster_id: str
    representative_id: str
    members: list[Member] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def reclaimable_bytes(self) -> int:
        """What deleting every copy but the representative frees."""
        return sum(m.bytes for m in self.members if m.image_id != self.representative_id)


def clusters_from_server(client, *, min_size: int = 2, page_size: int = 200) -> list[ReportCluster]:
    """Every cluster of `min_size` or more (a DedupClient), members as the server lists them
    (the representative first)."""
    return [
        ReportCluster(c.cluster_id, c.representative_id, [Member(m.image_id, float(m.similarity)) for m in c.members])
        for c in client.list_clusters(min_size=min_size, page_size=page_size)
    ]


def _inside(root: Path, image_id: str) -> Path | None:
    """root/image_id, unless the id leads out of root (an id is the server's, not a path we trust)."""
    base = root.resolve()
    path = (base / image_id).resolve()
    return path if path.is_relative_to(base) else None


def sheet_name(cluster_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", cluster_id)[:120] + ".png"


def _thumbnail(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    scale = THUMB / max(h, w)
    if scale >= 1:
        return img
    return cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def _placeholder(text: str) -> np.ndarray:
    img = np.full((THUMB * 3 // 4, THUMB, 3), 235, np.uint8)
    cv2.putText(img, "not found", (10, THUMB // 3), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (60, 60, 160), 1, cv2.LINE_AA)
    cv2.putText(img, text[:24], (10, THUMB // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
    return img


def _describe(members: Iterable[Member], images: Path | None, out: Path) -> dict[str, np.ndarray]:
    """Fill in each member's file facts and write its thumbnail; returns the thumbnails."""
    thumbs: dict[str, np.ndarray] = {}
    (out / "thumbs").mkdir(parents=True, exist_ok=True)
    for m in members:
        name = hashlib.blake2b(m.image_id.encode(), digest_size=10).hexdigest() + ".jpg"
        candidate = _inside(images, m.image_id) if images is not None else None
        img = None
        if candidate is not None and candidate.is_file():
            data = candidate.read_bytes()
            m.path, m.bytes, m.format = candidate, len(data), sniff_format(data) or "?"
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if img is not None:
                m.height, m.width = img.shape[:2]
        thumb = _thumbnail(img) if img is not None else _placeholder(m.image_id)
        cv2.imwrite(str(out / "thumbs" / name), thumb, [cv2.IMWRITE_JPEG_QUALITY, 85])
        m.thumb = f"thumbs/{name}"
        m.thumb_size = (thumb.shape[1], thumb.shape[0])
        thumbs[m.image_id] = thumb
    return thumbs


def _contact_sheet(cluster: ReportCluster, thumbs: dict[str, np.ndarray]) -> np.ndarray:
    """A grid of the cluster's thumbnails with each one's id and similarity; the
    representative framed in green."""
    cols = min(SHEET_COLUMNS, cluster.size)
    rows = math.ceil(cluster.size / cols)
    cell_w, cell_h, caption = THUMB + 16, THUMB + 16 + 36, 36
    sheet = np.full((rows * cell_h, cols * cell_w, 3), 255, np.uint8)
    for k, m in enumerate(cluster.members):
        t = thumbs[m.image_id]
        y0, x0 = (k // cols) * cell_h + 8, (k % cols) * cell_w + 8
        h, w = t.shape[:2]
        sheet[y0 : y0 + h, x0 : x0 + w] = t
        if m.image_id == cluster.representative_id:
            cv2.rectangle(sheet, (x0 - 4, y0 - 4), (x0 + w + 3, y0 + h + 3), (40, 160, 40), 3)
        label = ("KEEP " if m.image_id == cluster.representative_id else "") + f"{m.similarity:.3f}"
        cv2.putText(sheet, label, (x0, y0 + THUMB + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (30, 30, 30), 1, cv2.LINE_AA)
        cv2.putText(sheet, m.image_id[-28:], (x0, y0 + THUMB + caption - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (90, 90, 90), 1, cv2.LINE_AA)
    return sheet


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


_STYLE = """
body { font: 14px system-ui, sans-serif; margin: 24px; color: #222; background: #fafafa; }
h1 { font-size: 22px; margin: 0 0 4px; } .summary { color: #555; margin-bottom: 16px; }
.cluster { background: #fff; border: 1px solid #ddd; border-radius: 8px; padding: 12px; margin: 0 0 16px; }
.cluster h2 { font-size: 15px; margin: 0 0 8px; } .cluster h2 small { color: #777; font-weight: normal; }
.members { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; width: 212px; } figure img { display: block; max-width: 200px; max-height: 200px; border: 3px solid transparent; }
figure.keep img { border-color: #2a2; } figcaption { font-size: 12px; color: #444; word-break: break-all; }
.badge { display: inline-block; background: #2a2; color: #fff; border-radius: 3px; padding: 0 4px; font-size: 11px; }
.copy { color: #a33; } nav { margin: 16px 0; } nav a, nav span { margin-right: 8px; }
"""


def _member_html(cluster: ReportCluster, m: Member) -> str:
    keep = m.image_id == cluster.representative_id
    facts = f"{m.width}x{m.height} {m.format} {_size(m.bytes)}" if m.path else "file not found"
    role = '<span class="badge">keep</span>' if keep else f'<span class="copy">copy, similarity {m.similarity:.3f}</span>'
    return (
        f'<figure class="{"keep" if keep else "dup"}"><img src="{html.escape(m.thumb)}" alt="{html.escape(m.image_id)}" '
        f'width="{m.thumb_size[0]}" height="{m.thumb_size[1]}">'
        f"<figcaption>{role}<br>{html.escape(m.image_id)}<br>{html.escape(facts)}</figcaption></figure>"
    )


def _page(title: str, clusters: list[ReportCluster], page: int, pages: int, totals: str) -> str:
    def link(k: int) -> str:
        return "index.html" if k == 1 else f"page-{k}.html"

    nav = "".join(f"<span>{k}</span>" if k == page else f'<a href="{link(k)}">{k}</a>' for k in range(1, pages + 1)) if pages > 1 else ""
    cards = []
    for c in clusters:
        members = "".join(_member_html(c, m) for m in c.members)
        cards.append(
            f'<section class="cluster" id="{html.escape(c.cluster_id)}"><h2>{c.size} images '
            f"<small>cluster {html.escape(c.cluster_id)} &middot; deleting the copies frees {_size(c.reclaimable_bytes)} &middot; "
            f'<a href="sheets/{html.escape(sheet_name(c.cluster_id))}">contact sheet</a></small></h2><div class="members">{members}</div></section>'
        )
    return (
        f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1><div class=\"summary\">{totals}</div>"
        f"<nav>{nav}</nav>{''.join(cards)}<nav>{nav}</nav></body></html>"
    )


def build_report(clusters: list[ReportCluster], out: Path, *, images: Path | None, page_size: int = 50, title: str = "Duplicate images", progress=lambda n=1: None) -> list[Path]:
    """Write the report into `out`; returns the HTML pages written (index.html first)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "sheets").mkdir(exist_ok=True)
    clusters = sorted(clusters, key=lambda c: (-c.size, c.cluster_id))
    for c in clusters:
        thumbs = _describe(c.members, images, out)
        cv2.imwrite(str(out / "sheets" / sheet_name(c.cluster_id)), _contact_sheet(c, thumbs))
        progress(1)
    images_total = sum(c.size for c in clusters)
    reclaim = sum(c.reclaimable_bytes for c in clusters)
    totals = f"{len(clusters)} clusters, {images_total} images; keeping one of each (marked <span class=\"badge\">keep</span>) frees {_size(reclaim)}"
    pages = max(1, math.ceil(len(clusters) / page_size))
    written = []
    for k in range(1, pages + 1):
        path = out / ("index.html" if k == 1 else f"page-{k}.html")
        path.write_text(_page(title, clusters[(k - 1) * page_size : k * page_size], k, pages, totals), encoding="utf-8")
        written.append(path)
    return written
