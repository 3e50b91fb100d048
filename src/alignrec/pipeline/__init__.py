"""The whole pipeline as one command, and sweeps of it.

``alignrec run CONFIG`` runs every stage of an experiment (prepare -> behaviour model and
baselines -> tokenizer -> tasks -> fine-tuning -> evaluation -> pre-cache -> report), skipping
each stage whose outputs are already complete for the same settings and inputs, and resuming
the ones that were interrupted. ``alignrec sweep CONFIG`` runs a grid of experiments that share
every stage they have in common, skips finished cells and writes one results table.
"""
