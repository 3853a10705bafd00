"""The CPU fast path for training: fused LoRA layers, packed attention, C kernels; applied and undone as one."""
