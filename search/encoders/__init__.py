"""Encoders: the ImageTextEncoder protocol, open_clip in torch, the ONNX query bundle, tokenizer, pixel steps."""
