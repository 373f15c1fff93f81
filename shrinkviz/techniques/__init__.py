"""Compression techniques, each a verb with one contract: ``verb(model, data, ..., cfg=) -> Result``
(``result``): pruning (``prune``), INT8 quantization (``quant``), distillation (``distill``), finetuning
(``finetune``) and the ordered pipeline (``pipeline``)."""
