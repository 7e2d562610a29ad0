"""Pseudo-fakes: fake training images made from real ones, so a detector learns the traces of
manipulation (blending seams, a generator's decoder) rather than who or what is pictured."""
