"""Deployment in one place: export to ONNX / TorchScript (``export``, ``onnx_graph``) and the runtimes a
model is run on for latency (``runtimes``)."""
