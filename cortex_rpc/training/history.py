"""A job's loss history: kept in the job folder across resumes, summarised and drawn at the end.

``history.jsonl`` holds one ``{"iteration", "trainLoss"}`` or ``{"iteration", "valLoss"}``
object per report. The validation loss at iteration 0 is measured before the first update,
when LoRA's zero-initialised B matrices leave the model equal to its base, so it is the base
model's validation loss and the evaluation needs no second model load.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

HISTORY_FILE = "history.jsonl"
CURVE_FILE = "loss-curve.svg"


class LossHistory:
    """Append-only loss log of one job; truncated to a checkpoint's step on resume."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def truncate(self, iteration: int) -> None:
        """Drop entries after ``iteration`` (they are replayed by the resumed run)."""
        kept = [entry for entry in self.entries() if entry["iteration"] <= iteration]
        self.path.write_text("".join(json.dumps(e) + "\n" for e in kept))

    def append(self, **entry: Any) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        rows = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by a kill
        return rows


def _perplexity(loss: float | None) -> float | None:
    if loss is None:
        return None
    return math.exp(min(loss, 50.0))


def evaluation_summary(
    entries: list[dict[str, Any]], kept_iteration: int | None = None
) -> dict[str, Any] | None:
    """Return base vs fine-tuned validation loss and perplexity, or None without validation.

    The fine-tuned figures are those of the adapter the output holds: the evaluation at
    ``kept_iteration`` (keepBest's choice) when given, else the last one; with
    ``kept_iteration`` the last one is added as ``finalValLoss``.
    """
    val = sorted(
        ((e["iteration"], e["valLoss"]) for e in entries if e.get("valLoss") is not None),
        key=lambda pair: pair[0],
    )
    if not val:
        return None
    base = val[0][1] if val[0][0] == 0 else None
    final = val[-1][1]
    kept = next((loss for it, loss in reversed(val) if it == kept_iteration), final)
    summary = {
        "baseValLoss": base,
        "valLoss": kept,
        "basePerplexity": _perplexity(base),
        "perplexity": _perplexity(kept),
    }
    if kept_iteration is not None:
        summary.update(iteration=kept_iteration, finalValLoss=final)
    return summary


def loss_curve_svg(entries: list[dict[str, Any]], title: str = "Loss") -> str:
    """Draw train and validation loss against iteration as a small standalone SVG."""
    width, height, pad = 640, 360, 48
    train = [(e["iteration"], e["trainLoss"]) for e in entries if e.get("trainLoss") is not None]
    val = [(e["iteration"], e["valLoss"]) for e in entries if e.get("valLoss") is not None]
    points = train + val
    if not points:
        points = [(0, 0.0), (1, 1.0)]
    max_it = max(1, max(p[0] for p in points))
    low = min(p[1] for p in points)
    high = max(p[1] for p in points)
    if high - low < 1e-9:
        high = low + 1.0

    def xy(point: tuple[float, float]) -> str:
        x = pad + (width - 2 * pad) * point[0] / max_it
        y = height - pad - (height - 2 * pad) * (point[1] - low) / (high - low)
        return f"{x:.1f},{y:.1f}"

    def line(series: list[tuple[float, float]], color: str) -> str:
        if not series:
            return ""
        path = " ".join(xy(p) for p in sorted(series))
        dots = (
            "".join(
                f'<circle cx="{xy(p).split(",")[0]}" cy="{xy(p).split(",")[1]}" r="2.5" '
                f'fill="{color}"/>'
                for p in series
            )
            if len(series) < 60
            else ""
        )
        return f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>{dots}'

    ticks = "".join(
        f'<text x="{pad - 6}" y="{height - pad - (height - 2 * pad) * f:.1f}" '
        f'text-anchor="end" font-size="11">{low + (high - low) * f:.3g}</text>'
        for f in (0, 0.5, 1)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif">'
        f'<rect width="100%" height="100%" fill="white"/>'
        f'<text x="{width / 2}" y="24" text-anchor="middle" font-size="14">{title}</text>'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
        f'stroke="#888"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" '
        f'stroke="#888"/>{ticks}'
        f'<text x="{width - pad}" y="{height - pad + 20}" text-anchor="end" font-size="11">'
        f"iteration {max_it}</text>"
        f"{line(train, '#1f77b4')}{line(val, '#ff7f0e')}"
        f'<text x="{width - pad}" y="{pad}" text-anchor="end" font-size="12" fill="#1f77b4">'
        f"train</text>"
        f'<text x="{width - pad}" y="{pad + 16}" text-anchor="end" font-size="12" '
        f'fill="#ff7f0e">validation</text></svg>\n'
    )
