"""What is read off the saved results: ablations, classical baselines beside the LLM, and the
paper's claims with verdicts.
"""
