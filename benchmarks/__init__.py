"""Scale and latency benchmarks of gpudev; ``python -m benchmarks`` runs them all (see README)."""
