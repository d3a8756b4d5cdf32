"""Evaluation metrics: face/identity verification and identification (`verification`)."""
