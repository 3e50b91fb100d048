"""Stage 1 — prepare a data set.

Sources (LC-Rec json, MiniOneRec csv, raw Amazon 2018, MovieLens-100K, plain CSV/Parquet) are
read into a :class:`~alignrec.data.dataset.RawDataset`; :func:`~alignrec.data.prepare.write_dataset`
turns it into the canonical folder ``RUN_DIR/dataset`` that every later stage reads with
:func:`~alignrec.data.dataset.load_dataset`.
"""

from alignrec.data.dataset import DatasetFormatError, ItemRecord, PreparedDataset, RawDataset, Split, load_dataset

__all__ = ["DatasetFormatError", "ItemRecord", "PreparedDataset", "RawDataset", "Split", "load_dataset"]
