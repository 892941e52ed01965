"""onnxruntime sessions, model manifests and per-kind pre/post-processing."""
