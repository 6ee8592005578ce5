"""Training: train state, optimizer, sharding over a (data, fsdp, tensor) mesh, steps,
checkpoints and the loop."""
