"""Model specs shipped with the server (installed as `imgdedup.model_specs`).

Each `*.toml` file here describes one ONNX embedding model: where its file is, its input layout,
size policy and normalisation, its output, and its calibrated default threshold. The runtime reads
only these specs, so another ONNX ResNet-50 plugs in with a new file and no code change.
"""
