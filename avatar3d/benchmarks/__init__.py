"""`avatar3d bench ...`: the rasterizer backends, two jobs sharing the cores, an avatar's audio drive."""
