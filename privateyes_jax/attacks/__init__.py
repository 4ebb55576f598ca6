"""DualView (DESIGN.md §5): the GAN prior, appearance and gaze-distribution views, evaluation."""
