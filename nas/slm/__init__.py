"""Training and searching hybrid small language models of the ``slm`` space
(after Nemotron-Flash): the shipped text corpus, short training runs scored by
validation bits per byte, a synthetic associative-recall task, and the
latency-budgeted evolutionary search behind ``nas search --space slm``."""
