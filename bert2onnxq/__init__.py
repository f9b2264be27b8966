"""bert2onnxq: export a fine-tuned BERT to ONNX, quantize it with graph passes, validate it."""

__version__ = "0.1.0"
