"""The decoder-LM runtime: the shared decoder base, generation, weight quantization and its CPU kernels, the static
decoder behind the compiled step and the exports, and the routed-token caches."""
