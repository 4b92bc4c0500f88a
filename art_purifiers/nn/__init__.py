"""Plain torch networks and functional ops used by the defences (no ART here)."""

from art_purifiers.nn.resampling import pixel_grid, shift_resample

__all__ = ["pixel_grid", "shift_resample"]
