"""Analyse: what a method or a rounding needs to know about the model on data before it decides —
activation statistics (analyse.activations, ONNX Runtime) and the Q-BERT Hessian (analyse.hessian,
torch; imported only when asked for)."""
