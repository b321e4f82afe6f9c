"""Where a run computes: the device and mixed precision, torchrun's processes, the CPU cores
and the memory allocator."""
