"""Layer counts of the papers' base models, so planning needs neither the hub nor its cache.

The FUN paper uses mBERT and XLM-R (Table 1; XLM-R large in its appendix) and mDeBERTa
(section G.5); Stickland & Murray use XLM-R. The numbers are ``num_hidden_layers`` of the
models' published configs. A sweep file can also give ``n_layers`` itself for other models.
"""

from __future__ import annotations

__all__ = ["PAPER_BASE_MODELS", "known_layer_count"]

PAPER_BASE_MODELS: dict[str, int] = {
    "bert-base-multilingual-cased": 12,
    "google-bert/bert-base-multilingual-cased": 12,
    "xlm-roberta-base": 12,
    "FacebookAI/xlm-roberta-base": 12,
    "xlm-roberta-large": 24,
    "FacebookAI/xlm-roberta-large": 24,
    "microsoft/mdeberta-v3-base": 12,
}
"""Hub name -> ``num_hidden_layers``."""


def known_layer_count(base: str) -> int | None:
    """``num_hidden_layers`` of a paper base model by hub name, else None."""
    return PAPER_BASE_MODELS.get(str(base))
