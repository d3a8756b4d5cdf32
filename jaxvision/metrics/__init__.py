"""Evaluation metrics: identity verification and identification (`verification`), multi-object tracking (`mot`: MOTA, IDF1, HOTA)."""
