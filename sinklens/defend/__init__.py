"""Defences: audit an unlearned model for a hidden knowledge-restoring trigger, and repair it."""
