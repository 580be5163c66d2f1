"""Plain functional renditions of the authors' original forward passes, used by parity tests and benchmarks."""
