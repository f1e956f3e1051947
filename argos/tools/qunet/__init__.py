"""QU-Net tools: ``argos train qunet``, ``argos bench-proposer``, ``argos export qunet``."""
