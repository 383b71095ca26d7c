"""What each notebook calls, by family: the recommender run, early exit, the retrieval benchmark,
and reporting (ablations, baselines, claims), with the latency measurement they share."""
