"""The training log: one JSON object per line in `DIR/logs/train_log.jsonl`, and its loss curve as `DIR/logs/loss.png`.

Step lines carry step, epoch, loss, lr, samples_per_s, skipped_videos; lines with an "event" key ("start", "resume",
"end") record the run's settings and its summary. The file is only ever appended to, so a resumed run keeps the history
(steps logged after the last checkpoint of a killed run appear twice; the plot keeps the latest of each step).
"""

from __future__ import annotations

import json
from pathlib import Path


class TrainLog:
    def __init__(self, path: str | Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled  # only the main process writes
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")


def read_log(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_loss(log_path: str | Path, png_path: str | Path) -> Path | None:
    """Loss (and a moving average) against steps; None when nothing was logged yet."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    from ..fileio import atomic_path

    by_step = {r["step"]: r["loss"] for r in read_log(log_path) if "loss" in r and "event" not in r}
    if not by_step:
        return None
    steps = sorted(by_step)
    loss = [by_step[s] for s in steps]
    window = max(1, len(loss) // 20)
    smooth = [sum(loss[max(0, i - window + 1) : i + 1]) / len(loss[max(0, i - window + 1) : i + 1]) for i in range(len(loss))]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, loss, alpha=0.35, label="loss (MSE on v)")
    ax.plot(steps, smooth, label=f"moving average ({window})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return Path(png_path)
