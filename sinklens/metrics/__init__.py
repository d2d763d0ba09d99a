"""Pure metric functions on tensors: usable from a notebook on any model's activations."""
