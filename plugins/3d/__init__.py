"""polydiff_3d: point-cloud generation and completion, meshes out, and multi-view texturing (in progress)."""
