"""The encoder's pieces: the CLIP text tower written for export (text_tower), the ONNX and
TorchScript files made from it (export), and the ops the fp16 GPU file calls with their C++ and
CUDA ops (cuda_ops builds native/cuda_ops/)."""
