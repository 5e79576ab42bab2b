"""Encode mode "exact" on a GPU: is a passage's embedding independent of its batch there too?

Runs with whatever torch the machine has (colbert-tap from this checkout on PYTHONPATH, no install), so it
also fits a machine with no network (docs/encode-modes.md, "GPU"). Checks, on the visible device:

1. rows: for a few token lengths, the same passage in batches of 1..64 rows of that length (and at
   another row position): which row counts change its bits;
2. passages: 400 Vaswani passages encoded in one exact call against 100 of them shuffled into another
   call and 5 encoded alone: how many passages differ;
3. index: 300 passages indexed in exact mode with index_bsize 4, 32 and 128 (k-means backend "torch":
   faiss-gpu is not assumed), every index file compared; and, as a control, parity mode 4 vs 32.

    PYTHONPATH=. python scripts/gpu_exact_check.py --checkpoint CKPT --out report.json
    CUDA_VISIBLE_DEVICES= PYTHONPATH=. python scripts/gpu_exact_check.py --checkpoint CKPT   # the same on the CPU

CKPT is a colbert-tap checkpoint (`colbert-tap make-checkpoint --from minilm`); float16 weights are
widened to float32 in a temporary copy first (to carry a checkpoint in half the bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("COLBERT_EXTENSIONS", "off")


def widened(checkpoint: str, work: str) -> str:
    import torch
    from safetensors.torch import load_file, save_file

    weights = os.path.join(checkpoint, "model.safetensors")
    sd = load_file(weights)
    if all(v.dtype != torch.float16 for v in sd.values()):
        return checkpoint
    out = os.path.join(work, "checkpoint-fp32")
    shutil.copytree(checkpoint, out)
    save_file({k: (v.float() if v.dtype == torch.float16 else v).contiguous() for k, v in sd.items()},
              os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    return out


def passages(n: int) -> list[str]:
    with open(os.path.join(REPO, "colbert", "data", "vaswani", "collection.tsv"), encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t")[1] for _, line in zip(range(n), f)]


def row_study(ckpt, texts) -> list[dict]:
    import torch

    from colbert.modeling.tokenization.utils import insert_prefix_token

    tok = ckpt.doc_tokenizer
    ids = tok.tok(texts, padding=False, truncation="longest_first", max_length=tok.doc_maxlen - 1)["input_ids"]
    by_len: dict[int, list[int]] = {}
    for i, x in enumerate(ids):
        by_len.setdefault(len(x) + 1, []).append(i)
    out = []
    lengths = sorted(n for n, v in by_len.items() if len(v) >= 2)
    for n in lengths[::max(1, len(lengths) // 8)][:8]:
        rows = by_len[n]
        first, others = rows[0], rows[1:]

        def encode(order):
            t = insert_prefix_token(torch.tensor([ids[i] for i in order]), tok.D_marker_token_id)
            with torch.inference_mode():
                D, _ = ckpt.doc(t, torch.ones_like(t), keep_dims="return_mask")
            return D.float().cpu()

        ref = encode([first] + [others[j % len(others)] for j in range(63)])[0]
        differ = [r for r in (1, 2, 3, 4, 5, 8, 16, 32, 48) if
                  not torch.equal(encode([first] + [others[j % len(others)] for j in range(r - 1)])[0], ref)]
        last = encode([others[j % len(others)] for j in range(63)] + [first])[-1]
        out.append({"width": n, "row_counts_that_change_bits": differ, "position_invariant": torch.equal(last, ref)})
    return out


def passage_study(ckpt, texts) -> dict:
    import torch

    def per_passage(batch, bsize):
        D, doclens = ckpt.docFromText(batch, bsize=bsize, keep_dims="flatten", exact_budget=8192)
        return dict(zip(batch, D.float().split(doclens)))

    whole = per_passage(texts, 32)
    part = texts[100:200]
    random.Random(7).shuffle(part)
    other = per_passage(part, 3)
    alone = {t: per_passage([t], 1)[t] for t in texts[:5]}
    return {"shuffled_differ": sum(not torch.equal(other[t], whole[t]) for t in part), "shuffled": len(part),
            "alone_differ": sum(not torch.equal(alone[t], whole[t]) for t in alone), "alone": len(alone)}


def index_study(checkpoint: str, work: str, texts, mode: str, bsizes) -> dict:
    import torch

    from colbert import Indexer
    from colbert.infra import ColBERTConfig, Run, RunConfig

    paths, seconds = {}, {}
    for bs in bsizes:
        t0 = time.time()
        with Run().context(RunConfig(nranks=1, experiment="gpu-exact", root=work)):
            config = ColBERTConfig(checkpoint=checkpoint, doc_maxlen=128, nbits=2, dim=96, kmeans_niters=4,
                                   index_bsize=bs, kmeans_backend="torch", encode_mode=mode)
            paths[bs] = Indexer(checkpoint=checkpoint, config=config).index(name=f"{mode}.bs{bs}", collection=texts,
                                                                           overwrite=True)
        seconds[bs] = round(time.time() - t0, 1)
    ref, differ = bsizes[0], {}
    for bs in bsizes[1:]:
        bad = []
        for name in sorted(os.listdir(paths[ref])):
            a, b = os.path.join(paths[ref], name), os.path.join(paths[bs], name)
            if name.endswith(".pt"):
                x, y = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
                same = all(torch.equal(u, v) for u, v in zip(x, y)) if isinstance(x, (tuple, list)) else torch.equal(x, y)
            elif name.endswith(".json") and name not in ("plan.json", "metadata.json"):
                same = open(a).read() == open(b).read()
            else:
                continue
            if not same:
                bad.append(name)
        differ[f"{ref} vs {bs}"] = bad
    return {"mode": mode, "seconds": seconds, "files_differing": differ}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--out", help="write the report here as JSON")
    ap.add_argument("--work", help="scratch folder (default: a temp dir)")
    args = ap.parse_args(argv)

    import torch

    from colbert.infra import ColBERTConfig
    from colbert.modeling.checkpoint import Checkpoint

    work = args.work or tempfile.mkdtemp(prefix="gpu-exact-")
    ckpt_dir = widened(args.checkpoint, work)
    report = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
    print(f"torch {report['torch']} on {report['device']}", flush=True)
    ckpt = Checkpoint(ckpt_dir, colbert_config=ColBERTConfig(doc_maxlen=128, dim=96))
    texts = passages(400)
    report["rows"] = row_study(ckpt, texts)
    print("rows:", json.dumps(report["rows"]), flush=True)
    report["passages"] = passage_study(ckpt, texts)
    print("passages:", json.dumps(report["passages"]), flush=True)
    del ckpt
    report["index_exact"] = index_study(ckpt_dir, work, texts[:300], "exact", [4, 32, 128])
    print("index exact:", json.dumps(report["index_exact"]), flush=True)
    report["index_parity"] = index_study(ckpt_dir, work, texts[:300], "parity", [4, 32])
    print("index parity (control):", json.dumps(report["index_parity"]), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    ok = (report["passages"]["shuffled_differ"] == 0 and report["passages"]["alone_differ"] == 0
          and not any(report["index_exact"]["files_differing"].values()))
    print("exact mode batch-invariant here:", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
