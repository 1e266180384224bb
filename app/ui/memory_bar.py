"""A stacked bar per memory pool (RAM, VRAM): target weights, draft weights, KV caches, compute — against
what is free. Over budget it turns red and says so."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPalette
from PySide6.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from app.engine.memory import MemoryEstimate
from app.engine.units import format_memory
from app.hardware.monitor import Resources

__all__ = ["MemoryBar", "Segment"]

COLOURS = {
    "target": QColor("#2e86de"),
    "draft": QColor("#10ac84"),
    "kv": QColor("#f39c12"),
    "other": QColor("#8395a7"),
}


@dataclass
class Segment:
    kind: str  # target | draft | kv | other
    label: str
    nbytes: int


class _Bar(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.segments: list[Segment] = []
        self.capacity = 1
        self.setMinimumHeight(16)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt naming
        return QSize(240, 16)

    def paintEvent(self, _event: object) -> None:  # noqa: N802
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        r = QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5)
        p.setPen(self.palette().color(QPalette.ColorRole.Mid))
        p.setBrush(self.palette().color(QPalette.ColorRole.Base))
        p.drawRoundedRect(r, 4, 4)
        total = sum(s.nbytes for s in self.segments)
        scale = max(self.capacity, total, 1)
        x = r.left()
        p.setPen(Qt.PenStyle.NoPen)
        for s in self.segments:
            w = r.width() * s.nbytes / scale
            if w <= 0:
                continue
            p.setBrush(COLOURS.get(s.kind, COLOURS["other"]))
            p.drawRect(QRectF(x, r.top() + 1, w, r.height() - 2))
            x += w
        if total > self.capacity:
            # the part beyond what is free, hatched red
            cap_x = r.left() + r.width() * self.capacity / scale
            p.setBrush(QColor(192, 57, 43, 110))
            p.drawRect(QRectF(cap_x, r.top(), r.right() - cap_x, r.height()))
        p.end()


class MemoryBar(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.ram_label = QLabel("RAM")
        self.ram_bar = _Bar()
        self.vram_label = QLabel("VRAM")
        self.vram_bar = _Bar()
        self.legend = QLabel()
        self.legend.setWordWrap(True)
        self.verdict = QLabel()
        self.verdict.setWordWrap(True)
        for w in (self.ram_label, self.ram_bar, self.vram_label, self.vram_bar, self.legend, self.verdict):
            lay.addWidget(w)
        self.fits = True
        self.show_estimate(None, None)

    def show_estimate(self, estimate: MemoryEstimate | None, resources: Resources | None) -> None:
        if estimate is None or resources is None:
            self.ram_bar.segments = []
            self.vram_bar.segments = []
            self.ram_label.setText("RAM: choose a model to see the estimate")
            self.vram_label.hide()
            self.vram_bar.hide()
            self.legend.setText("")
            self.verdict.setText("")
            self.fits = True
            self.update()
            return
        ram: list[Segment] = []
        vram: list[Segment] = []
        for i, m in enumerate(estimate.models):
            kind = "target" if i == 0 else "draft"
            ram.append(Segment(kind, m.name, m.weights_cpu))
            vram.append(Segment(kind, m.name, m.weights_gpu))
        for m in estimate.models:
            ram.append(Segment("kv", "KV cache", m.kv_cpu))
            vram.append(Segment("kv", "KV cache", m.kv_gpu))
        for m in estimate.models:
            ram.append(Segment("other", "compute", m.compute_cpu + m.overhead_cpu))
            vram.append(Segment("other", "compute", m.compute_gpu))
        if estimate.gpu_overhead:
            vram.append(Segment("other", "GPU context", estimate.gpu_overhead))
        self.ram_bar.segments, self.ram_bar.capacity = ram, max(resources.available_ram, 1)
        self.ram_label.setText(
            f"RAM: needs {format_memory(estimate.cpu_bytes)} of {format_memory(resources.available_ram)} available"
        )
        has_gpu_part = estimate.gpu_bytes > 0 or resources.gpu_count > 0
        self.vram_label.setVisible(has_gpu_part)
        self.vram_bar.setVisible(has_gpu_part)
        if resources.gpu_count:
            self.vram_bar.segments, self.vram_bar.capacity = vram, max(resources.free_vram, 1)
            self.vram_label.setText(
                f"VRAM: needs {format_memory(estimate.gpu_bytes)} of {format_memory(resources.free_vram)} free"
            )
        else:
            self.vram_bar.segments, self.vram_bar.capacity = vram, 1
            self.vram_label.setText("VRAM: no NVIDIA GPU")
        parts = []
        for kind, label in (("target", "target"), ("draft", "draft"), ("kv", "KV caches"), ("other", "compute")):
            if any(s.kind == kind and s.nbytes for s in ram + vram):
                parts.append(f'<span style="color:{COLOURS[kind].name()}">■</span> {label}')
        self.legend.setText("  ".join(parts))
        self.fits, message = estimate.fits(
            available_ram=resources.available_ram, free_vram=resources.free_vram, gpu_count=resources.gpu_count
        )
        colour = "#1e8449" if self.fits else "#c0392b"
        self.verdict.setText(f'<span style="color:{colour}">{"✔" if self.fits else "⚠"} {message}</span>')
        self.update()
        self.ram_bar.update()
        self.vram_bar.update()
