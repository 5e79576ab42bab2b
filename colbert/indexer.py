"""`Indexer`: upstream's public indexing API."""

from __future__ import annotations

import glob
import os

from colbert.indexing.collection import Collection
from colbert.infra.config import ColBERTConfig, RunConfig
from colbert.infra.launcher import launch
from colbert.infra.run import Run
from colbert.modeling.checkpoint_files import check_checkpoint

OVERWRITE_MODES = (True, False, "reuse", "resume", "force_silent_overwrite")


class Indexer:
    def __init__(self, checkpoint, config=None, verbose: int = 3):
        self.index_path = None
        self.verbose = verbose
        self.progress = None  # optional callable(n_passages_encoded), used by the CLI's progress bar
        self.checkpoint = checkpoint
        self.checkpoint_config = ColBERTConfig.load_from_checkpoint(checkpoint)
        self.config = ColBERTConfig.from_existing(self.checkpoint_config, config, Run().config)
        self.configure(checkpoint=checkpoint)

    def configure(self, **kw_args):
        return self.config.configure(**kw_args)

    def get_index(self):
        return self.index_path

    def erase(self, force_silent: bool = False):
        """Removes the files an index run writes (*.pt, and JSON named *metadata*, *doclen*, *plan*)."""
        assert self.index_path is not None
        deleted = []
        for filename in sorted(glob.glob(os.path.join(self.index_path, "*"))):
            base = os.path.basename(filename)
            if base.endswith(".pt") or (base.endswith(".json") and any(w in base for w in ("metadata", "doclen", "plan"))):
                deleted.append(filename)
        # metadata.json first, so that an interrupted erase never leaves an index that looks complete.
        deleted.sort(key=lambda f: os.path.basename(f) != "metadata.json")
        if deleted and not force_silent and self.verbose > 1:
            print(f"#> Overwriting {len(deleted)} file(s) of the existing index at {self.index_path}")
        for filename in deleted:
            os.remove(filename)
        return deleted

    def index(self, name, collection, overwrite=False):
        if overwrite not in OVERWRITE_MODES:
            raise ValueError(f"overwrite={overwrite!r}; expected one of {OVERWRITE_MODES}")
        casted = Collection.cast(collection)  # validates before anything touches the disk
        check_checkpoint(self.config.checkpoint)
        self._check_dim()
        raw = collection
        if not isinstance(raw, (str, list, Collection)) and not isinstance(raw, os.PathLike):
            raw = casted.data  # e.g. a dataset column: exported as the list upstream would see
        self.configure(collection=os.fspath(raw) if isinstance(raw, os.PathLike) else raw, index_name=name,
                       resume=overwrite == "resume")
        self.configure(bsize=64, partitions=None)
        redirect = os.environ.get("COLBERT_TAP_INDEX_PATH", "").strip()
        if redirect:  # a replay: same run, another folder, the original index untouched
            self.configure(index_path=os.path.abspath(redirect))

        self.index_path = self.config.index_path_
        exists = os.path.exists(self.index_path)
        if exists and overwrite is False:
            raise FileExistsError(f"index {self.index_path} already exists; pass overwrite=True to replace it "
                                  "(or 'reuse' to keep it, 'resume' to finish an interrupted run)")
        os.makedirs(self.index_path, exist_ok=True)
        if exists and overwrite in (True, "force_silent_overwrite"):
            self.erase(force_silent=overwrite == "force_silent_overwrite")
        if exists and overwrite == "reuse" and os.path.exists(os.path.join(self.index_path, "metadata.json")):
            return self.index_path
        self._launch(casted)
        return self.index_path

    def _check_dim(self):
        from colbert.modeling.checkpoint_files import find_projection, model_dir
        from colbert.modeling.colbert import resolve_dim

        directory = model_dir(self.config.checkpoint)
        weight, origin = find_projection(directory)
        dim = resolve_dim(self.config, weight, directory, origin)  # raises on a dim the projection contradicts
        nbits = self.config.nbits
        if nbits not in (1, 2, 4, 8) or dim % 8 != 0 or dim % (8 * nbits) != 0:
            raise ValueError(f"nbits={nbits} with dim={dim}: nbits must be 1, 2, 4 or 8 and dim={dim} must be a "
                             f"multiple of 8 * nbits = {8 * nbits}")

    def _launch(self, collection):
        from colbert.indexing.collection_indexer import index_collection

        run_config = Run().config
        nranks = run_config.nranks
        configs = [ColBERTConfig.from_existing(self.config, run_config, RunConfig(rank=r)) for r in range(nranks)]
        return launch(index_collection, configs, collection, self.progress if nranks == 1 else None)
