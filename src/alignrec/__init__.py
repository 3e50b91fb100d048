"""alignrec: LLM-based generative recommendation with two-stage alignment.

The package is laid out by pipeline stage; each stage reads the files the previous one wrote:

    data      prepare a data set: canonical items/users tables + leave-one-out split
    collab    behaviour models (DCCF, LightGCN, SASRec, ...) and their item embeddings
    tokenizer item codes: cascaded residual codebooks with behaviour + LLM alignment
    llm       backbone loading, code tokens in the vocabulary, new-token initialisation
    tasks     instruction data for the alignment tasks
    train     LoRA fine-tuning
    infer     trie-constrained beam search and evaluation
    serve     per-user pre-cache and the HTTP API
    eval      the metrics every stage is scored with
"""

__version__ = "0.1.0"
