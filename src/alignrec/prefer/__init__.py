"""``alignrec prefer``: preference alignment after fine-tuning (GRPO as MiniOneRec does it, a listwise
objective over the beam, or the fine-tuning loss alone), selected on validation NDCG@10."""
