"""Rays, samplers, volume rendering, the portrait model and the receiver's :class:`Renderer`."""
