"""polydiff_motion: text-to-motion, timeline control, physics-guided sampling and pose lifting (in progress)."""
