"""Report folders: an HTML page with embedded figures, the PNGs beside it and a JSON of every
number shown, written atomically (nothing half-written is left behind as if complete)."""

from tdhook_rl.report.writer import ReportWriter

__all__ = ["ReportWriter"]
