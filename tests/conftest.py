import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import torch  # noqa: E402

# Tiny models are dominated by per-op overhead, and tests spawn subprocesses (accelerate, the CLI): one thread per
# process avoids oversubscribing CI's 2 cores, which made pipeline tests up to 20x slower.
torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).parent))

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SAMPLES = SHARED / "samples"
