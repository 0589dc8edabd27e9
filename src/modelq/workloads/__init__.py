"""Built-in workloads, one module each."""
