"""msr_sklearn."""
