"""`Indexer`: upstream's public indexing API."""

from __future__ import annotations

import glob
import logging
import os

from colbert.indexing.collection import Collection
from colbert.indexing.index_files import METADATA
from colbert.infra.config import ColBERTConfig, RunConfig
from colbert.infra.launcher import launch
from colbert.infra.run import Run
from colbert.infra.validation import check_index_name, check_index_run
from colbert.utils.logs import progress_level

log = logging.getLogger(__name__)

OVERWRITE_MODES = (True, False, "reuse", "resume", "force_silent_overwrite")


class Indexer:
    """Builds a PLAID index of a collection, writing colbert-ai 0.2.22's files bit for bit.

    Parameters
    ----------
    checkpoint
        A ColBERT checkpoint: a folder or a Hugging Face name (e.g. "colbert-ir/colbertv2.0").
    config
        A ColBERTConfig (nbits, doc_maxlen, kmeans_niters, ...), merged over the checkpoint's own
        settings and under the `Run()` context's.
    verbose
        Upstream's verbosity: above 1 the "#> Overwriting ..." line is logged at INFO, else at DEBUG.

    Examples
    --------
    >>> from colbert import Indexer
    >>> from colbert.infra import ColBERTConfig, Run, RunConfig
    >>> with Run().context(RunConfig(nranks=1, experiment="demo")):
    ...     indexer = Indexer(checkpoint="colbert-ir/colbertv2.0", config=ColBERTConfig(nbits=2))
    ...     path = indexer.index(name="demo.2bits", collection=["a passage", "another one"], overwrite=True)
    >>> path  # doctest: +SKIP
    '.../experiments/demo/indexes/demo.2bits'

    `collection` is a .tsv path, a list of passages or a `Collection`; `overwrite` is one of
    OVERWRITE_MODES (False refuses an existing index; "reuse" keeps a complete one; "resume"
    finishes an interrupted run). With COLBERT_TAP set, every artifact is saved or swapped (docs/tap.md).
    """

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
        """Removes the files an index run writes (*.pt, JSON named *metadata*, *doclen*, *plan*, and the
        collection fingerprint of an unfinished run)."""
        assert self.index_path is not None
        from colbert.indexing import index_files as files

        # glob's "*" skips dot-files, so the fingerprint sidecar is named explicitly
        names = glob.glob(os.path.join(self.index_path, "*"))
        names += glob.glob(os.path.join(self.index_path, files.FINGERPRINT))
        deleted = [f for f in sorted(names) if files.erased_by_overwrite(os.path.basename(f))]
        # the metadata first, so that an interrupted erase never leaves an index that looks complete
        deleted.sort(key=lambda f: os.path.basename(f) != files.METADATA)
        if deleted and not force_silent:
            log.log(progress_level(self.verbose > 1), "#> Overwriting %d file(s) of the existing index at %s",
                    len(deleted), self.index_path)
        for filename in deleted:
            os.remove(filename)
        return deleted

    def index(self, name, collection, overwrite=False):
        if overwrite not in OVERWRITE_MODES:
            raise ValueError(f"overwrite={overwrite!r}; expected one of {OVERWRITE_MODES}")
        casted = Collection.cast(collection)  # validates before anything touches the disk
        check_index_name(name)
        check_index_run(self.config, Run().config.nranks)  # every other input, before the folder is touched
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
        from colbert.tap.session import lock_saves, planned_saves
        from colbert.utils.locks import INDEX_LOCK, folder_lock

        saves = planned_saves(self.index_path)  # a refused tap save folder stops the run before any change
        os.makedirs(self.index_path, exist_ok=True)
        # One writer per index folder: two runs at once leave one's centroids beside the other's
        # chunks. Locked here in the parent, so the ranks it spawns never lock each other out.
        with folder_lock(self.index_path, INDEX_LOCK, what="index"), lock_saves(saves, Run().config.nranks):
            return self._write(casted, exists, overwrite)

    def _write(self, casted, exists, overwrite):
        """The part of `index` that changes the folder; runs under the index lock."""
        if exists and overwrite == "resume":
            from colbert.indexing.fingerprint import check_resume
            from colbert.utils.io import remove_stale_temps

            check_resume(self.index_path, casted)  # before anything in the folder changes
            remove_stale_temps(self.index_path)  # what a killed run's unfinished writes left
        os.makedirs(self.index_path, exist_ok=True)
        if exists and overwrite in (True, "force_silent_overwrite"):
            self.erase(force_silent=overwrite == "force_silent_overwrite")
        if exists and overwrite == "reuse" and os.path.exists(os.path.join(self.index_path, METADATA)):
            return self.index_path
        self._launch(casted)
        return self.index_path

    def _launch(self, collection):
        from colbert.indexing.collection_indexer import index_collection

        run_config = Run().config
        nranks = run_config.nranks
        configs = [ColBERTConfig.from_existing(self.config, run_config, RunConfig(rank=r)) for r in range(nranks)]
        return launch(index_collection, configs, collection, self.progress if nranks == 1 else None)
