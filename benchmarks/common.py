"""What the benchmarks share: the machine they ran on (the figures mean little without it) and the checkpoint."""

import os
import platform


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_text() -> str:
    """The 1, 5 and 15-minute load averages: on a shared machine they say how far to trust a timing."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def benchmark_checkpoint(workdir: str, given: str | None = None) -> str:
    """`given`, else the MiniLM checkpoint of the tests (make-checkpoint --dim 96 --seed 12345), made once
    under workdir."""
    if given:
        return given
    from colbert.modeling.make_checkpoint import make_checkpoint

    ckpt = os.path.join(workdir, "checkpoint")
    if not os.path.exists(os.path.join(ckpt, "artifact.metadata")):
        make_checkpoint("minilm", ckpt, dim=96, seed=12345, overwrite=True)
    return ckpt
