"""The collaborative models; importing this package registers each of them (in this order)."""

import importlib

from alignrec.collab.models.base import CollabModel

MODEL_MODULES = ("dccf", "lightgcn", "sasrec", "bert4rec", "fmlp", "pop")
for _module in MODEL_MODULES:
    importlib.import_module(f"alignrec.collab.models.{_module}")

__all__ = ["MODEL_MODULES", "CollabModel"]
