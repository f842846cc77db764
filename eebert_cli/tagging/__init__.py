"""Token classification (NER, PII, slot filling): words and tags, alignment, entity spans and scores,
per-token exit heads and the per-sentence exit. The task itself is ``tasks/token_classification.py``."""
