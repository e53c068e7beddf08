"""The paper's experiments beyond one search.

Transfer between networks, ablation, retraining with a fooling class, and the audit of a
user's classifier.
"""
