"""The retrieval benchmark: the GCN-Retriever and the LLM retriever timed and scored side by side
(:func:`ragrec.experiments.retrieval.benchmark.run_retrieval_benchmark`).
"""
