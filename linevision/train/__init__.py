"""Offline training and ONNX export of station models (needs the ``train`` extra: torch)."""
