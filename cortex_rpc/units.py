"""Human-readable numbers shared by the server's explanations and the clients' output."""

from __future__ import annotations


def human_params(count: int | None) -> str:
    """Return ``7.2B`` / ``3.5M`` / ``140K`` parameter counts."""
    if not count:
        return "?"
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6)):
        if count >= scale:
            return f"{count / scale:.1f}{unit}"
    return f"{count / 1e3:.0f}K"


def human_bytes(size: float | None) -> str:
    """Return ``2.3 MB`` style sizes (decimal units, as the guide shows)."""
    if size is None:
        return "?"
    if abs(size) < 1000:
        return f"{int(size)} B"
    for unit in ("KB", "MB", "GB", "TB"):
        size /= 1000
        if abs(size) < 1000 or unit == "TB":
            break
    return f"{size:.1f} {unit}"


def human_duration(seconds: float) -> str:
    """Return ``1h 02m``, ``3m 05s`` or ``42s``."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"
