"""Figures: pure drawing functions (`draw`), their registry, and the one writer (`export`)."""
