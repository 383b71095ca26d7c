"""The recommender run: prepared inputs, prompt contexts, training, scoring and its variants.

Its entry point is :func:`ragrec.experiments.recommender.pipeline.run_recommender`.
"""
