"""Status-bar resource monitor: live decode tok/s, prompt speed, acceptance, VRAM per GPU, RAM, CPU.

Hardware numbers are polled once a second (psutil and NVML answer in well under a millisecond). No NVIDIA
GPU or no driver: it says "no NVIDIA GPU" and shows RAM only; nothing here can raise into Qt.
"""

from __future__ import annotations

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QHBoxLayout, QLabel, QWidget

from app.engine.speculative import GenerationStats
from app.engine.units import format_acceptance, format_memory
from app.hardware import monitor

__all__ = ["ResourceMonitor"]


class ResourceMonitor(QWidget):
    def __init__(self, parent: QWidget | None = None, interval_ms: int = 1000) -> None:
        super().__init__(parent)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(4, 0, 4, 0)
        lay.setSpacing(14)
        self.speed = QLabel("idle")
        self.prompt = QLabel("")
        self.acceptance = QLabel("")
        self.vram = QLabel("")
        self.ram = QLabel("")
        self.cpu = QLabel("")
        for w in (self.speed, self.prompt, self.acceptance, self.vram, self.ram, self.cpu):
            lay.addWidget(w)
        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.poll)
        self.timer.start()
        self.poll()

    # -- generation figures ----------------------------------------------------------------------------
    def show_live(self, tokens_per_second: float, accepted: int, drafted: int) -> None:
        self.speed.setText(f"⏵ {tokens_per_second:.1f} tok/s")
        self._show_acceptance(accepted, drafted)

    def show_stats(self, stats: GenerationStats | None) -> None:
        if stats is None:
            self.speed.setText("idle")
            return
        self.speed.setText(f"{stats.decode_tokens_per_second:.1f} tok/s")
        self.prompt.setText(f"prompt {stats.prompt_tokens_per_second:.0f} tok/s")
        self._show_acceptance(stats.accepted, stats.drafted)

    def _show_acceptance(self, accepted: int, drafted: int) -> None:
        self.acceptance.setText(format_acceptance(accepted, drafted) if drafted else "")

    # -- hardware -------------------------------------------------------------------------------------------
    def poll(self) -> None:
        try:
            mem = monitor.system_memory()
            rss = monitor.process_memory()
            self.ram.setText(f"RAM {format_memory(mem.used)} / {format_memory(mem.total)} · Tandem {format_memory(rss)}")
            self.cpu.setText(f"CPU {monitor.cpu_percent():.0f} %")
            gpus = monitor.gpus()
            if not gpus:
                self.vram.setText("no NVIDIA GPU")
                self.vram.setToolTip(monitor.gpu_status_text())
            else:
                parts = []
                for g in gpus:
                    mine = f" (Tandem {format_memory(g.process_used)})" if g.process_used else ""
                    parts.append(f"GPU{g.index} {format_memory(g.used)} / {format_memory(g.total)}{mine}")
                self.vram.setText(" · ".join(parts))
                self.vram.setToolTip("\n".join(g.name for g in gpus))
        except Exception as e:  # a monitoring hiccup must never take the app down
            self.ram.setText(f"monitor: {e}")
