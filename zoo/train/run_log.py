"""A run's log: ``log.csv`` and TensorBoard (``RUN_DIR/tb``), written by rank 0; a resumed run keeps the rows
logged before its checkpoint."""

import csv
import io
import logging
import time
from pathlib import Path

from .checkpoint import naming_full_disk, write_text_atomic

__all__ = ["LOG_FIELDS", "RunLogger"]

_logger = logging.getLogger(__name__)

LOG_FIELDS = ["step", "epoch", "split", "loss", "lr", "throughput", "top1", "top5", "perplexity", "time", "kept",
              "saving"]  # fmt: skip


class RunLogger:
    """log.csv + TensorBoard (RUN_DIR/tb) on rank 0; nothing elsewhere."""

    def __init__(self, run_dir: Path, enabled: bool, resume_step: int | None = None, total_steps: int | None = None):
        self.enabled = enabled
        self.path = run_dir / "log.csv"
        self.tb = None
        if not enabled:
            return
        rows = []
        if resume_step is not None and self.path.is_file():  # keep the rows logged before the checkpoint
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if _logged_before(r, resume_step, total_steps)]
        text = io.StringIO()
        w = csv.DictWriter(text, LOG_FIELDS)
        w.writeheader()
        w.writerows(rows)
        write_text_atomic(self.path, text.getvalue())
        try:
            from torch.utils.tensorboard import SummaryWriter  # optional: tensorboard is a training extra

            self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step)
        except ImportError:
            _logger.warning("tensorboard is not installed: logging to log.csv only (pip install tensorboard)")

    def log(self, step: int, epoch: float, split: str, **values):
        if not self.enabled:
            return
        row = {"step": step, "epoch": round(epoch, 4), "split": split, "time": round(time.time(), 3)}
        row.update({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in values.items() if k in LOG_FIELDS})
        with naming_full_disk(self.path), open(self.path, "a", newline="") as f:
            csv.DictWriter(f, LOG_FIELDS).writerow(row)
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and v is not None:
                    self.tb.add_scalar(f"{split}/{k}", v, step)

    def close(self):
        if self.tb is not None:
            self.tb.close()


def _logged_before(row: dict[str, str], step: int, total_steps: int | None) -> bool:
    """Whether a log row was written before the checkpoint at ``step`` was saved: rows of earlier steps, and of
    that step, except the final evaluation, which follows the last checkpoint."""
    if not row.get("step"):
        return False
    logged = int(row["step"])
    final_eval = row.get("split") == "val" and total_steps is not None and logged >= total_steps
    return logged < step or (logged == step and not final_eval)
