"""Per-layer view of encoder captures: where inside the encoder two runs start to drift apart."""

from __future__ import annotations

from pathlib import Path

ENCODER_STAGE = "encoder_layers"


def aggregate_layers(rows, profile_names: list[str]) -> list[dict]:
    """One entry per layer index over every (site, group, batch) captured on both sides.

    mean |a-b| is weighted by element count, so a layer's figure does not depend on how the
    collection was split into batches.
    """
    by_layer: dict[int, dict] = {}
    for r in rows:
        if r.stage != ENCODER_STAGE or "layer" not in r.ctx:
            continue
        e = by_layer.setdefault(r.ctx["layer"], {"layer": r.ctx["layer"], "tensors": 0, "compared": 0, "elements": 0,
                                                  "sum_abs": 0.0, "n_finite": 0, "max_abs": 0.0,
                                                  "outside": {p: 0 for p in profile_names}, "match": True})
        e["tensors"] += 1
        if r.status not in ("match", "differs") or r.max_abs is None:
            e["match"] = False
            continue
        e["compared"] += 1
        e["elements"] += r.n_total or 0
        e["sum_abs"] += r.details.get("sum_abs", 0.0)
        e["n_finite"] += r.details.get("n_finite", 0)
        e["max_abs"] = max(e["max_abs"], r.max_abs)
        for p in profile_names:
            e["outside"][p] += round(r.frac_outside.get(p, 0.0) * (r.n_total or 0))
        e["match"] = e["match"] and r.status == "match"
    out = []
    last = max(by_layer) if by_layer else None
    for layer in sorted(by_layer):
        e = by_layer[layer]
        e["mean_abs"] = e["sum_abs"] / e["n_finite"] if e["n_finite"] else None
        if not e["compared"]:
            e["max_abs"] = None
        e["frac_outside"] = {p: (n / e["elements"] if e["elements"] else 0.0) for p, n in e.pop("outside").items()}
        del e["sum_abs"], e["n_finite"]
        # stages.py: l0 is the embedding output, the last l the linear projection
        e["label"] = "emb" if layer == 0 else ("proj" if layer == last and last > 0 else f"layer {layer}")
        out.append(e)
    return out


def plot_layers(layers: list[dict], out: str | Path, title: str = "") -> Path:
    from colbert.utils.plots import pyplot, save_figure

    plt = pyplot()
    xs = [e["layer"] for e in layers]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    positive = [v for e in layers for v in (e["mean_abs"], e["max_abs"]) if v]
    for key, label, marker in (("mean_abs", "mean |a−b|", "o"), ("max_abs", "max |a−b|", "s")):
        ys = [e[key] if e[key] else float("nan") for e in layers]  # zeros cannot sit on a log axis
        ax.plot(xs, ys, marker=marker, label=label)
    if positive:
        ax.set_yscale("log")
        zeros = [e["layer"] for e in layers if e["max_abs"] == 0]
        if zeros:  # identical layers have no place on a log axis: mark them on its floor
            low = ax.get_ylim()[0]
            ax.plot(zeros, [low] * len(zeros), linestyle="none", marker="v", color="green", clip_on=False,
                    label="identical (0)")
    ax.set_xticks(xs, [str(e["layer"]) if e["label"].startswith("layer") else f"{e['layer']}\n{e['label']}"
                       for e in layers])
    ax.set_xlabel("encoder layer")
    ax.set_ylabel("|a − b|")
    ax.set_title(title or "per-layer difference of encoder hidden states")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    if not positive:
        ax.text(0.5, 0.5, "identical at every layer", transform=ax.transAxes, ha="center")
    fig.tight_layout()
    return Path(save_figure(fig, out, dpi=120))
