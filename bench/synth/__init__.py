"""Synthetic hand clips with ground truth, rendered by Blender (bpy) from known motion."""
