"""The quantization stage: bf16/fp16 casts and int4 weight-only quantization (llm-compressor)."""
